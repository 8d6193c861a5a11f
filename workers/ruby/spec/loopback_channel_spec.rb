# frozen_string_literal: true

require "spec_helper"

RSpec.describe TaskerCore::Native::LoopbackChannel do
  subject(:channel) { described_class.new }

  after { channel.close }

  it "hands a fed step to poll as a Hash with string keys and records its completion" do
    channel.feed(1, loopback_step("step_name" => "s1", "dependency_results" => { "a" => 1, "b" => { "x" => [1, 2] } }))
    step = channel.poll(2)
    expect(step).to include("step_name" => "s1", "handler_callable" => "Examples::Noop",
                            "task_context" => { "n" => 1 }, "attempt" => 1,
                            "dependency_results" => { "a" => 1, "b" => { "x" => [1, 2] } })
    expect(step.keys).to all(be_a(String))
    expect(step["event_id"]).to match(/\A\h{8}-\h{4}-\h{4}-\h{4}-\h{12}\z/)

    expect(channel.complete(step["event_id"], ok_result({ "done" => true }))).to be(true)
    expect(channel.wait_for_completions(1, 2)).to be(true)
    expect(channel.last_result).to include("success" => true, "result" => { "done" => true },
                                           "step_uuid" => step["step_uuid"])
    expect(channel.metrics).to include("completed" => 1, "in_process" => 0, "pending" => 0)
  end

  it "returns nil when nothing arrives within the timeout" do
    expect(elapsed { expect(channel.poll(0.1)).to be_nil }).to be_between(0.05, 1.0)
  end

  it "refuses a duplicate completion and an unknown event id" do
    channel.feed(1, loopback_step)
    step = channel.poll(2)
    expect(channel.complete(step["event_id"], ok_result)).to be(true)
    expect(channel.complete(step["event_id"], ok_result)).to be(false)
    expect(channel.complete("00000000-0000-0000-0000-000000000000", ok_result)).to be(false)
    expect(channel.metrics["completions_refused"]).to eq(2)
  end

  it "times out a step polled but never completed, and refuses the late completion" do
    # A polled step has completion_timeout_ms, or its handler's timeout plus the grace when
    # that is longer: here both are 100 ms.
    ch = described_class.new("completion_timeout_ms" => 100, "timeout_grace_ms" => 100)
    ch.feed(1, loopback_step("timeout_seconds" => 0))
    step = ch.poll(2)
    expect(ch.wait_for_completions(1, 3)).to be(true)
    expect(ch.last_result).to include("success" => false)
    expect(ch.last_result["error"]).to include("error_type" => "ffi_completion_timeout", "retryable" => true)
    expect(ch.metrics["timeouts"]).to eq(1)
    expect(ch.complete(step["event_id"], ok_result)).to be(false)
  ensure
    ch&.close
  end

  it "counts steps waiting unpolled beyond the starvation threshold" do
    ch = described_class.new("starvation_warning_threshold_ms" => 50)
    ch.feed(3, loopback_step)
    deadline = monotonic + 3
    sleep 0.02 until ch.metrics["starving"] == 3 || monotonic > deadline
    expect(ch.metrics).to include("starving" => 3, "pending" => 3)
    expect(ch.metrics["oldest_pending_age_ms"]).to be >= 50
  ensure
    ch&.close
  end

  it "lets other Ruby threads run while poll waits" do
    count = 0
    counter = Thread.new { loop { count += 1 } }
    channel.poll(0.3)
    counter.kill
    expect(count).to be > 10_000
  end

  it "is interrupted promptly by Thread#kill" do
    poller = Thread.new { channel.poll(30) }
    sleep 0.1 until poller.status == "sleep" || !poller.alive?
    sleep 0.05
    took = elapsed do
      poller.kill
      expect(poller.join(2)).not_to be_nil
    end
    expect(took).to be < 0.5
  end

  it "is interrupted promptly by Thread#raise" do
    poller = Thread.new do
      Thread.current.report_on_exception = false
      channel.poll(30)
    end
    sleep 0.1
    poller.raise(RuntimeError, "wake up")
    took = elapsed { expect { poller.join(2) }.to raise_error(RuntimeError, "wake up") }
    expect(took).to be < 0.5
  end

  it "raises ConversionError naming the field of a malformed result" do
    channel.feed(1, loopback_step)
    id = channel.poll(2)["event_id"]
    expect { channel.complete(id, { "success" => true, "result" => { "at" => Time.now } }) }
      .to raise_error(TaskerCore::Native::ConversionError, /result\.result\.at: a Time is not a JSON value/)
    expect { channel.complete(id, { "success" => false, "error" => { "message" => "x", "retryable" => "no" } }) }
      .to raise_error(TaskerCore::Native::ConversionError, /result\.error\.retryable: invalid type/)
    expect { channel.complete(id, { "sucess" => true }) }
      .to raise_error(TaskerCore::Native::ConversionError, /unknown field `sucess`/)
    expect { channel.complete("not-a-uuid", ok_result) }
      .to raise_error(TaskerCore::Native::ConversionError, /event_id: 'not-a-uuid' is not a UUID/)
    expect(channel.complete(id, ok_result)).to be(true)
  end

  it "refuses unknown configuration keys and step fields by name" do
    expect { described_class.new("completion_timout_ms" => 5) }
      .to raise_error(TaskerCore::Native::ConfigError, /completion_timout_ms/)
    expect { channel.feed(1, { "stepname" => "x" }) }
      .to raise_error(TaskerCore::Native::ConversionError, /step\.stepname: unknown field/)
  end

  it "returns nil at once from poll once closed" do
    channel.close
    expect(channel.stopped?).to be(true)
    expect(elapsed { expect(channel.poll(5)).to be_nil }).to be < 0.5
  end
end

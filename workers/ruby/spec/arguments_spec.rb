# frozen_string_literal: true

require "spec_helper"

# Every number or typed value the extension takes from Ruby: a wrong type is a TypeError, a
# value out of range an ArgumentError naming the argument, never a Rust panic.
RSpec.describe "Arguments the native extension takes from Ruby" do
  let(:huge) { 1e18 }

  describe TaskerCore::Native::LoopbackChannel do
    subject(:channel) { described_class.new }

    after { channel.close }

    it "refuses timeouts that are out of range or not numbers" do
      [huge, 10**30, -1, Float::NAN, Float::INFINITY].each do |bad|
        expect { channel.poll(bad) }.to raise_error(ArgumentError, /poll timeout/)
      end
      expect { channel.poll("1") }.to raise_error(TypeError, /poll timeout: expected a number of seconds, got String/)
      expect { channel.poll(nil) }.to raise_error(TypeError, /poll timeout/)
      expect { channel.wait_for_completions(1, huge) }.to raise_error(ArgumentError, /wait_for_completions timeout/)
      expect(channel.poll(0)).to be_nil
    end

    it "refuses counts that are negative, huge or not Integers" do
      [-1, 2**64, 10**30].each do |bad|
        expect { channel.feed(bad, loopback_step) }.to raise_error(ArgumentError, /feed count/)
        expect { channel.wait_for_completions(bad, 0) }.to raise_error(ArgumentError, /wait_for_completions count/)
      end
      expect { channel.feed("3", loopback_step) }.to raise_error(TypeError, /feed count/)
      expect { channel.feed(1.5, loopback_step) }.to raise_error(TypeError, /feed count/)
      expect(channel.feed(1, loopback_step)).to eq(1)
      expect(channel.poll(2)).to include("step_name" => "loopback_step")
    end

    it "refuses channel sizes and durations a channel cannot have" do
      expect { described_class.new("dispatch_buffer_size" => 2**62) }
        .to raise_error(TaskerCore::Native::ConfigError, /dispatch_buffer_size/)
      expect { described_class.new("completion_timeout_ms" => 2**63 - 1) }
        .to raise_error(TaskerCore::Native::ConfigError, /completion_timeout_ms/)
      [-1, "soon"].each do |bad|
        expect { described_class.new("completion_timeout_ms" => bad) }
          .to raise_error(ArgumentError, /completion_timeout_ms/)
      end
      # Past 64 bits the Hash is not JSON: refused as any Hash with such a value is.
      expect { described_class.new("completion_timeout_ms" => 2**64) }
        .to raise_error(TaskerCore::Native::ConversionError, /completion_timeout_ms/)
    end
  end

  describe "configuration keys set from Ruby" do
    it "refuses sizes and durations past their limits, naming the key" do
      use_database
      {
        "worker.mpsc_channels.handler_dispatch.max_concurrent_handlers" => 2**62,
        "worker.mpsc_channels.handler_dispatch.dispatch_buffer_size" => 2**62,
        "worker.shutdown_timeout_ms" => 2**63 - 1,
        "queues.visibility_timeout_seconds" => 2**32 - 1
      }.each do |key, value|
        options = TaskerCore.configuration.native_options.merge("config" => { key => value })
        expect { TaskerCore::Native.load_config(options) }
          .to raise_error(TaskerCore::Native::ConfigError, /#{Regexp.escape(key)}/)
      end
    end
  end

  describe TaskerCore::Worker do
    after { TaskerCore::Worker.stop(timeout: 5) }

    it "refuses a concurrency that is not a positive Integer within the limit, before starting" do
      expect { start_worker(concurrency: 2**62) }.to raise_error(ArgumentError, /concurrency/)
      expect { start_worker(concurrency: 0) }.to raise_error(ArgumentError, /concurrency/)
      expect { start_worker(concurrency: "10") }.to raise_error(TypeError, /concurrency/)
      expect(TaskerCore::Worker.running?).to be(false)
    end

    it "refuses a stop timeout out of range and keeps running, then stops with a good one" do
      start_worker(namespaces: ["linear_workflow"])
      native = TaskerCore::Worker.current.instance_variable_get(:@native)
      [huge, -1, Float::NAN].each do |bad|
        expect { TaskerCore::Worker.stop(timeout: bad) }.to raise_error(ArgumentError, /stop timeout/)
        expect { native.stop(bad) }.to raise_error(ArgumentError, /stop timeout/)
      end
      expect { TaskerCore::Worker.stop(timeout: "5") }.to raise_error(TypeError, /stop timeout/)
      expect { native.poll(huge) }.to raise_error(ArgumentError, /poll timeout/)
      expect { native.poll_event(huge) }.to raise_error(ArgumentError, /poll_event timeout/)
      expect(TaskerCore::Worker.running?).to be(true)

      task = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math", version: "1.0.0",
                                            context: { "value" => 2 })
      expect(TaskerCore::Client.wait(task, timeout: 20).status).to eq("complete")
      expect(TaskerCore::Worker.stop(timeout: 5)).to be(true)
    end
  end

  describe TaskerCore::Client do
    before { use_database }

    it "refuses a wait timeout that is not a non-negative number, and a task id that is not a UUID" do
      id = "01a21765-82c5-773c-982a-ee2d542bea65"
      expect { described_class.wait(id, timeout: "soon") }.to raise_error(TypeError, /timeout/)
      expect { described_class.wait(id, timeout: nil) }.to raise_error(TypeError, /timeout/)
      [-1, Float::NAN].each do |bad|
        expect { described_class.wait(id, timeout: bad) }.to raise_error(ArgumentError, /timeout/)
        expect { TaskerCore::Native.wait_task(id, bad) }.to raise_error(ArgumentError, /timeout/)
      end
      expect { TaskerCore::Native.wait_task(id, "1") }.to raise_error(TypeError, /timeout/)
      %w[get_task cancel].each do |call|
        expect { described_class.public_send(call, "nope") }
          .to raise_error(ArgumentError, /task_uuid: 'nope' is not a UUID/)
      end
    end
  end
end

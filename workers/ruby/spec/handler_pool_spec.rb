# frozen_string_literal: true

require "spec_helper"

# Ruby handler threads over a LoopbackChannel: the worker's execution path without a database.
RSpec.describe TaskerCore::HandlerPool do
  let(:channel) { TaskerCore::Native::LoopbackChannel.new }
  let(:watchdog) { TaskerCore::Watchdog.new }
  let(:runner) { TaskerCore::StepRunner.new(registry: TaskerCore.handlers, watchdog: watchdog, default_timeout: 5) }

  after do
    channel.close
    watchdog.stop
  end

  def run_pool(concurrency:, steps:, step:, timeout: 10)
    pool = described_class.new(channel, runner: runner, concurrency: concurrency).start
    target = channel.completed_count + steps
    took = elapsed do
      channel.feed(steps, step)
      expect(channel.wait_for_completions(target, timeout)).to be(true)
    end
    pool.stop(2)
    took
  end

  it "runs 20 steps sleeping 100 ms on 10 threads in about 0.2 s, not 2 s" do
    took = run_pool(concurrency: 10, steps: 20,
                    step: loopback_step("handler_callable" => "Examples::Sleep", "initialization" => { "ms" => 100 }))
    expect(took).to be < 1.0
    expect(channel.last_results).to all(include("success" => true, "result" => { "slept_ms" => 100 }))
  end

  it "fails a handler that outlives its step timeout as handler_timeout, and the thread moves on" do
    run_pool(concurrency: 1, steps: 2,
             step: loopback_step("handler_callable" => "Examples::Sleep", "initialization" => { "ms" => 60_000 },
                                 "timeout_seconds" => 1), timeout: 5)
    results = channel.last_results
    expect(results.map { |r| r.dig("error", "error_type") }).to eq(%w[handler_timeout handler_timeout])
    expect(results.first["error"]).to include("retryable" => true,
                                              "message" => /exceeded its timeout of 1000 ms/)
  end

  it "records a raised exception as a retryable handler_error with class, message and backtrace" do
    run_pool(concurrency: 2, steps: 1, step: loopback_step("handler_callable" => "SpecHandlers::Raises"))
    error = channel.last_result["error"]
    expect(error).to include("error_type" => "handler_error", "retryable" => true,
                             "error_class" => "ArgumentError", "message" => "bad argument from a handler")
    expect(error["backtrace"].first).to include("spec_handlers.rb")
  end

  it "keeps a returned non-retryable failure non-retryable" do
    run_pool(concurrency: 1, steps: 1, step: loopback_step("handler_callable" => "SpecHandlers::ReturnsFailure"))
    expect(channel.last_result["error"]).to include("error_type" => "card_declined", "retryable" => false,
                                                    "message" => "card declined")
  end

  it "maps PermanentError and RetryableError to their types, retryability and retry hint" do
    run_pool(concurrency: 1, steps: 1, step: loopback_step("handler_callable" => "SpecHandlers::RaisesPermanent"))
    expect(channel.last_result["error"]).to include("error_type" => "account_closed", "retryable" => false,
                                                    "error_class" => "TaskerCore::PermanentError")
    run_pool(concurrency: 1, steps: 1, step: loopback_step("handler_callable" => "SpecHandlers::RaisesRetryable"))
    expect(channel.last_result["error"]).to include("error_type" => "gateway_busy", "retryable" => true,
                                                    "retry_after_ms" => 100)
  end

  it "fails a result that cannot become JSON as a final invalid_result naming the field" do
    run_pool(concurrency: 1, steps: 1, step: loopback_step("handler_callable" => "SpecHandlers::ReturnsTime"))
    expect(channel.last_result["error"]).to include("error_type" => "invalid_result", "retryable" => false,
                                                    "message" => /result\.result\.at: a Time is not a JSON value/)
  end

  it "fails an unknown callable as a final handler_not_found" do
    run_pool(concurrency: 1, steps: 1, step: loopback_step("handler_callable" => "Nope::Missing"))
    expect(channel.last_result["error"]).to include("error_type" => "handler_not_found", "retryable" => false,
                                                    "message" => /Nope::Missing/)
  end

  it "passes initialization, context and metadata through" do
    run_pool(concurrency: 1, steps: 1,
             step: loopback_step("handler_callable" => "SpecHandlers::Greets",
                                 "initialization" => { "greeting" => "Hi" }, "task_context" => { "name" => "Ada" }))
    expect(channel.last_result).to include("result" => "Hi, Ada")
    expect(channel.last_result.dig("metadata", "custom")).to eq("handler" => "greets")
  end

  it "uses handlers registered explicitly, including callables that are not classes" do
    TaskerCore.register_handler("Spec::Lambda", ->(ctx) { ctx.task_context["n"] * 2 })
    run_pool(concurrency: 1, steps: 1, step: loopback_step("handler_callable" => "Spec::Lambda"))
    expect(channel.last_result).to include("success" => true, "result" => 2)
  end
end

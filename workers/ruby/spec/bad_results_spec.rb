# frozen_string_literal: true

require "spec_helper"

# Every bad output a Ruby handler can produce, at once on 10 handler threads of a real worker:
# each fails its own step with an error naming the problem, and the worker goes on.
# kind => [error_type, retryable, attempts, message]
BAD_RESULTS = {
  "cyclic" => ["invalid_result", false, 1, /result\.result\.self: a cyclic Hash \(it contains itself\)/],
  "deep" => ["invalid_result", false, 1, /result\.result(\.a){64}: nested deeper than 64 levels/],
  "nan" => ["invalid_result", false, 1, /result\.result\.ratio: NaN is not a JSON number/],
  "infinity" => ["invalid_result", false, 1, /result\.result\.ratio: -Infinity is not a JSON number/],
  "nul" => ["invalid_result", false, 1, /result\.result\.note: contains a NUL character/],
  "huge" => ["invalid_result", false, 1, /result: about \d+ bytes of JSON, more than max_payload_bytes \(8388608\)/],
  "retry_after_soon" => ["invalid_result", false, 1,
                         /result\.error\.retry_after_seconds: invalid type: string "soon"/],
  "metadata_not_hash" => ["invalid_result", false, 1, /metadata must be a Hash \(a JSON object\), got 42/],
  "no_json_form" => ["invalid_result", false, 1, /result\.result\.it: a Object is not a JSON value/],
  "raises_exception" => ["handler_error", true, 2, /Exception: not a StandardError/],
  "exits" => ["handler_error", true, 2, /SystemExit: exit/],
  "thread_exit" => ["handler_error", true, 2, /the handler thread ended before the step finished/]
}.freeze

RSpec.describe "Bad handler output" do
  before(:context) { start_worker }
  after(:context) { TaskerCore::Worker.stop(timeout: 5) }

  it "fails each bad result's step with a message naming the problem, then runs 100 good tasks" do
    tasks = BAD_RESULTS.keys.to_h do |kind|
      [kind, TaskerCore::Client.create_task(namespace: "rspec_errors", name: "bad_result", version: "1.0.0",
                                            context: { "kind" => kind })]
    end
    tasks.each do |kind, task|
      done = TaskerCore::Client.wait(task, timeout: 60)
      step = done.step("produce")
      error_type, retryable, attempts, message = BAD_RESULTS.fetch(kind)
      expect([kind, done.status, step.status, step.attempts]).to eq([kind, "error", "error", attempts])
      expect(step.error).to include("error_type" => error_type, "retryable" => retryable, "message" => message)
    end

    status = TaskerCore::Worker.current.status
    expect(status["handler_threads_alive"]).to eq(10)
    expect(status["handler_threads_replaced"]).to eq(2), "thread_exit ran twice, each time replacing its thread"

    good = Array.new(100) do |i|
      TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math", version: "1.0.0",
                                     context: { "value" => i })
    end
    statuses = good.map { |t| TaskerCore::Client.wait(t, timeout: 60).status }
    expect(statuses.tally).to eq("complete" => 100)
  end

  it "refuses a task context with no JSON form, naming where" do
    bad = {
      { "ratio" => Float::NAN } => /task request\.context\.ratio: NaN is not a JSON number/,
      { "note" => "a\0b" } => /task request\.context\.note: contains a NUL character/,
      { "t" => Time.at(0) } => /task request\.context\.t: a Time is not a JSON value/,
      (1..65).reduce(1) do |inner, _|
        { "a" => inner }
      end => /task request\.context(\.a){64}: nested deeper than 64 levels/
    }
    cyclic = {}
    cyclic["again"] = cyclic
    bad[cyclic] = /task request\.context\.again: a cyclic Hash/
    bad.each do |context, message|
      expect do
        TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math", version: "1.0.0",
                                       context: context)
      end.to raise_error(TaskerCore::Native::ConversionError, message)
    end
    expect do
      TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math", version: "1.0.0",
                                     context: { "blob" => "x" * 9_000_000 })
    end.to raise_error(TaskerCore::Native::InvalidContextError, /more than max_payload_bytes \(8388608\)/)
  end
end

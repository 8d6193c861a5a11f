# frozen_string_literal: true

require "spec_helper"

# The Ruby worker with embedded orchestration against the spec database.
RSpec.describe TaskerCore::Worker do
  before(:context) { start_worker }
  after(:context) { TaskerCore::Worker.stop(timeout: 5) }

  def run_task(name, context = {})
    task = TaskerCore::Client.create_task(namespace: "rspec_errors", name: name, version: "1.0.0", context: context)
    TaskerCore::Client.wait(task, timeout: 20)
  end

  it "is running, serving every namespace on the template path" do
    expect(described_class.running?).to be(true)
    expect(described_class.current.namespaces).to include("ecommerce", "linear_workflow", "rspec_errors")
    expect(described_class.current.status).to include("running" => true)
  end

  it "records a raised exception as a retryable handler_error with class and backtrace" do
    task = run_task("raises")
    step = task.step("boom")
    expect([task.status, step.status, step.attempts]).to eq(%w[error error] + [1])
    expect(step.error).to include("error_type" => "handler_error", "retryable" => true,
                                  "error_class" => "ArgumentError", "message" => "bad argument from a handler")
    expect(step.error["backtrace"]).not_to be_empty
  end

  it "keeps a returned non-retryable failure final despite attempts left" do
    task = run_task("returns_failure")
    step = task.step("charge")
    expect([task.status, step.status, step.attempts]).to eq(%w[error error] + [1])
    expect(step.error).to include("error_type" => "card_declined", "retryable" => false)
  end

  it "ends a PermanentError after one attempt with its error type" do
    step = run_task("raises_permanent").step("close")
    expect([step.status, step.attempts]).to eq(["error", 1])
    expect(step.error).to include("error_type" => "account_closed", "retryable" => false,
                                  "error_class" => "TaskerCore::PermanentError")
  end

  it "retries a RetryableError until attempts run out, keeping its type and retry hint" do
    step = run_task("raises_retryable").step("busy")
    expect([step.status, step.attempts]).to eq(["error", 2])
    expect(step.error).to include("error_type" => "gateway_busy", "retryable" => true, "retry_after_ms" => 100,
                                  "message" => "gateway busy (attempt 2)")
  end

  it "fails a result that cannot be recorded as a final invalid_result" do
    step = run_task("invalid_result").step("time")
    expect([step.status, step.attempts]).to eq(["error", 1])
    expect(step.error).to include("error_type" => "invalid_result", "retryable" => false)
  end

  it "delivers fast domain events to matching subscribers only" do
    seen = Queue.new
    payments = TaskerCore.subscribe("payment.*") { |e| seen << e }
    task = TaskerCore::Client.create_task(
      namespace: "ecommerce", name: "order_fulfillment", version: "1.0.0",
      context: { "order_id" => 7, "items" => [{ "sku" => "A", "quantity" => 1, "price" => 2.5 }] }
    )
    expect(TaskerCore::Client.wait(task, timeout: 20).status).to eq("complete")
    deadline = monotonic + 5
    sleep 0.02 while seen.empty? && monotonic < deadline
    event = seen.pop
    expect(event.name).to eq("payment.processed")
    expect(event.payload).to eq("charge_id" => "ch_7", "amount" => 2.5, "currency" => "USD")
    expect(event.task_uuid).to eq(task.task_uuid)
    sleep 0.2
    expect(seen).to be_empty, "order.validated must not reach a payment.* subscriber"
  ensure
    TaskerCore.unsubscribe(payments)
  end

  it "takes a new task's root steps in the creating transaction, without reading its queue" do
    task = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math", version: "1.0.0",
                                          context: { "value" => 2 })
    root, *rest = task.steps
    expect([root.name, root.status, root.attempts]).to eq(["add_two", "in_progress", 1])
    expect(rest.map(&:status).uniq).to eq(["pending"])
    expect(TaskerCore::Client.wait(task, timeout: 20).status).to eq("complete")
  end

  it "refuses a second worker while one runs" do
    expect { start_worker }.to raise_error(TaskerCore::WorkerError, /already running/)
  end

  describe "handler discovery" do
    it "refuses to start when a served namespace names a handler that does not exist" do
      worker = described_class.new(namespaces: ["rspec_missing"], trap_signals: false,
                                   configuration: TaskerCore.configuration.dup.tap do |c|
                                     c.template_path = [TaskerSpec::MISSING_TEMPLATES]
                                   end)
      expect { worker.start }.to raise_error(TaskerCore::HandlerNotFoundError,
                                             /SpecHandlers::DoesNotExist \(step 'ghost' of rspec_missing/)
    end
  end
end

RSpec.describe TaskerCore::Worker, "stopping" do
  it "drains a running handler before stop returns, then reports stopped" do
    worker = start_worker(namespaces: ["sleep_workflow"], concurrency: 4)
    task = TaskerCore::Client.create_task(namespace: "sleep_workflow", name: "parallel_sleep", version: "1.0.0",
                                          context: { "sleep_ms" => 300 })
    deadline = monotonic + 10
    sleep 0.02 until worker.ffi_metrics["in_process"].positive? || monotonic > deadline
    expect(worker.stop(timeout: 10)).to be(true)
    expect(worker.running?).to be(false)
    expect(worker.stop).to be(false)
    statuses = TaskerCore::Client.get_task(task).steps.map(&:status)
    expect(statuses).not_to include("in_progress")
    expect(statuses & %w[complete enqueued_for_orchestration]).not_to be_empty
  end
end

RSpec.describe TaskerCore::Worker, "starting" do
  it "calls the around_handler once before it claims a step, then once around each handler" do
    calls = Queue.new
    configuration = TaskerCore.configuration.dup.tap do |c|
      c.around_handler = lambda do |&handler|
        calls << :around
        handler.call
      end
    end
    use_database
    worker = described_class.new(namespaces: ["linear_workflow"], concurrency: 2, orchestration: :embedded,
                                 trap_signals: false, configuration: configuration)
    worker.start
    begin
      expect(calls.size).to eq(1)
      task = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math", version: "1.0.0",
                                            context: { "value" => 1 })
      expect(TaskerCore::Client.wait(task, timeout: 20).status).to eq("complete")
      expect(calls.size).to eq(1 + TaskerCore::Client.get_task(task).steps.size)
    ensure
      worker.stop(timeout: 5)
    end
  end

  def worker_around(&around)
    use_database
    described_class.new(namespaces: ["linear_workflow"], concurrency: 2, orchestration: :embedded,
                        trap_signals: false,
                        configuration: TaskerCore.configuration.dup.tap { |c| c.around_handler = around })
  end

  it "refuses to start, running nothing, when the wrapper raises" do
    worker = worker_around { |&_handler| raise ArgumentError, "wrapper is broken" }
    expect { worker.start }.to raise_error(ArgumentError, "wrapper is broken")
    expect(worker.running?).to be(false)
  end

  it "starts without waiting past its timeout for a wrapper whose first call hangs" do
    stub_const("TaskerCore::Worker::WARM_UP_TIMEOUT", 0.2)
    release = Queue.new
    first = true
    worker = worker_around do |&handler|
      if first
        first = false
        release.pop
      end
      handler.call
    end
    worker.start
    begin
      expect(worker.running?).to be(true)
    ensure
      release << :go
      worker.stop(timeout: 5)
    end
  end
end

# frozen_string_literal: true

require "spec_helper"

RSpec.describe TaskerCore::Client do
  before(:context) do
    use_database
    # Templates are registered by a worker at start; here without one.
    TaskerCore::Native.register_templates(TaskerSpec::TestDatabase.url, TaskerCore.configuration.template_paths,
                                          "test")
  end

  let(:order) { { "order_id" => 1, "items" => [{ "sku" => "A", "quantity" => 1, "price" => 1.0 }] } }

  it "creates a task and reads it back with its steps" do
    task = described_class.create_task(namespace: "ecommerce", name: "order_fulfillment", version: "1.0.0",
                                       context: order)
    expect(task.created?).to be(true)
    expect(task.task_uuid).to match(/\A\h{8}-/)
    expect(task.status).to eq("steps_in_process")
    expect(task.context).to eq(order)
    expect(task.steps.map(&:name)).to eq(%w[validate_order reserve_inventory charge_payment ship_order])
    expect(task.step("validate_order").status).to eq("enqueued")
    expect { task.step("nope") }.to raise_error(KeyError, /no step 'nope'; steps: validate_order/)
    expect(described_class.get_task(task.task_uuid).task_uuid).to eq(task.task_uuid)
  end

  it "reads tasks natively as their JSON form has them: String keys, payloads as given, times in UTC" do
    context = { "order_id" => 7, "customer_email" => "zoë@example.com", "note" => nil, "gift" => true,
                "items" => [{ "sku" => "A", "quantity" => 2**40, "price" => 1.5, "tags" => [] }] }
    task = described_class.create_task(namespace: "ecommerce", name: "order_fulfillment", version: "1.0.0",
                                       context: context)
    raw = TaskerCore::Native.get_task(task.task_uuid, TaskerCore.configuration.native_options)
    expect(raw.keys).to all(be_a(String))
    expect(raw).to include("task_uuid" => task.task_uuid, "context" => context, "terminal" => false,
                           "state" => "steps_in_process", "completed_at" => nil)
    expect(raw["created_at"]).to match(/\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\z/)
    first = raw["steps"].first
    expect(raw["steps"].flat_map(&:keys)).to all(be_a(String))
    expect(first).to include("name" => "validate_order", "position" => 0, "retryable" => true, "results" => nil,
                             "backoff_base_ms" => 100, "step_uuid" => task.step("validate_order").step_uuid)
    expect(TaskerCore::Native.cancel_task(task.task_uuid, TaskerCore.configuration.native_options))
      .to include("state" => "cancelled", "terminal" => true).and(satisfy { |t| !t.key?("steps") })
  end

  it "returns the existing task for a repeated idempotency key" do
    first = described_class.create_task(namespace: "ecommerce", name: "order_fulfillment", version: "1.0.0",
                                        context: order, idempotency_key: "order-1")
    again = described_class.create_task(namespace: "ecommerce", name: "order_fulfillment", version: "1.0.0",
                                        context: order, idempotency_key: "order-1")
    expect(again.task_uuid).to eq(first.task_uuid)
    expect(again.created?).to be(false)
  end

  it "cancels a task" do
    task = described_class.create_task(namespace: "ecommerce", name: "order_fulfillment", version: "1.0.0",
                                       context: order)
    cancelled = described_class.cancel(task)
    expect(cancelled.status).to eq("cancelled")
    expect(cancelled.terminal?).to be(true)
    expect(cancelled.step("validate_order").status).to eq("cancelled")
    expect { described_class.cancel(task) }.to raise_error(TaskerCore::Native::InvalidStateError, /cancelled/)
  end

  it "raises TimeoutError naming the step states when a task does not finish" do
    task = described_class.create_task(namespace: "linear_workflow", name: "linear_math", version: "1.0.0",
                                       context: { "value" => 1 })
    expect { described_class.wait(task, timeout: 0.2) }
      .to raise_error(TaskerCore::TimeoutError, /still steps_in_process after 0.2 s: add_two=enqueued/)
  end

  it "raises typed errors that say what was wrong" do
    expect do
      described_class.create_task(namespace: "ecommerce", name: "nope", version: "1.0.0", context: {})
    end.to raise_error(TaskerCore::Native::TemplateNotFoundError, %r{ecommerce/nope@1.0.0})
    expect do
      described_class.create_task(namespace: "ecommerce", name: "order_fulfillment", version: "1.0.0",
                                  context: { "order_id" => "x" })
    end.to raise_error(TaskerCore::Native::InvalidContextError, /order_id/)
    expect { described_class.get_task("01a21765-82c5-773c-982a-ee2d542bea65") }
      .to raise_error(TaskerCore::Native::NotFoundError, /not found/)
    expect { described_class.get_task("nope") }
      .to raise_error(ArgumentError, /task_uuid: 'nope' is not a UUID/)
    expect(TaskerCore::Native::Error.ancestors).to include(TaskerCore::Error, StandardError)
  end
end

RSpec.describe "TaskerCore::Client.wait" do
  before(:context) { start_worker(namespaces: ["linear_workflow"]) }
  after(:context) { TaskerCore::Worker.stop(timeout: 5) }

  def listening_connections
    sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() " \
          "AND query ILIKE 'LISTEN%tasker_task_finished%'"
    out = IO.popen(["psql", TaskerSpec::TestDatabase.url, "-Atc", sql], &:read)
    raise "psql failed: #{out}" unless $CHILD_STATUS.success?

    Integer(out.strip)
  end

  it "wakes 200 threads waiting on 200 tasks, through one listening connection" do
    tasks = Array.new(200) do |i|
      TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math", version: "1.0.0",
                                     context: { "value" => i })
    end
    seen = []
    watcher = Thread.new do
      20.times do
        seen << listening_connections
        sleep 0.05
      end
    end
    waiters = tasks.map { |t| Thread.new { TaskerCore::Client.wait(t, timeout: 60) } }
    finished = waiters.map(&:value)
    watcher.join
    expect(finished.map(&:status).uniq).to eq(["complete"])
    expect(finished.map { |t| t.step("minus_one").result }).to eq(Array.new(200) { |i| (((i + 2) * 3)**2) - 1 })
    expect(seen.max).to eq(1)
  end

  it "lets other Ruby threads run while it waits" do
    # No worker serves this namespace, so the wait lasts its whole timeout however fast the
    # machine is.
    task = TaskerCore::Client.create_task(
      namespace: "ecommerce", name: "order_fulfillment", version: "1.0.0",
      context: { "order_id" => 1, "items" => [{ "sku" => "A", "quantity" => 1, "price" => 1.0 }] }
    )
    ticks = 0
    ticker = Thread.new do
      loop do
        ticks += 1
        sleep 0.001
      end
    end
    expect { TaskerCore::Client.wait(task, timeout: 0.3) }.to raise_error(TaskerCore::TimeoutError, /still/)
    ticker.kill
    expect(ticks).to be > 50
  end
end

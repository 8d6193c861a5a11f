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
      .to raise_error(TaskerCore::Native::ConversionError, /task_uuid: 'nope' is not a UUID/)
    expect(TaskerCore::Native::Error.ancestors).to include(TaskerCore::Error, StandardError)
  end
end

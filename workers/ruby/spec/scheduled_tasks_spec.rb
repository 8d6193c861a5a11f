# frozen_string_literal: true

require "spec_helper"

RSpec.describe "scheduled tasks (Client.create_task run_at:)" do
  before(:context) { start_worker(namespaces: ["linear_workflow"]) }
  after(:context) { TaskerCore::Worker.stop(timeout: 5) }

  def create(run_at)
    TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math", version: "1.0.0",
                                   context: { "value" => 6 }, run_at: run_at)
  end

  it "starts no step before run_at, with a worker running beside it, and completes after" do
    run_at = Time.now + 1.5
    task = create(run_at)
    expect(Time.iso8601(task.run_at)).to be_within(0.001).of(run_at)
    expect(task.steps.map(&:attempts)).to all(eq(0))

    sleep 1.0
    early = TaskerCore::Client.get_task(task)
    expect(early.steps.map(&:attempts)).to all(eq(0))

    done = TaskerCore::Client.wait(task, timeout: 20)
    expect(done.status).to eq("complete")
    expect(done.step("minus_one").result).to eq(575)
  end

  it "takes a run_at in the past as now" do
    done = TaskerCore::Client.wait(create(Time.now - 60), timeout: 20)
    expect(done.status).to eq("complete")
  end

  it "refuses a run_at that is not a time" do
    expect { create(42) }.to raise_error(ArgumentError, /run_at: expected a Time, got Integer/)
    expect { create("soon") }.to raise_error(TaskerCore::Native::ConversionError, /run_at/)
  end
end

# frozen_string_literal: true

require "spec_helper"

RSpec.describe TaskerCore::Batches do
  it "cuts a total into numbered ranges, the last one short" do
    expect(described_class.ranges(total: 250, size: 100)).to eq(
      [{ "batch_id" => "000", "start_cursor" => 0, "end_cursor" => 100 },
       { "batch_id" => "001", "start_cursor" => 100, "end_cursor" => 200 },
       { "batch_id" => "002", "start_cursor" => 200, "end_cursor" => 250 }]
    )
    expect(described_class.ranges(total: 100, size: 100).size).to eq(1)
    expect(described_class.ranges(total: 0, size: 10)).to eq([])
    expect { described_class.ranges(total: 5, size: 0) }.to raise_error(ArgumentError, /size/)
  end
end

RSpec.describe TaskerCore::StepContext do
  it "reads a batch worker's batch and a convergence step's batch results in batch order" do
    ctx = described_class.new(
      "inputs" => { "batch" => { "batch_id" => "001" } },
      "dependency_results" => { "part_010" => 10, "part_002" => 2, "part_000" => 0, "partial" => 9, "other_1" => 1 }
    )
    expect(ctx.batch).to eq("batch_id" => "001")
    expect(ctx.batch_results("part")).to eq([0, 2, 10])
    expect(ctx.batch_results("none")).to eq([])
    expect(described_class.new({}).batch).to be_nil
  end
end

RSpec.describe TaskerCore::StepHandler::Result do
  it "carries next_steps and batches to the extension only when given" do
    expect(described_class.success(result: 1).to_native.keys).to eq(%w[success result])
    expect(described_class.success(result: 1, next_steps: [:a, "b"]).to_native["next_steps"]).to eq(%w[a b])
    expect(described_class.success(result: 1, next_steps: []).to_native["next_steps"]).to eq([])
    expect(described_class.success(batches: [{ "n" => 1 }]).to_native["batches"]).to eq([{ "n" => 1 }])
  end
end

# Decisions, batches and convergence through the Ruby worker with embedded orchestration.
RSpec.describe "dynamic workflows on the Ruby worker" do
  before(:context) { start_worker }
  after(:context) { TaskerCore::Worker.stop(timeout: 5) }

  def run(context)
    task = TaskerCore::Client.create_task(namespace: "rspec_dynamic", name: "dynamic", version: "1.0.0",
                                          context: context)
    TaskerCore::Client.wait(task, timeout: 20)
  end

  it "creates only the chosen branch; the convergence step sees nil for the others" do
    task = run("next_steps" => ["a"])
    expect(task.status).to eq("complete")
    expect(task.steps.map(&:name)).to match_array(%w[decide a done])
    expect(task.step("done").result).to eq("a" => "a ran", "b" => nil, "parts" => [])
  end

  it "runs a batch chosen by the decision, one worker per batch with its batch as input" do
    batches = [{ "n" => 1 }, { "n" => 2 }, { "n" => 3 }]
    task = run("next_steps" => %w[split b], "batches" => batches)
    expect(task.status).to eq("complete")
    expect(task.steps.map(&:name)).to match_array(%w[decide b split part_000 part_001 part_002 done])
    expect(task.step("part_001").batch).to eq("n" => 2)
    expect(task.step("part_001").step_type).to eq("batch_worker")
    expect(task.step("part_002").result).to eq("batch" => { "n" => 3 }, "step" => "part_002")
    expect(task.step("done").result).to eq("a" => nil, "b" => "b ran", "parts" => %w[part_000 part_001 part_002])
  end

  it "still converges when the decision chooses nothing, or the batch is empty" do
    task = run("next_steps" => [])
    expect([task.status, task.steps.map(&:name).sort]).to eq(["complete", %w[decide done]])
    expect(task.step("done").result).to eq("a" => nil, "b" => nil, "parts" => [])
    task = run("next_steps" => ["split"], "batches" => [])
    expect([task.status, task.steps.map(&:name).sort]).to eq(["complete", %w[decide done split]])
    expect(task.step("done").result["parts"]).to eq([])
  end

  it "fails a decision naming a step that is not its dependent, or a malformed one, as invalid_decision" do
    [[["nope"], /"nope"/], ["a", /"a"/], [[{ "x" => 1 }], /\{"x":1\}|\{"x": 1\}/]].each do |next_steps, named|
      task = run("next_steps" => next_steps)
      step = task.step("decide")
      expect([task.status, step.status, step.attempts]).to eq(["error", "error", 1]), next_steps.inspect
      expect(step.error).to include("error_type" => "invalid_decision", "retryable" => false)
      expect(step.error["message"]).to match(named)
      expect(task.steps.map(&:name).sort).to eq(%w[decide done])
    end
  end

  it "fails more batches than max_workers, or a batch that is not a Hash, as invalid_batch" do
    [[[{}, {}, {}, {}], /4 batches.*max_workers \(3\)/], [[{}, 5], /batches\[1\]/]].each do |batches, named|
      task = run("next_steps" => ["split"], "batches" => batches)
      step = task.step("split")
      expect([task.status, step.status]).to eq(%w[error error])
      expect(step.error).to include("error_type" => "invalid_batch", "retryable" => false)
      expect(step.error["message"]).to match(named)
      expect(task.steps.map(&:name)).not_to include("part_000")
    end
  end
end

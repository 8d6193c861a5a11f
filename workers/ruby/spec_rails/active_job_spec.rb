# frozen_string_literal: true

require "rails_helper"
require "tasker_core/testing"

RSpec.describe ActiveJob::QueueAdapters::TaskerAdapter do
  # A worker serving the active_job namespace (and its scheduler) in this process.
  before(:context) do
    TaskerCore::Testing.run_task(namespace: "active_job", name: "active_job", version: "1.0.0",
                                 context: { "job" => WidgetJob.new(Widget.create!(name: "w"), "warm", {}).serialize })
  end

  after { Widget.delete_all }

  def wait_for(timeout: 15)
    deadline = monotonic + timeout
    until (value = yield)
      raise "still waiting after #{timeout} s" if monotonic > deadline

      sleep 0.02
    end
    value
  end

  def task_for(job)
    TaskerCore::Client.wait(job.provider_job_id, timeout: 20)
  end

  it "runs perform_later on a Tasker worker: one-step active_job task, provider_job_id its uuid, GlobalID arguments" do
    widget = Widget.create!(name: "w")
    job = WidgetJob.perform_later(widget, "hello", { tag: :sym })
    task = task_for(job)
    expect([task.namespace, task.name, task.version, task.status]).to eq(%w[active_job active_job 1.0.0 complete])
    expect(task.steps.map(&:name)).to eq(["perform"])
    expect(task.context.dig("job", "arguments", 0)).to eq("_aj_globalid" => widget.to_global_id.to_s)
    expect(widget.reload.name).to eq("w|hello:sym:#{job.provider_job_id}")
  end

  it "delays set(wait:) and set(wait_until:) jobs until they are due" do
    widget = Widget.create!(name: "w")
    started = monotonic
    waited = WidgetJob.set(wait: 2.seconds).perform_later(widget, "waited", {})
    WidgetJob.set(wait_until: 1.second.from_now).perform_later(widget, "until", {})
    expect(widget.reload.name).to eq("w")
    scheduled = TaskerCore::Client.get_task(waited.provider_job_id)
    expect(Time.iso8601(scheduled.run_at)).to be_within(0.5).of(Time.now + 2)
    expect(scheduled.steps.map(&:attempts)).to all(eq(0))
    wait_for { widget.reload.name.include?("until") }
    expect(monotonic - started).to be >= 1.0
    expect(widget.reload.name).not_to include("waited")
    wait_for { widget.reload.name.include?("waited") }
    expect(monotonic - started).to be_between(2.0, 5.0)
  end

  it "leaves retries to retry_on: a failed execution is enqueued again and runs as a new task" do
    widget = Widget.create!(name: "w")
    first = FlakyJob.perform_later(widget)
    expect(task_for(first).status).to eq("complete")
    wait_for { widget.reload.name.include?("run2") }
    expect(widget.reload.name).to eq("w|run1|run2")
  end

  it "follows discard_on, and fails the task for good on an error the job does not handle" do
    widget = Widget.create!(name: "w")
    discarded = task_for(DiscardedJob.perform_later(widget, "Gone"))
    expect(discarded.status).to eq("complete")

    failed = task_for(DiscardedJob.perform_later(widget, "Broken"))
    expect(failed.status).to eq("error")
    step = failed.step("perform")
    expect([step.attempts, step.error["error_type"], step.error["error_class"], step.error["message"]])
      .to eq([1, "active_job_failed", "DiscardedJob::Broken", "raised by the job"])
    expect(widget.reload.name).to eq("w|run1|run1")
  end
end

RSpec.describe "tasks requested inside an Active Record transaction" do
  def marked(marker)
    ActiveRecord::Base.connection.select_value(
      "SELECT count(*) FROM tasker.tasks WHERE context->>'marker' = #{ActiveRecord::Base.connection.quote(marker)}"
    ).to_i
  end

  def request(marker)
    TaskerCore::Client.create_task(namespace: "rails_spec", name: "query", version: "1.0.0",
                                   context: { "marker" => marker })
  end

  it "creates the task when the transaction commits" do
    marker = "commit-#{SecureRandom.hex(4)}"
    pending = nil
    ActiveRecord::Base.transaction do
      pending = request(marker)
      expect(pending).to be_pending
      expect(marked(marker)).to eq(0)
    end
    expect(pending).to be_created
    expect(TaskerCore::Client.get_task(pending).context).to eq("marker" => marker)
    expect(marked(marker)).to eq(1)
  end

  it "never creates it when the transaction rolls back, nor when a savepoint it was requested in does" do
    marker = "rollback-#{SecureRandom.hex(4)}"
    pendings = []
    ActiveRecord::Base.transaction do
      pendings << request(marker)
      raise ActiveRecord::Rollback
    end
    ActiveRecord::Base.transaction do
      ActiveRecord::Base.transaction(requires_new: true) do
        pendings << request(marker)
        raise ActiveRecord::Rollback
      end
    end
    expect(pendings.map(&:state)).to eq(%i[rolled_back rolled_back])
    expect(marked(marker)).to eq(0)
  end

  it "enqueues an Active Job job on commit only" do
    widget = Widget.create!(name: "tx")
    rolled_back = nil
    ActiveRecord::Base.transaction do
      rolled_back = WidgetJob.perform_later(widget, "never", {})
      raise ActiveRecord::Rollback
    end
    expect(rolled_back.provider_job_id).to be_nil
    job = nil
    ActiveRecord::Base.transaction do
      job = WidgetJob.perform_later(widget, "committed", {})
      expect(job.provider_job_id).to be_nil
    end
    expect(TaskerCore::Client.wait(job.provider_job_id, timeout: 20).status).to eq("complete")
    expect(widget.reload.name).to eq("tx|committed::#{job.provider_job_id}")
  ensure
    Widget.delete_all
  end

  it "creates at once outside a transaction" do
    expect(request("plain-#{SecureRandom.hex(4)}")).to be_a(TaskerCore::Task)
  end
end

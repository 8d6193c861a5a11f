# frozen_string_literal: true

require "spec_helper"
require "timeout"

RSpec.describe "after fork" do
  # Runs the block in a forked child; the child's exit status says whether it passed.
  def in_child(timeout: 30)
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      status = begin
        yield
        0
      rescue Exception => e # rubocop:disable Lint/RescueException
        writer.write("#{e.class}: #{e.message}\n#{e.backtrace&.first(5)&.join("\n")}")
        1
      end
      writer.close
      exit!(status)
    end
    writer.close
    _, status = Timeout.timeout(timeout) { Process.wait2(pid) }
    message = reader.read
    expect(status.exitstatus).to eq(0), "child failed: #{message}"
  rescue Timeout::Error
    Process.kill("KILL", pid)
    Process.wait(pid)
    raise "forked child hung for #{timeout} s"
  end

  it "gives the child its own runtime: a new channel works, the parent's refuses" do
    parent = TaskerCore::Native::LoopbackChannel.new
    parent.feed(1, loopback_step)
    step = parent.poll(2)
    in_child do
      raise "parent channel usable in child" unless
        begin
          parent.poll(0)
          false
        rescue TaskerCore::Native::ForkError => e
          e.message.include?("create a new one after fork")
        end

      child = TaskerCore::Native::LoopbackChannel.new
      child.feed(2, loopback_step)
      2.times do
        s = child.poll(2) or raise "child poll returned nothing"
        child.complete(s["event_id"], ok_result(1)) or raise "child completion refused"
      end
      raise "child completions never arrived" unless child.wait_for_completions(2, 5)
    end
    expect(parent.complete(step["event_id"], ok_result)).to be(true)
    parent.close
  end

  it "lets the child use the client against the database" do
    use_database
    TaskerCore::Native.register_templates(TaskerSpec::TestDatabase.url, TaskerCore.configuration.template_paths,
                                          "test")
    task = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math", version: "1.0.0",
                                          context: { "value" => 2 })
    in_child do
      again = TaskerCore::Client.get_task(task.task_uuid)
      raise "child read #{again.inspect}" unless again.task_uuid == task.task_uuid

      made = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math", version: "1.0.0",
                                            context: { "value" => 3 })
      raise "child could not create a task" unless made.created?
    end
    expect(TaskerCore::Client.get_task(task).task_uuid).to eq(task.task_uuid)
  end
end

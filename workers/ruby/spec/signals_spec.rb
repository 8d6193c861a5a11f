# frozen_string_literal: true

require "spec_helper"
require "open3"
require "rbconfig"
require "timeout"

# A worker process stops cleanly on SIGTERM: the trap drains it and Worker#wait returns.
RSpec.describe "a worker process receiving SIGTERM" do
  it "drains and exits" do
    script = <<~RUBY
      $LOAD_PATH.unshift(#{File.join(ROOT, "workers/ruby/lib").inspect})
      require #{File.join(ROOT, "workers/ruby/examples/handlers").inspect}
      TaskerCore.configure do |c|
        c.database_url = #{TaskerSpec::TestDatabase.url.inspect}
        c.environment = "test"
        c.config_dir = #{File.join(ROOT, "config/tasker").inspect}
        c.template_path = #{File.join(ROOT, "config/tasks").inspect}
      end
      worker = TaskerCore::Worker.start(namespaces: ["sleep_workflow"], concurrency: 2, orchestration: :embedded)
      puts "ready"
      $stdout.flush
      worker.wait
      puts "stopped cleanly"
    RUBY
    Open3.popen2e({ "TASKER_LOG" => "error" }, RbConfig.ruby, "-e", script) do |stdin, out, wait|
      stdin.close
      Timeout.timeout(30) { expect(out.gets).to eq("ready\n") }
      Process.kill("TERM", wait.pid)
      status = Timeout.timeout(30) { wait.value }
      expect(out.read).to include("stopped cleanly")
      expect(status.exitstatus).to eq(0)
    end
  end
end

# frozen_string_literal: true

require "rails_helper"
require "open3"
require "securerandom"
require "json"
require "socket"
require "timeout"

# What a new Rails user does, in a temporary folder: `rails new`, the native gem
# (pkg/, built by rake gem:native) installed and added to the Gemfile, the generators,
# tasker:setup, a tasker:worker process, tasks and Active Job jobs from bin/rails runner,
# the generated workflow spec, then Puma with `plugin :tasker` in cluster and single mode.
RAILS_NEW_FLAGS = %w[--skip-bundle -d postgresql --skip-git --skip-keeps --skip-javascript --skip-webpack-install
                     --skip-sprockets --skip-spring --skip-listen --skip-bootsnap --skip-action-cable
                     --skip-action-mailbox --skip-action-text --skip-active-storage --skip-action-mailer
                     --skip-test --skip-system-test --skip-jbuilder].freeze

RSpec.describe "a new Rails app using Tasker" do
  before(:context) do
    @dir = Dir.mktmpdir("tasker_rails_e2e")
    @name = "tasker_e2e_#{SecureRandom.hex(4)}"
    @app = File.join(@dir, @name)
    @pids = []
    gem_file = Dir[File.join(ROOT, "pkg/tasker_core-#{TaskerCore::VERSION}-#{Gem::Platform.local}.gem")].first
    raise "no native gem in pkg/: run rake gem:native" unless gem_file

    home = File.join(@dir, "gems")
    @env = { "GEM_HOME" => home, "GEM_PATH" => [home, *Gem.path].join(":"), "RUBYOPT" => nil, "RUBYLIB" => nil,
             "BUNDLE_GEMFILE" => nil, "BUNDLE_PATH" => nil, "DATABASE_URL" => nil, "TASKER_ENV" => nil,
             "RAILS_ENV" => "development", "TASKER_LOG" => "warn" }
    sh("gem", "install", "--local", "--no-document", "--install-dir", home, gem_file, chdir: @dir)
    sh("rails", "new", @name, *RAILS_NEW_FLAGS, chdir: @dir)
    server = URI(ENV.fetch("TASKER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    edit("config/database.yml") do |yml|
      yml.sub("  encoding: unicode\n", "  encoding: unicode\n  host: #{server.host}\n  port: #{server.port}\n" \
                                        "  username: #{server.user}\n")
    end
    # Only gems Debian installed (bundle install --local), plus Tasker and rspec-rails.
    edit("Gemfile") do |gemfile|
      kept = gemfile.lines.reject { |l| l.match?(/byebug|web-console|tzinfo-data/) }.join
      %(#{kept}gem "tasker_core"\ngem "rspec-rails", group: [:development, :test]\n)
    end
    sh("bundle", "install", "--local")
    sh("bin/rails", "generate", "rspec:install")
  end

  after(:context) do
    @pids.dup.each { |pid| stop_process(pid) }
    if @app && File.exist?(File.join(@app, "config/database.yml"))
      %w[development test].each do |env|
        TaskerCore::Native.drop_database(database_url("#{@name}_#{env}"))
      end
    end
    FileUtils.rm_rf(@dir) if @dir
  end

  def sh(*cmd, chdir: @app, env: {})
    out, status = Open3.capture2e(@env.merge(env), *cmd, chdir: chdir)
    raise "#{cmd.join(" ")} failed (#{status}):\n#{out[-6000..] || out}" unless status.success?

    out
  end

  def runner(script, env: {})
    path = File.join(@app, "tmp/runner_#{SecureRandom.hex(4)}.rb")
    File.write(path, script)
    sh("bin/rails", "runner", path, env: env)
  end

  def edit(relative)
    path = File.join(@app, relative)
    File.write(path, yield(File.read(path)))
  end

  def database_url(database)
    server = URI(ENV.fetch("TASKER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    server.path = "/#{database}"
    server.to_s
  end

  def spawn_in_app(*cmd, log:)
    pid = Process.spawn(@env, *cmd, chdir: @app, out: log, err: %i[child out], pgroup: true)
    @pids << pid
    pid
  end

  # The end of a log, for a failure message (all of it when short, nothing when missing).
  def log_tail(log)
    return "(no log)" unless File.exist?(log)

    text = File.read(log)
    text[-4000..] || text
  end

  # The log once `pattern` appears in it `count` times.
  def wait_for_log(log, pattern, count: 1, timeout: 60)
    Timeout.timeout(timeout) do
      sleep 0.2 until File.exist?(log) && File.read(log).scan(pattern).size >= count
    end
    File.read(log)
  rescue Timeout::Error
    raise "#{pattern.inspect} never appeared in #{log}:\n#{log_tail(log)}"
  end

  def stop_process(pid, timeout: 30)
    Process.kill("TERM", pid)
    _, status = Timeout.timeout(timeout) { Process.wait2(pid) }
    @pids.delete(pid)
    status
  rescue Errno::ESRCH, Errno::ECHILD
    @pids.delete(pid)
    nil
  rescue Timeout::Error
    Process.kill("KILL", -pid)
    Process.wait(pid)
    @pids.delete(pid)
    raise "process #{pid} did not stop within #{timeout} s of SIGTERM"
  end

  def snapshot
    Dir.glob("**/*", base: @app).reject { |f| f.start_with?("log/", "tmp/") }.sort.to_h do |f|
      path = File.join(@app, f)
      [f, File.file?(path) ? [File.read(path), File.mtime(path)] : :dir]
    end
  end

  def free_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  it "installs (twice, changing nothing), generates a workflow, sets up and runs it on bin/rails tasker:worker" do
    out = sh("bin/rails", "generate", "tasker:install")
    expect(out).to include("create  config/initializers/tasker.rb", "create  app/handlers/example/greet_handler.rb")
    before = snapshot
    File.write(File.join(@app, "config/initializers/tasker.rb"), "# edited by the app\n", mode: "a")
    edited = snapshot
    out = sh("bin/rails", "generate", "tasker:install")
    expect(out).not_to include("create", "force")
    expect(snapshot).to eq(edited)
    expect(before.keys).to eq(edited.keys)

    sh("bin/rails", "generate", "tasker:workflow", "order_flow", "--namespace", "shop", "--steps", "a", "b:a", "c:a,b")
    expect(File.read(File.join(@app, "config/tasker/templates/order_flow.yaml")))
      .to include("version: 1.0.0", "callable: Shop::CHandler", "dependencies: [a, b]")
    expect(File.read(File.join(@app, "app/handlers/shop/a_handler.rb"))).to include("class AHandler")
    expect(File).to exist(File.join(@app, "spec/workflows/order_flow_spec.rb"))

    sh("bin/rails", "generate", "model", "Widget", "name:string")
    File.write(File.join(@app, "app/jobs/stamp_job.rb"), <<~RUBY)
      class StampJob < ApplicationJob
        def perform(widget)
          widget.update!(name: "\#{provider_job_id} \#{Process.pid}")
        end
      end
    RUBY
    edit("config/application.rb") do |rb|
      rb.sub(/^  end\nend/, "    config.active_job.queue_adapter = :tasker\n  end\nend")
    end
    sh("bin/rails", "db:create", "db:migrate")
    expect(sh("bin/rails", "tasker:setup")).to include("migrated, PGMQ installed", "shop/order_flow@1.0.0",
                                                       "active_job/active_job@1.0.0")
    expect(runner("print TaskerCore::Worker.running?")).to end_with("false")

    log = File.join(@dir, "worker.log")
    worker = spawn_in_app("bin/rails", "tasker:worker", log: log)
    wait_for_log(log, /serving .*shop/)
    run_tasks_and_jobs
    expect(stop_process(worker)).to be_success
    expect(File.read(log)).to include("worker stopped")
  ensure
    # Later examples must see only the workers they start.
    stop_process(worker) if worker && @pids.include?(worker)
  end

  # From bin/rails runner, with a worker running: the generated workflow, an Active Job job,
  # a rolled-back transaction; then the generated spec (its own embedded worker).
  def run_tasks_and_jobs
    out = runner(<<~RUBY)
      task = TaskerCore::Client.create_task(namespace: "shop", name: "order_flow", version: "1.0.0", context: {})
      task = TaskerCore::Client.wait(task, timeout: 30)
      puts "TASK \#{task.status} \#{task.step("c").result.to_json}"

      widget = Widget.create!(name: "new")
      job = StampJob.perform_later(widget)
      TaskerCore::Client.wait(job.provider_job_id, timeout: 30)
      puts "JOB \#{job.provider_job_id == widget.reload.name.split.first} \#{widget.name.split.last != Process.pid.to_s}"

      marker = "e2e-\#{rand(1 << 30)}"
      ActiveRecord::Base.transaction do
        TaskerCore::Client.create_task(namespace: "shop", name: "order_flow", version: "1.0.0", context: { "m" => marker })
        raise ActiveRecord::Rollback
      end
      count = ActiveRecord::Base.connection.select_value("SELECT count(*) FROM tasker.tasks WHERE context->>'m' = '\#{marker}'")
      puts "ROLLED_BACK \#{count}"
    RUBY
    status, result = out[/^TASK (.*)$/, 1].split(" ", 2)
    expect([status, JSON.parse(result)])
      .to eq(["complete",
              { "step" => "c", "a" => { "step" => "a" }, "b" => { "step" => "b", "a" => { "step" => "a" } } }])
    expect(out).to include("JOB true true", "ROLLED_BACK 0")

    # The generated spec, through TaskerCore::Testing on an embedded worker in rspec's process.
    sh("bin/rails", "db:create", "db:schema:load", env: { "RAILS_ENV" => "test" })
    expect(sh("bundle", "exec", "rspec", "spec/workflows/order_flow_spec.rb", env: { "RAILS_ENV" => "test" }))
      .to include("1 example, 0 failures")
  end

  it "runs steps in Puma's processes with plugin :tasker: cluster mode (2 workers), then single mode" do
    File.write(File.join(@app, "config/puma.rb"), "plugin :tasker\n", mode: "a")
    [[2, "cluster"], [0, "single"]].each do |workers, mode|
      log = File.join(@dir, "puma_#{mode}.log")
      puma = spawn_in_app("bundle", "exec", "puma", "-C", "config/puma.rb", "-w", workers.to_s, "-p", free_port.to_s,
                          "--pidfile", "tmp/puma_#{mode}.pid", log: log)
      servers = if workers.positive?
                  wait_for_log(log, /Worker \d \(PID: (\d+)\) booted/,
                               count: workers).scan(/Worker \d \(PID: (\d+)\) booted/).flatten
                else
                  wait_for_log(log, /Use Ctrl-C to stop/)
                  [puma.to_s]
                end

      out = runner(<<~RUBY)
        widgets = Array.new(20) { |i| Widget.create!(name: "w\#{i}") }
        jobs = widgets.map { |w| StampJob.perform_later(w) }
        tasks = jobs.map { |j| TaskerCore::Client.wait(j.provider_job_id, timeout: 30) }
        puts "PIDS \#{widgets.map { |w| w.reload.name.split.last }.uniq.sort.join(',')}"
        tasks.reject(&:complete?).each { |t| puts "NOT COMPLETE \#{t.task_uuid} \#{t.status} \#{t.steps.map { |s| [s.status, s.attempts, s.error] }.to_json}" }
      RUBY
      pids = out[/PIDS (\S+)/, 1].split(",")
      # A widget its job never stamped names itself; say why, and what Puma logged.
      why = (pids - servers).empty? ? "" : "\n#{out.scan(/^NOT COMPLETE .*$/).join("\n")}\n#{log_tail(log)}"
      expect(pids - servers).to eq([]), "#{mode}: steps ran in #{pids}, Puma serves from #{servers}#{why}"
      # Puma re-raises SIGTERM once stopped, so its exit status is the signal's; it must stop in time.
      stop_process(puma)
    end
  end
end

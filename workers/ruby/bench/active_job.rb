# frozen_string_literal: true

# Active Job on Tasker, measured against this machine's Postgres:
#   - perform_later -> perform latency p50 (one job at a time), beside the same figure for a
#     plain one-step Ruby task (create_task -> handler start) taken in the same run;
#   - throughput of JOBS no-op jobs through one `tasker:worker` process of a Rails app: the
#     jobs are enqueued (by 4 threads) before the worker starts, and timed from the moment it
#     says it is serving until the last task's completed_at; as jobs/s and as a ratio to
#     `pgbench -N -c 4 -T 10` TPS taken right after on a scratch database. The enqueue rate
#     is reported too, and where the CPU went while the worker drained the jobs: the worker
#     process's and every local postgres process's (from /proc), per job.
#
#   ruby workers/ruby/bench/active_job.rb        (rake compile first; JOBS=2000 LATENCY_RUNS=200)
# Needs Rails (Debian's ruby-rails), ruby-pg and pgbench; uses BENCH_DATABASE_SERVER
# (default postgresql://postgres@127.0.0.1:5432) and drops the databases it creates.

require "fileutils"
require "securerandom"
require "tmpdir"
require "uri"
require "rbconfig"

ROOT = File.expand_path("../../..", __dir__)
LIB = File.join(ROOT, "workers/ruby/lib")
JOBS = Integer(ENV.fetch("JOBS", "2000"))
LATENCY_RUNS = Integer(ENV.fetch("LATENCY_RUNS", "200"))
SERVER = URI(ENV.fetch("BENCH_DATABASE_SERVER", "postgresql://postgres@127.0.0.1:5432"))
DATABASE = "tasker_bench_aj_#{SecureRandom.hex(4)}".freeze
APP = Dir.mktmpdir("tasker_bench_app").freeze

def write(path, text)
  FileUtils.mkdir_p(File.dirname(File.join(APP, path)))
  File.write(File.join(APP, path), text)
end

write "config/application.rb", <<~RUBY
  require "rails"
  require "active_record/railtie"
  require "active_job/railtie"
  require "tasker_core"
  class BenchApp < Rails::Application
    config.root = #{APP.inspect}
    config.eager_load = true
    config.cache_classes = true
    config.logger = Logger.new(nil)
    config.secret_key_base = "bench"
    config.active_job.queue_adapter = :tasker
    config.tasker.template_path = File.join(#{APP.inspect}, "templates")
  end
RUBY
write "config/environment.rb", "require_relative \"application\"\nRails.application.initialize!\n"
write "Rakefile", "require_relative \"config/application\"\nRails.application.load_tasks\n"
write "config/database.yml", <<~YAML
  production:
    adapter: postgresql
    host: #{SERVER.host}
    port: #{SERVER.port}
    username: #{SERVER.user}
    database: #{DATABASE}
    pool: 12
YAML
write "app/jobs/noop_job.rb", "class NoopJob < ActiveJob::Base\n  def perform(_n); end\nend\n"
# Records how long after perform_later (or create_task) its work started.
write "app/models/latency.rb", <<~RUBY
  module Latency
    def self.record(sent)
      ActiveRecord::Base.connection.execute("INSERT INTO bench_latency (kind, ms) VALUES " \\
        "('\#{sent['kind']}', \#{(Time.now.to_f - sent['at']) * 1000})")
    end
  end
RUBY
write "app/jobs/latency_job.rb", "class LatencyJob < ActiveJob::Base\n  def perform(sent) = Latency.record(sent)\nend\n"
write "app/handlers/bench/latency_handler.rb", <<~RUBY
  module Bench
    class LatencyHandler < TaskerCore::StepHandler::Base
      def call(ctx) = success(result: Latency.record(ctx.task_context))
    end
  end
RUBY
write "templates/latency.yaml", <<~YAML
  name: latency
  namespace: bench
  version: 1.0.0
  steps:
    - name: record
      handler: { callable: Bench::LatencyHandler }
YAML

ENV["RAILS_ENV"] = "production"
ENV["TASKER_LOG"] ||= "error"
ENV.delete("DATABASE_URL")
$LOAD_PATH.unshift(LIB)
Dir.chdir(APP)
require File.join(APP, "config/environment")
require "tasker_core/rake_support"

def percentile(values, pct)
  sorted = values.sort
  sorted[((sorted.size - 1) * pct).round]
end

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

CLOCK_TICKS = Integer(`getconf CLK_TCK`.strip, exception: false) || 100

# CPU seconds a process has used (its own and its waited-for children's), from /proc.
def cpu_seconds(stat)
  fields = stat.rpartition(")").last.split
  fields[11, 4].sum(&:to_i).fdiv(CLOCK_TICKS)
end

def worker_cpu(pid) = cpu_seconds(File.read("/proc/#{pid}/stat"))

# Every local postgres process, exited backends included (in the postmaster's children's times).
def postgres_cpu
  Dir.glob("/proc/[0-9]*/stat").sum do |path|
    stat = File.read(path)
    stat.include?("(postgres)") ? cpu_seconds(stat) : 0.0
  rescue SystemCallError
    0.0
  end
end

# The bench's probe while the worker drains: cheap (the finished-tasks index alone) and
# every 50 ms, so it takes little of the Postgres time being measured. Only active_job tasks
# exist by then.
def tasks_complete
  ActiveRecord::Base.connection.select_value("SELECT count(*) FROM tasker.tasks WHERE state = 'complete'").to_i
end

# When the first and the last task completed, by the database's clock (the same host's).
def completed_between
  ActiveRecord::Base.connection.select_rows(
    "SELECT extract(epoch FROM min(completed_at)), extract(epoch FROM max(completed_at)) " \
    "FROM tasker.tasks WHERE state = 'complete'"
  ).first.map(&:to_f)
end

worker = nil
begin
  TaskerCore::Native.migrate(TaskerCore.configuration.database_url)
  TaskerCore::RakeTasks.register_templates
  ActiveRecord::Base.connection.execute("CREATE TABLE bench_latency (kind text, ms float8)")
  started = now
  4.times.map do |t|
    Thread.new { (t...JOBS).step(4) { |n| NoopJob.perform_later(n) } }
  end.each(&:join)
  enqueued = now - started

  log = File.join(APP, "worker.log")
  worker = Process.spawn({ "RUBYLIB" => LIB, "RAILS_ENV" => "production", "CONCURRENCY" => "10" },
                         RbConfig.ruby, "-S", "rake", "tasker:worker", out: log, err: %i[child out], pgroup: true)
  sleep 0.005 until File.exist?(log) && File.read(log).include?("serving")
  serving = Time.now.to_f
  cpu_before = [worker_cpu(worker), postgres_cpu]
  sleep 0.05 until tasks_complete >= JOBS
  first_done, last_done = completed_between
  drained = last_done - serving
  first_ms = (first_done - serving) * 1000
  worker_ms, postgres_ms = [worker_cpu(worker), postgres_cpu].zip(cpu_before).map { |a, b| (a - b) * 1000 / JOBS }

  LATENCY_RUNS.times do
    job = LatencyJob.perform_later("kind" => "job", "at" => Time.now.to_f)
    TaskerCore::Client.wait(job.provider_job_id, timeout: 30)
    task = TaskerCore::Client.create_task(namespace: "bench", name: "latency", version: "1.0.0",
                                          context: { "kind" => "task", "at" => Time.now.to_f })
    TaskerCore::Client.wait(task, timeout: 30)
  end
  ms = ActiveRecord::Base.connection.select_rows("SELECT kind, ms FROM bench_latency")
                         .group_by(&:first).transform_values { |rows| rows.map { |r| r[1].to_f } }
  job_p50 = percentile(ms.fetch("job"), 0.5)
  task_p50 = percentile(ms.fetch("task"), 0.5)
ensure
  if worker
    Process.kill("TERM", worker)
    Process.wait(worker)
  end
  ActiveRecord::Base.connection_pool.disconnect!
  TaskerCore::Native.drop_database(TaskerCore.configuration.database_url)
  FileUtils.rm_rf(APP)
end

pg_url = SERVER.dup
pg_url.path = "/tasker_bench_pgbench_#{SecureRandom.hex(4)}"
TaskerCore::Native.migrate(pg_url.to_s) # creates it (the Tasker tables do not bother pgbench)
pgbench = ["-h", SERVER.host, "-p", SERVER.port.to_s, "-U", SERVER.user, pg_url.path.delete_prefix("/")]
begin
  system("pgbench", "-i", "-q", *pgbench, out: File::NULL, err: File::NULL) or abort "pgbench -i failed"
  out = IO.popen(["pgbench", "-N", "-c", "4", "-T", "10", *pgbench], err: File::NULL, &:read)
  tps = out[/tps = ([\d.]+)/, 1]&.to_f or abort "no TPS in pgbench's output:\n#{out}"
ensure
  TaskerCore::Native.drop_database(pg_url.to_s)
end

rate = JOBS / drained
puts format("perform_later -> perform p50: %.2f ms (plain one-step task create -> handler p50 %.2f ms; ratio %.2f), " \
            "%d runs each", job_p50, task_p50, job_p50 / task_p50, LATENCY_RUNS)
puts format("%d no-op jobs through one tasker:worker: %.0f jobs/s (%.2f s from serving to the last one done); " \
            "enqueued at %.0f jobs/s by 4 threads", JOBS, rate, drained, JOBS / enqueued)
puts format("first job done %.0f ms after the worker said it was serving", first_ms)
puts format("CPU per job while draining: worker process %.3f ms, Postgres %.3f ms (every local postgres process)",
            worker_ms, postgres_ms)
puts format("pgbench -N -c 4 -T 10: %.0f TPS; jobs/s over pgbench TPS: %.2f", tps, rate / tps)

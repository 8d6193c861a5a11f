# frozen_string_literal: true

# Runs every example template in config/tasks through the Ruby worker with embedded
# orchestration, in a database of its own (created, migrated and dropped here), and checks
# the known results. Exits non-zero on any mismatch.
#
#   ruby workers/ruby/examples/run_examples.rb     (after `rake compile`)
#
# TASKER_TEST_DATABASE_URL names the Postgres server (default the local one).

ROOT = File.expand_path("../../..", __dir__)
$LOAD_PATH.unshift(File.join(ROOT, "workers/ruby/lib"))
ENV["TASKER_LOG"] ||= "error"

require "securerandom"
require_relative "handlers"
require_relative "expectations"

server = ENV.fetch("TASKER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
url = server.sub(%r{/[^/?]*(\?|\z)}) { "/tasker_examples_#{SecureRandom.hex(4)}#{Regexp.last_match(1)}" }
TaskerCore::Native.migrate(url)
TaskerCore.configure do |c|
  c.database_url = url
  c.environment = "test"
  c.config_dir = File.join(ROOT, "config/tasker")
  c.template_path = [File.join(ROOT, "config/tasks")]
end

failures = 0
begin
  TaskerCore::Worker.start(concurrency: 10, orchestration: :embedded)
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  tasks = Examples::CASES.map do |example|
    TaskerCore::Client.create_task(namespace: example[:namespace], name: example[:name], version: "1.0.0",
                                   context: example[:context])
  end
  Examples::CASES.zip(tasks).each do |example, task|
    task = TaskerCore::Client.wait(task, timeout: 60)
    problems = Examples.mismatches(example, task)
    failures += 1 unless problems.empty?
    label = "#{example[:namespace]}/#{example[:name]}"
    puts format("%-4s %-42s %-9s %s", problems.empty? ? "ok" : "FAIL", label, task.status,
                problems.empty? ? task.steps.map(&:to_s).join(" ") : problems.join("; "))
  end
  puts format("%d example(s), %d failed, %.2f s", tasks.size, failures,
              Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
ensure
  TaskerCore::Worker.stop
  TaskerCore::Native.drop_database(url)
end
exit(failures.zero? ? 0 : 1)

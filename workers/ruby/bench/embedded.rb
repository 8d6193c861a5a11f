# frozen_string_literal: true

# The README's Ruby example as a benchmark: one Ruby process runs the worker with embedded
# orchestration (TaskerCore::Worker.start(orchestration: :embedded)), creates tasks of 10
# no-op steps one by one with TaskerCore::Client.create_task, then waits for each with
# TaskerCore::Client.wait. No other orchestrator or worker runs (bin/bench stops its own
# first). Prints one JSON line: steps/s from the first create to the last completion, the
# mean create_task call, and this process's CPU time (all its threads: handlers, the Rust
# runtime, the creating thread) over the same span, per step.
#
#   DATABASE_URL=... ruby -I workers/ruby/lib workers/ruby/bench/embedded.rb [tasks]

require "json"
require "tasker_core"
require_relative "../examples/handlers"

tasks = Integer(ARGV.fetch(0, "300"))
abort "embedded.rb: tasks must be at least 1, got #{tasks}" unless tasks.positive?
clock = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }
cpu = -> { Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) }
request = { namespace: "bench", name: "noop_fanout", version: "1.0.0", context: {} }

TaskerCore::Worker.start(namespaces: ["bench"], concurrency: 10, orchestration: :embedded,
                         trap_signals: false)
begin
  warm = Array.new(5) { TaskerCore::Client.create_task(**request) }
  warm.each { |t| TaskerCore::Client.wait(t, timeout: 60) }

  t0 = clock.call
  cpu0 = cpu.call
  created = Array.new(tasks) { TaskerCore::Client.create_task(**request) }
  create_s = clock.call - t0
  finished = created.map { |t| TaskerCore::Client.wait(t, timeout: 300) }
  elapsed = clock.call - t0
  cpu_s = cpu.call - cpu0
  failed = finished.reject { |t| t.status == "complete" }
  raise "#{failed.size} tasks did not complete (first: #{failed.first.status})" unless failed.empty?

  puts JSON.generate(
    "tasks" => tasks, "steps_per_s" => tasks * 10 / elapsed,
    "create_ms" => create_s * 1000.0 / tasks,
    "ruby_cpu_ms_per_step" => cpu_s * 1000.0 / (tasks * 10)
  )
ensure
  TaskerCore::Worker.stop
end

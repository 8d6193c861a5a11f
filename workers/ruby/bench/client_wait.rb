# frozen_string_literal: true

# Latency as a Ruby caller sees it: TaskerCore::Client.create_task + Client.wait of a 4-step
# no-op chain, one task at a time, against a running orchestrator and worker (bin/bench
# starts them). Prints one JSON line: the client's p50/p95 and the server-side p50 (the
# task's created_at to completed_at) of the same tasks.
#
#   DATABASE_URL=... ruby -I workers/ruby/lib workers/ruby/bench/client_wait.rb [samples]

require "json"
require "time"
require "tasker_core"

samples = Integer(ARGV.fetch(0, "60"))
clock = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }
client_ms = []
server_ms = []
warmup = 5
(samples + warmup).times do |i|
  t0 = clock.call
  task = TaskerCore::Client.create_task(namespace: "bench", name: "noop_linear", version: "1.0.0", context: {})
  done = TaskerCore::Client.wait(task, timeout: 60)
  elapsed = (clock.call - t0) * 1000.0
  raise "task #{done.task_uuid} ended #{done.status}" unless done.status == "complete"
  next if i < warmup

  client_ms << elapsed
  server_ms << (Time.parse(done.completed_at) - Time.parse(done.created_at)) * 1000.0
end
pct = ->(list, p) { list.sort[((list.size - 1) * p).round] }
puts JSON.generate(
  "samples" => samples,
  "client_p50_ms" => pct.call(client_ms, 0.5), "client_p95_ms" => pct.call(client_ms, 0.95),
  "server_p50_ms" => pct.call(server_ms, 0.5)
)

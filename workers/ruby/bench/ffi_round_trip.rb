# frozen_string_literal: true

# Times the Ruby <-> Rust step round trip and the parallel speed-up of Ruby handler
# threads, and prints a table. Nothing here touches a database.
#
#   ruby workers/ruby/bench/ffi_round_trip.rb [steps]      (after `rake compile`)
#
# 1. FFI round trip: one Ruby thread polls a LoopbackChannel (a real FfiDispatchChannel),
#    runs a no-op handler through the same StepRunner the worker uses, and completes.
#    Each step carries a realistic payload: a context of 20 keys and 2 dependency results.
#    Steps are fed in chunks that are fully buffered before the clock runs, so the time is
#    the Ruby thread's loop (and the runtime's completion work beside it), not the feeder.
# 2. The same loop over a plain Ruby Thread::Queue (the step Hash already built in Ruby):
#    the floor no FFI channel can beat. A second floor builds each step's payload in Ruby
#    (JSON.parse of the same payload), which the FFI path has to do too.
# 3. 20 steps sleeping 100 ms on 10 handler threads, against the ideal 0.2 s.

ROOT = File.expand_path("../../..", __dir__)
$LOAD_PATH.unshift(File.join(ROOT, "workers/ruby/lib"))
ENV["TASKER_LOG"] ||= "error"

require "json"
require_relative "../examples/handlers"

STEPS = Integer(ARGV.fetch(0, "100000"))
WARMUP = 5_000
CHUNK = 10_000

CONTEXT = (1..20).to_h do |i|
  value = case i % 4
          when 0 then i * 1_000
          when 1 then "value-#{i}-#{"x" * 12}"
          when 2 then { "nested" => i, "flag" => i.even? }
          else [i, i + 1, i + 2]
          end
  ["key_#{i}", value]
end.freeze

STEP = {
  "handler_callable" => "Examples::Noop", "step_name" => "bench_step", "task_context" => CONTEXT,
  "dependency_results" => { "validate" => { "ok" => true, "total" => 25.0 }, "reserve" => { "reserved" => [1, 2] } },
  "initialization" => { "mode" => "bench" }
}.freeze

def now
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

def runner(watchdog)
  TaskerCore::StepRunner.new(registry: TaskerCore.handlers, watchdog: watchdog, default_timeout: 30)
end

# Steps/s over the LoopbackChannel: poll, run the handler, complete.
def ffi_round_trip(count, watchdog)
  channel = TaskerCore::Native::LoopbackChannel.new("dispatch_buffer_size" => CHUNK)
  run = runner(watchdog)
  timed = 0.0
  done = 0
  [WARMUP, *Array.new(count / CHUNK, CHUNK), count % CHUNK].each_with_index do |n, i|
    next if n.zero?

    channel.feed(n, STEP)
    sleep 0.005 until channel.metrics["pending"] >= n
    started = now
    n.times do
      step = channel.poll(5) or raise "loopback poll timed out"
      channel.complete(step["event_id"], run.run(step)) or raise "completion refused"
    end
    timed += now - started unless i.zero?
    done += n
    channel.wait_for_completions(done, 30) or raise "completions did not all arrive"
  end
  count / timed
ensure
  channel&.close
end

# The same loop over Thread::Queue: pop a step Hash, run the handler, push the result.
# With `parse`, each step's payload is built from JSON first, as the FFI path must build it.
def queue_floor(count, watchdog, parse: false)
  run = runner(watchdog)
  template = STEP.merge("event_id" => "00000000-0000-0000-0000-000000000000", "attempt" => 1, "max_attempts" => 3,
                        "task_uuid" => "t", "step_uuid" => "s", "namespace" => "bench", "task_name" => "bench",
                        "task_version" => "1.0.0", "inputs" => {}, "timeout_seconds" => nil)
  steps = Thread::Queue.new
  results = Thread::Queue.new
  count.times { steps << template.dup }
  payload = JSON.generate(template.slice("task_context", "dependency_results", "initialization"))
  started = now
  if parse
    count.times { results << run.run(steps.pop.merge!(JSON.parse(payload))) }
  else
    count.times { results << run.run(steps.pop) }
  end
  count / (now - started)
end

# Wall time of 20 x 100 ms sleeping steps on 10 Ruby handler threads.
def parallel(watchdog)
  channel = TaskerCore::Native::LoopbackChannel.new
  pool = TaskerCore::HandlerPool.new(channel, runner: runner(watchdog), concurrency: 10).start
  started = now
  channel.feed(20, STEP.merge("handler_callable" => "Examples::Sleep", "initialization" => { "ms" => 100 }))
  channel.wait_for_completions(20, 30) or raise "sleeping steps did not finish"
  took = now - started
  pool.stop(5)
  took
ensure
  channel&.close
end

watchdog = TaskerCore::Watchdog.new
ffi = ffi_round_trip(STEPS, watchdog)
floor = queue_floor(STEPS, watchdog)
parsed_floor = queue_floor(STEPS, watchdog, parse: true)
wall = parallel(watchdog)
watchdog.stop

puts "Tasker Ruby FFI benchmark (#{RUBY_DESCRIPTION.split.first(2).join(" ")}, #{STEPS} steps, " \
     "context #{CONTEXT.size} keys + 2 dependency results)"
puts format("%-52s %14s", "measure", "result")
puts "-" * 67
puts format("%-52s %10.0f steps/s", "FFI round trip (LoopbackChannel, poll+run+complete)", ffi)
puts format("%-52s %10.0f steps/s", "Ruby Thread::Queue floor (pop+run+push)", floor)
puts format("%-52s %10.0f steps/s", "  same, payload built per step (JSON.parse)", parsed_floor)
puts format("%-52s %14.2f", "FFI / floor", ffi / floor)
puts format("%-52s %14.2f", "FFI / floor with payload built", ffi / parsed_floor)
puts format("%-52s %12.3f s", "20 x 100 ms sleeping steps, concurrency 10", wall)
puts format("%-52s %14.2f", "ideal (0.2 s) / measured: 1.00 is perfect", 0.2 / wall)
puts format("%-52s %14.2f", "speed-up over sequential (2.0 s)", 2.0 / wall)

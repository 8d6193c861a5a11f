# frozen_string_literal: true

require "spec_helper"

RSpec.describe TaskerCore::Watchdog do
  subject(:watchdog) { described_class.new }

  after { watchdog.stop }

  # The watchdog thread's voluntary context switches so far (Linux).
  def wakeups(thread)
    File.read("/proc/self/task/#{thread.native_thread_id}/status")[/^voluntary_ctxt_switches:\s+(\d+)/, 1].to_i
  end

  it "raises HandlerTimeout into a block that outlives its seconds" do
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    expect do
      Thread.handle_interrupt(TaskerCore::HandlerTimeout => :never) { watchdog.run(0.2) { sleep 5 } }
    end.to raise_error(TaskerCore::HandlerTimeout, /timeout of 200 ms/)
    expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 2
  end

  it "is not woken by steps whose timeouts end after its next wake-up" do
    watchdog.run(30) { nil }
    thread = watchdog.instance_variable_get(:@thread)
    sleep 0.05 # it has gone back to sleep
    before = wakeups(thread)
    # As a handler thread runs them: between steps it blocks (polling), so the watchdog
    # thread gets the GVL and finds nothing armed.
    200.times do
      watchdog.run(30) { nil }
      sleep 0.001
    end
    # Its own idle wake-ups (one a second) at most, not one per step.
    expect(wakeups(thread) - before).to be < 10
  end

  it "is woken for a deadline earlier than the one it sleeps towards" do
    watchdog.run(30) { nil }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    expect do
      Thread.handle_interrupt(TaskerCore::HandlerTimeout => :never) { watchdog.run(0.1) { sleep 5 } }
    end.to raise_error(TaskerCore::HandlerTimeout)
    # Well before its one-second idle wake-up would have noticed.
    expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 0.6
  end
end

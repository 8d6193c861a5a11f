# frozen_string_literal: true

module TaskerCore
  # Enforces handler timeouts. One thread sleeps until the nearest deadline and raises
  # HandlerTimeout into a handler thread that outlives its step's timeout (Kernel#sleep, IO
  # and other blocking calls are interrupted by it).
  #
  # Handler threads must run with HandlerTimeout masked (`Thread.handle_interrupt(
  # TaskerCore::HandlerTimeout => :never)`) outside #run, so a timeout can only land inside
  # the handler it was meant for.
  class Watchdog
    # Longest sleep with nothing armed, so #stop is never waited on for long.
    IDLE_WAIT = 1.0
    # Built once: Thread.handle_interrupt is called twice per step.
    DELIVER = { HandlerTimeout => :immediate }.freeze

    def initialize
      @lock = Mutex.new
      @wake = ConditionVariable.new
      @armed = {}
      @next_wake = nil
      @sequence = 0
      @thread = nil
      @stopping = false
    end

    # Runs the block; raises HandlerTimeout into this thread if it is still running after
    # `seconds` (nil: no limit).
    def run(seconds)
      return yield if seconds.nil?

      token = arm(Thread.current, seconds)
      Thread.handle_interrupt(DELIVER) { yield }
    ensure
      disarm(token) if token
    end

    def stop
      thread = @lock.synchronize do
        @stopping = true
        @wake.signal
        @thread
      end
      thread&.join(IDLE_WAIT * 2)
    end

    private

    Armed = Struct.new(:thread, :deadline, :seconds, :fired)

    def arm(thread, seconds)
      deadline = now + seconds
      @lock.synchronize do
        start_thread
        @sequence += 1
        @armed[@sequence] = Armed.new(thread, deadline, seconds, false)
        # Waking the watchdog per step would cost a context switch each; only an earlier
        # deadline than the one it sleeps towards needs it.
        @wake.signal if @next_wake.nil? || deadline < @next_wake
        @sequence
      end
    end

    def disarm(token)
      entry = @lock.synchronize { @armed.delete(token) }
      return unless entry&.fired

      # Raised just as the handler returned: take it here so it cannot land in the next one.
      begin
        Thread.handle_interrupt(DELIVER) { Thread.pass }
      rescue HandlerTimeout
        nil
      end
    end

    def start_thread
      return if @thread&.alive? || @stopping

      @thread = Thread.new { watch }
      @thread.name = "tasker-watchdog"
    end

    def watch
      @lock.synchronize do
        until @stopping
          current = now
          nearest = nil
          @armed.each_value do |a|
            next if a.fired

            if a.deadline <= current
              a.fired = true
              if a.thread.alive?
                a.thread.raise(HandlerTimeout,
                               "handler exceeded its timeout of #{(a.seconds * 1000).round} ms")
              end
            elsif nearest.nil? || a.deadline < nearest
              nearest = a.deadline
            end
          end
          wait = nearest ? [nearest - current, IDLE_WAIT].min : IDLE_WAIT
          # Also with nothing armed: the idle wake-up is a deadline it keeps, so arming a
          # step whose timeout ends after it wakes nobody (a handler thread's step would
          # otherwise wake it each time the last armed step finished).
          @next_wake = current + wait
          @wake.wait(@lock, wait)
        end
      end
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end

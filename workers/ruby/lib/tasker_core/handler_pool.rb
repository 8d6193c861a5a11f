# frozen_string_literal: true

module TaskerCore
  # Ruby threads that each loop: poll a step (the GVL is released while waiting, so the
  # others run), run its handler, hand the result back. Works over anything with
  # poll(timeout) / complete(event_id, result) / stopped? — the native Worker, or a
  # LoopbackChannel in specs and benchmarks.
  class HandlerPool
    # How long an idle thread waits per poll before looking at the stop flag again.
    POLL_TIMEOUT = 0.1
    # Outside a handler, a handler timeout waits (see Watchdog).
    HOLD = { HandlerTimeout => :never }.freeze

    attr_reader :concurrency

    def initialize(channel, runner:, concurrency:, name: "tasker-handler")
      raise ConfigurationError, "concurrency must be a positive Integer, got #{concurrency.inspect}" unless
        concurrency.is_a?(Integer) && concurrency.positive?

      @channel = channel
      @runner = runner
      @concurrency = concurrency
      @name = name
      @stopping = false
      @threads = []
    end

    def start
      @threads = Array.new(@concurrency) do |i|
        Thread.new do
          Thread.current.name = "#{@name}-#{i}"
          work
        end
      end
      self
    end

    # Threads stop polling and exit after the step they are on.
    def request_stop
      @stopping = true
    end

    # Stops and waits for the threads. Threads still busy after `timeout` seconds are
    # killed (a worker's stop has handed their steps back by then).
    def stop(timeout)
      request_stop
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      @threads.each do |t|
        left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        next if t.join([left, 0].max)

        TaskerCore.logger.warn("#{t.name} still running a handler at the stop deadline; killing it")
        t.kill
        t.join(1)
      end
      @threads = []
    end

    def running?
      @threads.any?(&:alive?)
    end

    private

    def work
      Thread.handle_interrupt(HOLD) do
        until @stopping
          step = poll
          if step
            complete(step, @runner.run(step))
          elsif @channel.stopped?
            break
          end
        end
      end
    end

    def poll
      @channel.poll(POLL_TIMEOUT)
    rescue Native::ForkError
      raise
    rescue Native::Error => e
      # Keep the thread: a transient failure must not silently shrink the pool.
      TaskerCore.logger.error("#{Thread.current.name}: poll failed: #{e.class}: #{e.message}")
      sleep POLL_TIMEOUT
      nil
    end

    def complete(step, result)
      @channel.complete(step["event_id"], result)
    rescue Native::ConversionError => e
      @channel.complete(step["event_id"], StepRunner.invalid_result(e))
    end
  end
end

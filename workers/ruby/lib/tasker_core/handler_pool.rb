# frozen_string_literal: true

require "English"

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
      @lock = Mutex.new
      @replaced = 0
      @threads = Array.new(@concurrency) { |i| spawn(i) }
      self
    end

    # Threads started in place of ones that died while the pool ran.
    def replaced_threads
      @lock ? @lock.synchronize { @replaced } : 0
    end

    def alive_threads
      @lock ? @lock.synchronize { @threads.count(&:alive?) } : 0
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
      threads = @lock ? @lock.synchronize { @threads.dup } : @threads
      threads.each do |t|
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

    # A thread whose loop ends while the pool runs (a handler called Thread.exit, or was
    # killed) is replaced, so the pool never shrinks; the step it was on is failed at once
    # rather than left to the step's deadline.
    def spawn(index)
      Thread.new do
        Thread.current.name = "#{@name}-#{index}"
        Thread.current.report_on_exception = false
        work
      ensure
        # After a fork the worker is gone in this process: nothing to replace.
        replace(index) unless @stopping || $ERROR_INFO.is_a?(Native::ForkError) || @channel.stopped?
      end
    end

    def replace(index)
      step = Thread.current[:tasker_step]
      # Bounds the churn should a thread die again at once.
      sleep POLL_TIMEOUT
      running = step ? " running step '#{step["step_name"]}'" : ""
      TaskerCore.logger.error("#{Thread.current.name} died#{running}; starting another")
      complete(step, lost_thread_result) if step
      @lock.synchronize do
        @replaced += 1
        @threads[index] = spawn(index)
      end
    end

    def work
      Thread.handle_interrupt(HOLD) do
        until @stopping
          step = poll
          if step
            run_step(step)
          elsif @channel.stopped?
            break
          end
        end
      end
    end

    # Whatever a handler raises, even an Exception StepRunner leaves alone (SystemExit,
    # NoMemoryError, a class of its own), fails its step and the thread goes on. The step
    # stays on the thread until completed: if the thread ends instead, #replace fails it.
    def run_step(step)
      Thread.current[:tasker_step] = step
      result = begin
        @runner.run(step)
      rescue Exception => e # rubocop:disable Lint/RescueException
        escaped_result(e)
      end
      complete(step, result)
    end

    def escaped_result(error)
      StepHandler::Result.failure(
        message: "#{error.class}: #{error.message}", error_type: "handler_error", retryable: true,
        error_class: error.class.name, backtrace: error.backtrace&.first(StepRunner::BACKTRACE_LINES)
      ).to_native
    end

    def lost_thread_result
      StepHandler::Result.failure(
        message: "the handler thread ended before the step finished (Thread.exit or Thread#kill in the handler?)",
        error_type: "handler_error", retryable: true
      ).to_native
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
      Thread.current[:tasker_step] = nil
      @channel.complete(step["event_id"], result)
    rescue Native::ConversionError => e
      @channel.complete(step["event_id"], StepRunner.invalid_result(e))
    end
  end
end

# frozen_string_literal: true

module TaskerCore
  # A worker process's Ruby side: the native worker core claims steps for `namespaces` and
  # hands them to `concurrency` Ruby handler threads; with `orchestration: :embedded` the
  # process also runs orchestration (no separate `tasker server` needed).
  #
  #   TaskerCore::Worker.start(namespaces: ["ecommerce"], concurrency: 10, orchestration: :embedded)
  #   ...
  #   TaskerCore::Worker.stop   # drains in-flight steps
  class Worker
    ORCHESTRATION_MODES = %i[embedded external].freeze
    CONCURRENCY_KEY = "worker.mpsc_channels.handler_dispatch.max_concurrent_handlers"
    # After the native stop returns, how long handler threads get to notice and exit.
    THREAD_JOIN_TIMEOUT = 5
    # How long a start waits for the handler wrapper's first call before going on without it.
    WARM_UP_TIMEOUT = 30
    SIGNALS = %w[TERM INT].freeze

    @lock = Mutex.new

    # A script that ends without Worker.stop still hands its in-flight steps back rather
    # than leaving them to the lease timeout. Not in forked children: the worker is the
    # parent's.
    at_exit do
      worker = @current
      worker.stop if worker&.running? && worker.started_in == Process.pid
    end

    class << self
      # Starts the process-wide worker; raises WorkerError if one is already running.
      def start(namespaces: nil, concurrency: 10, orchestration: :external, trap_signals: true)
        @lock.synchronize do
          raise WorkerError, "a TaskerCore::Worker is already running; stop it first" if @current&.running?

          @current = new(namespaces: namespaces, concurrency: concurrency,
                         orchestration: orchestration, trap_signals: trap_signals).start
        end
      end

      # Drains and stops the process-wide worker. False when none was running.
      def stop(timeout: nil)
        worker = @lock.synchronize { @current }
        return false unless worker

        worker.stop(timeout: timeout)
      end

      def running?
        @current&.running? || false
      end

      attr_reader :current

      # An Integer from 1 to Native::MAX_CONCURRENCY, checked before anything starts.
      def check_concurrency(value)
        raise TypeError, "concurrency: expected an Integer, got #{value.class}" unless value.is_a?(Integer)
        return value if value.between?(1, Native::MAX_CONCURRENCY)

        raise ArgumentError, "concurrency: expected 1 to #{Native::MAX_CONCURRENCY}, got #{value}"
      end

      # Seconds from 0 to Native::MAX_TIMEOUT_SECONDS (nil passes: the default applies).
      def check_timeout(value, what)
        return value if value.nil?
        raise TypeError, "#{what}: expected a number of seconds, got #{value.class}" unless value.is_a?(Numeric)
        # Comparisons, not between?: NaN fails them rather than raising its own error.
        return value if value.to_f >= 0 && value.to_f <= Native::MAX_TIMEOUT_SECONDS

        raise ArgumentError, "#{what}: expected 0 to #{Native::MAX_TIMEOUT_SECONDS} seconds, got #{value}"
      end
    end

    attr_reader :namespaces, :concurrency, :orchestration, :templates, :started_in

    def initialize(namespaces: nil, concurrency: 10, orchestration: :external, trap_signals: true,
                   configuration: TaskerCore.configuration, registry: TaskerCore.handlers,
                   events: TaskerCore.events)
      unless ORCHESTRATION_MODES.include?(orchestration)
        raise ConfigurationError,
              "orchestration must be one of #{ORCHESTRATION_MODES.inspect}, got #{orchestration.inspect}"
      end

      @namespaces = namespaces&.map(&:to_s)
      @concurrency = self.class.check_concurrency(concurrency)
      @orchestration = orchestration
      @trap_signals = trap_signals
      @configuration = configuration
      @registry = registry
      @events = events
      @state_lock = Mutex.new
      @stopped_cv = ConditionVariable.new
      @state = :new
    end

    # Loads templates, checks every handler they name for the served namespaces can be
    # found, registers the templates, starts the native worker and the handler threads.
    def start
      load_templates
      check_handlers!
      warm_up_around_handler
      @native = Native.start_worker(native_options)
      @started_in = Process.pid
      begin
        config = @native.config
        @shutdown_timeout = config.dig("worker", "shutdown_timeout_ms") / 1000.0
        @watchdog = Watchdog.new
        runner = StepRunner.new(
          registry: @registry, watchdog: @watchdog,
          default_timeout: config.dig("worker", "mpsc_channels", "handler_dispatch", "handler_timeout_ms") / 1000.0,
          around: @configuration.around_handler
        )
        @pool = HandlerPool.new(@native, runner: runner, concurrency: @concurrency).start
        @dispatcher = Events::Dispatcher.new(@native, @events).start
      rescue StandardError
        @dispatcher&.stop
        @pool&.stop(0)
        @native.stop(0)
        raise
      end
      @state_lock.synchronize { @state = :running }
      install_traps if @trap_signals
      self
    end

    def running?
      @state_lock.synchronize { @state == :running }
    end

    # Stops claiming steps, lets the handler threads finish what they hold (until
    # `timeout` seconds, default worker.shutdown_timeout_ms), records their results, hands
    # the rest back to the queue, then stops embedded orchestration. False if not running.
    def stop(timeout: nil)
      # Checked before the state changes: a refused timeout leaves the worker running.
      self.class.check_timeout(timeout, "stop timeout")
      @state_lock.synchronize do
        return false unless @state == :running

        @state = :stopping
      end
      timeout ||= @shutdown_timeout
      @pool.request_stop
      begin
        @native.stop(timeout)
      ensure
        @pool.stop(THREAD_JOIN_TIMEOUT)
        @dispatcher.stop
        @watchdog.stop
        restore_traps
        @state_lock.synchronize do
          @state = :stopped
          @stopped_cv.broadcast
        end
      end
      true
    end

    # Blocks until the worker has stopped (by #stop, or SIGTERM/SIGINT when trapped), or
    # `timeout` seconds pass. True when stopped.
    def wait(timeout = nil)
      deadline = timeout && Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      @state_lock.synchronize do
        until @state == :stopped
          left = deadline && deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
          return false if left && left <= 0

          # Bounded waits keep the thread responsive to signals delivered to it.
          @stopped_cv.wait(@state_lock, [left || 1.0, 1.0].min)
        end
      end
      true
    end

    # The native worker's counters, and its handler threads: alive now, and started in
    # place of threads that died (a handler that called Thread.exit, say).
    def status
      @native.status.merge(
        "handler_threads_alive" => @pool&.alive_threads || 0,
        "handler_threads_replaced" => @pool&.replaced_threads || 0
      )
    end

    def ffi_metrics
      @native.ffi_metrics
    end

    def worker_id
      @native.worker_id
    end

    private

    # The wrapper's first call may carry a one-time cost: a Rails app's first reloader.wrap
    # loads what its executor hooks use (Active Record's base class in an app whose eager
    # load never touched it: 124 ms in the Active Job bench). Paid here, before a step is
    # claimed, not by the first handler while its lease runs; a wrapper that raises stops
    # the start instead of failing every step. On a thread of its own, as handlers run: the
    # wrapper's hooks act on the current thread (Rails gives back its Active Record
    # connection), and the caller's must stay as it was.
    def warm_up_around_handler
      around = @configuration.around_handler or return

      warm_up = Thread.new { around.call { nil } }
      warm_up.report_on_exception = false
      return if warm_up.join(WARM_UP_TIMEOUT)

      TaskerCore.logger.warn("the handler wrapper's first call is still running after #{WARM_UP_TIMEOUT} s; " \
                             "starting without waiting for it")
    end

    def load_templates
      @templates = Templates.load(@configuration.template_paths, environment: @configuration.environment)
      @namespaces ||= Templates.namespaces(@templates)
      return unless @namespaces.empty?

      raise ConfigurationError,
            "no namespaces to serve: pass namespaces: or put templates on the template path " \
            "(#{@configuration.template_paths.join(":")})"
    end

    def native_options
      options = @configuration.native_options
      config = options.fetch("config", {}).dup
      config[CONCURRENCY_KEY] ||= @concurrency
      options.merge(
        "namespaces" => @namespaces,
        "template_paths" => @configuration.template_paths.select { |p| File.exist?(p) },
        "embedded_orchestration" => @orchestration == :embedded,
        "config" => config
      )
    end

    def check_handlers!
      served = @templates.select { |t| @namespaces.include?(t.namespace) }
      missing = served.flat_map do |t|
        t.steps.reject { |s| @registry.resolve(s.callable) }.map do |s|
          "  #{s.callable} (step '#{s.name}' of #{t.identity}, #{t.path})"
        end
      end
      return if missing.empty?

      raise HandlerNotFoundError,
            "no handler found for #{missing.size} step(s) in namespaces #{@namespaces.join(", ")}:\n" \
            "#{missing.join("\n")}\n" \
            "Define these classes (loaded before the worker starts) or call TaskerCore.register_handler."
    end

    def install_traps
      @previous_traps = SIGNALS.to_h do |sig|
        # Trap context cannot take locks or block: stop from a fresh thread.
        [sig, Signal.trap(sig) { Thread.new { stop } }]
      end
    end

    def restore_traps
      (@previous_traps || {}).each { |sig, handler| Signal.trap(sig, handler || "DEFAULT") }
      @previous_traps = nil
    end
  end
end

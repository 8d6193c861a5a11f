# frozen_string_literal: true

module TaskerCore
  # Runs one polled step's handler and turns every way it can end into the result Hash
  # TaskerCore::Native complete takes. Never raises for anything a handler does.
  class StepRunner
    BACKTRACE_LINES = 50

    # `default_timeout`: seconds a handler may run when its step sets no timeout_seconds
    # (the worker's handler_timeout_ms). `around`: nil, or a callable given a block that
    # it must call once, around the handler's lookup and call (Rails: the app's reloader).
    def initialize(registry:, watchdog:, default_timeout:, around: nil)
      @registry = registry
      @watchdog = watchdog
      @default_timeout = default_timeout
      @around = around
    end

    def run(step)
      context = StepContext.new(step)
      timeout = context.timeout_seconds || @default_timeout
      result = outcome(context, timeout) do
        # The lookup is inside `around`: after a code reload it must find the new class.
        @around ? @around.call { call_handler(context) } : call_handler(context)
      end
      native(result)
    end

    # The failure sent when a handler's result cannot be converted for Rust (a value that
    # is not JSON, a malformed Hash): final, since the same handler will produce it again.
    def self.invalid_result(error)
      StepHandler::Result.failure(
        message: "handler result could not be recorded: #{error.message}",
        error_type: "invalid_result", retryable: false, error_class: error.class.name
      ).to_native
    end

    private

    # A Result built with values that cannot become a native Hash (say retry_after: "soon")
    # fails its step as invalid_result instead of raising out of the handler thread.
    def native(result)
      result.to_native
    rescue StandardError => e
      self.class.invalid_result(e)
    end

    def call_handler(context)
      entry = @registry.resolve(context.handler_callable)
      return not_found(context) unless entry

      entry.build(context.initialization).call(context)
    end

    def outcome(context, timeout)
      value = @watchdog.run(timeout) { yield }
      value.is_a?(StepHandler::Result) ? value : StepHandler::Result.success(result: value)
    rescue HandlerTimeout
      StepHandler::Result.failure(
        message: "handler for step '#{context.step_name}' exceeded its timeout of #{(timeout * 1000).round} ms",
        error_type: "handler_timeout", retryable: true
      )
    rescue RetryableError => e
      failure_from(e, e.error_type, true, retry_after: e.retry_after)
    rescue PermanentError => e
      failure_from(e, e.error_type, false)
    rescue StandardError, ScriptError, SystemStackError => e
      failure_from(e, "handler_error", true)
    end

    def failure_from(error, error_type, retryable, retry_after: nil)
      StepHandler::Result.failure(
        message: error.message, error_type: error_type || "handler_error", retryable: retryable,
        retry_after: retry_after, error_class: error.class.name,
        backtrace: error.backtrace&.first(BACKTRACE_LINES)
      )
    end

    def not_found(context)
      StepHandler::Result.failure(
        message: "no handler for callable '#{context.handler_callable}' (step '#{context.step_name}' " \
                 "of #{context.namespace}/#{context.task_name}@#{context.task_version}): define the class " \
                 "or call TaskerCore.register_handler",
        error_type: "handler_not_found", retryable: false
      )
    end
  end
end

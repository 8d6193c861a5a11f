# frozen_string_literal: true

module TaskerCore
  # TaskerCore::Error (< StandardError) and TaskerCore::Native::Error with its subclasses
  # (ConfigError, DatabaseError, TemplateError, ConversionError, ...) come from the native
  # extension. These are raised by the Ruby library itself.

  # A handler class named by a template cannot be found.
  class HandlerNotFoundError < Error; end

  # TaskerCore::Client.wait gave up before the task reached a terminal status.
  class TimeoutError < Error; end

  # A worker was started twice, or used after it stopped.
  class WorkerError < Error; end

  # Configuration that cannot work (bad option values).
  class ConfigurationError < Error; end

  # Raised by a handler: the step failed and may be tried again, no sooner than
  # `retry_after` seconds when given.
  class RetryableError < StandardError
    attr_reader :retry_after, :error_type

    def initialize(message = "retryable failure", retry_after: nil, error_type: "handler_error")
      super(message)
      @retry_after = retry_after
      @error_type = error_type
    end
  end

  # Raised by a handler: the step failed for good; the task is blocked whatever the
  # template's retry settings.
  class PermanentError < StandardError
    attr_reader :error_type

    def initialize(message = "permanent failure", error_type: "handler_error")
      super(message)
      @error_type = error_type
    end
  end

  # Raised into a handler thread by the Watchdog when the step's timeout passes. Not a
  # StandardError, so a handler's `rescue => e` cannot swallow it.
  class HandlerTimeout < Exception # rubocop:disable Lint/InheritException
  end
end

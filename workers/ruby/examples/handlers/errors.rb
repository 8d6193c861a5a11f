# frozen_string_literal: true

module Examples
  module Errors
    # Fails (retryably) until its attempt number exceeds initialization["fail_times"]
    # (default 1); then returns the context's `value` (or 1).
    class Flaky < TaskerCore::StepHandler::Base
      def call(ctx)
        fail_times = ctx.initialization["fail_times"]
        fail_times = 1 unless fail_times.is_a?(Integer)
        raise TaskerCore::RetryableError, "flaky failure on attempt #{ctx.attempt}" if ctx.attempt <= fail_times

        success(result: ctx.task_context.key?("value") ? ctx.task_context["value"] : 1)
      end
    end

    # Fails retryably every time, as error type always_fails.
    class AlwaysFails < TaskerCore::StepHandler::Base
      def call(ctx)
        raise TaskerCore::RetryableError.new("always fails (attempt #{ctx.attempt})", error_type: "always_fails")
      end
    end

    # Fails for good, as a validation_error: no retry whatever the template allows.
    class PermanentFailure < TaskerCore::StepHandler::Base
      def call(_ctx)
        raise TaskerCore::PermanentError.new("this failure cannot be retried", error_type: "validation_error")
      end
    end
  end
end

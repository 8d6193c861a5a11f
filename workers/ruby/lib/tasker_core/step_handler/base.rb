# frozen_string_literal: true

module TaskerCore
  module StepHandler
    # Subclass and implement #call(context); return success(...) or failure(...), or raise
    # TaskerCore::RetryableError / TaskerCore::PermanentError. Any other exception fails
    # the step retryably as a handler_error carrying its class, message and backtrace.
    #
    # One instance is made per step, given the template's handler.initialization.
    class Base
      attr_reader :initialization

      def initialize(initialization = {})
        @initialization = initialization || {}
      end

      def call(_context)
        raise NotImplementedError, "#{self.class} must implement #call(context)"
      end

      # next_steps: (decision steps) the direct dependents to create; [] chooses none.
      # batches: (batchable steps) one Hash per batch, e.g. TaskerCore::Batches.ranges(...).
      def success(result: nil, metadata: Result::NO_METADATA, next_steps: nil, batches: nil)
        Result.success(result: result, metadata: metadata, next_steps: next_steps, batches: batches)
      end

      def failure(message:, error_type: "handler_error", retryable: true)
        Result.failure(message: message, error_type: error_type, retryable: retryable)
      end
    end
  end
end

# frozen_string_literal: true

module TaskerCore
  module StepHandler
    # What a handler returns: built by Base#success / Base#failure.
    class Result
      NO_METADATA = {}.freeze

      attr_reader :result, :metadata, :message, :error_type, :retryable, :retry_after,
                  :error_class, :backtrace, :next_steps, :batches

      # next_steps: a decision step's choice among its direct dependents ([] chooses none).
      # batches: a batchable step's batches, one Hash per batch worker copy ([] for none).
      def self.success(result: nil, metadata: NO_METADATA, next_steps: nil, batches: nil)
        new(success: true, result: result, metadata: metadata, next_steps: next_steps, batches: batches)
      end

      def self.failure(message:, error_type: "handler_error", retryable: true, retry_after: nil,
                       error_class: nil, backtrace: nil)
        new(success: false, message: message, error_type: error_type, retryable: retryable,
            retry_after: retry_after, error_class: error_class, backtrace: backtrace)
      end

      def initialize(success:, result: nil, metadata: NO_METADATA, message: nil, error_type: nil,
                     retryable: nil, retry_after: nil, error_class: nil, backtrace: nil,
                     next_steps: nil, batches: nil)
        @success = success
        @next_steps = next_steps
        @batches = batches
        @result = result
        @metadata = metadata
        @message = message
        @error_type = error_type
        @retryable = retryable
        @retry_after = retry_after
        @error_class = error_class
        @backtrace = backtrace
      end

      def success?
        @success
      end

      # The Hash TaskerCore::Native complete takes (an FfiStepResult).
      def to_native
        if @success
          out = { "success" => true, "result" => @result }
          # Anything but a Hash goes as it is, for the engine to refuse as invalid_result.
          out["metadata"] = @metadata unless @metadata.nil? || (@metadata.is_a?(Hash) && @metadata.empty?)
          out["next_steps"] = next_steps_native unless @next_steps.nil?
          out["batches"] = @batches unless @batches.nil?
          return out
        end
        error = {
          "message" => @message.to_s,
          "error_type" => @error_type.to_s,
          "retryable" => @retryable ? true : false
        }
        error["error_class"] = @error_class if @error_class
        error["backtrace"] = @backtrace if @backtrace
        # Not converted here: a value that is not a number is refused by the engine, which
        # fails the step as invalid_result naming it.
        error["retry_after_seconds"] = @retry_after if @retry_after
        { "success" => false, "error" => error }
      end

      private

      # Step names may be given as Symbols; anything else goes as it is, for the engine to
      # refuse with invalid_decision naming it.
      def next_steps_native
        return @next_steps unless @next_steps.is_a?(Array)

        @next_steps.map { |n| n.is_a?(Symbol) ? n.to_s : n }
      end
    end
  end
end

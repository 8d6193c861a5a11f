# frozen_string_literal: true

module TaskerCore
  module StepHandler
    # What a handler returns: built by Base#success / Base#failure.
    class Result
      NO_METADATA = {}.freeze

      attr_reader :result, :metadata, :message, :error_type, :retryable, :retry_after,
                  :error_class, :backtrace

      def self.success(result: nil, metadata: NO_METADATA)
        new(success: true, result: result, metadata: metadata)
      end

      def self.failure(message:, error_type: "handler_error", retryable: true, retry_after: nil,
                       error_class: nil, backtrace: nil)
        new(success: false, message: message, error_type: error_type, retryable: retryable,
            retry_after: retry_after, error_class: error_class, backtrace: backtrace)
      end

      def initialize(success:, result: nil, metadata: NO_METADATA, message: nil, error_type: nil,
                     retryable: nil, retry_after: nil, error_class: nil, backtrace: nil)
        @success = success
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
          out["metadata"] = @metadata unless @metadata.nil? || @metadata.empty?
          return out
        end
        error = {
          "message" => @message.to_s,
          "error_type" => @error_type.to_s,
          "retryable" => @retryable ? true : false
        }
        error["error_class"] = @error_class if @error_class
        error["backtrace"] = @backtrace if @backtrace
        error["retry_after_seconds"] = Float(@retry_after) if @retry_after
        { "success" => false, "error" => error }
      end
    end
  end
end

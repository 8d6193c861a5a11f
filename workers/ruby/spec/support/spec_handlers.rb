# frozen_string_literal: true

# Handlers for the failure-path templates in spec/fixtures/templates.
module SpecHandlers
  class Raises < TaskerCore::StepHandler::Base
    def call(_ctx)
      raise ArgumentError, "bad argument from a handler"
    end
  end

  class ReturnsFailure < TaskerCore::StepHandler::Base
    def call(_ctx)
      failure(message: "card declined", error_type: "card_declined", retryable: false)
    end
  end

  class RaisesPermanent < TaskerCore::StepHandler::Base
    def call(_ctx)
      raise TaskerCore::PermanentError.new("account closed", error_type: "account_closed")
    end
  end

  class RaisesRetryable < TaskerCore::StepHandler::Base
    def call(ctx)
      raise TaskerCore::RetryableError.new("gateway busy (attempt #{ctx.attempt})", retry_after: 0.1,
                                                                                   error_type: "gateway_busy")
    end
  end

  class ReturnsTime < TaskerCore::StepHandler::Base
    def call(_ctx)
      success(result: { "at" => Time.at(0) })
    end
  end

  # Uses initialization, a parent's result and metadata.
  class Greets < TaskerCore::StepHandler::Base
    def call(ctx)
      success(result: "#{initialization['greeting']}, #{ctx.task_context['name']}",
              metadata: { "handler" => "greets" })
    end
  end
end

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
      success(result: "#{initialization["greeting"]}, #{ctx.task_context["name"]}",
              metadata: { "handler" => "greets" })
    end
  end
end

# Handlers for spec/fixtures/templates/rspec_dynamic.yaml: outcomes come from the context.
module SpecHandlers
  class Decide < TaskerCore::StepHandler::Base
    def call(ctx)
      success(result: { "chose" => ctx.task_context["next_steps"] }, next_steps: ctx.task_context["next_steps"])
    end
  end

  class Ran < TaskerCore::StepHandler::Base
    def call(ctx)
      success(result: "#{ctx.step_name} ran")
    end
  end

  class Split < TaskerCore::StepHandler::Base
    def call(ctx)
      success(result: nil, batches: ctx.task_context["batches"])
    end
  end

  class Part < TaskerCore::StepHandler::Base
    def call(ctx)
      success(result: { "batch" => ctx.batch, "step" => ctx.step_name })
    end
  end

  class Done < TaskerCore::StepHandler::Base
    def call(ctx)
      success(result: { "a" => ctx.dependency_result("a"), "b" => ctx.dependency_result("b"),
                        "parts" => ctx.batch_results("part").map { |r| r["step"] } })
    end
  end

  # Produces the bad output its task's context names: every way a handler's result can
  # be unusable, and every way a handler can try to take its thread down.
  class BadResult < TaskerCore::StepHandler::Base
    OUTPUTS = {
      "cyclic" => lambda {
                    h = {}
                    h["self"] = h
                    { result: h }
                  },
      "deep" => -> { { result: (1..65).reduce(1) { |inner, _| { "a" => inner } } } },
      "nan" => -> { { result: { "ratio" => Float::NAN } } },
      "infinity" => -> { { result: { "ratio" => -Float::INFINITY } } },
      "nul" => -> { { result: { "note" => "a\0b" } } },
      "huge" => -> { { result: { "blob" => "x" * (20 * 1024 * 1024) } } },
      "metadata_not_hash" => -> { { result: 1, metadata: 42 } },
      "no_json_form" => -> { { result: { "it" => Object.new } } }
    }.freeze

    def call(ctx)
      kind = ctx.task_context["kind"]
      case kind
      when "retry_after_soon" then raise TaskerCore::RetryableError.new("busy", retry_after: "soon")
      when "raises_exception" then raise Exception, "not a StandardError" # rubocop:disable Lint/RaiseException
      when "exits" then exit(3)
      when "thread_exit" then Thread.exit
      else success(**OUTPUTS.fetch(kind).call)
      end
    end
  end
end

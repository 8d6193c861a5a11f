# frozen_string_literal: true

module RailsSpec
  # Rewritten by the reloading spec.
  class AnswerHandler < TaskerCore::StepHandler::Base
    def call(_ctx)
      success(result: "first")
    end
  end
end

# frozen_string_literal: true

module Example
  # The greet step of config/tasker/templates/hello_world.yaml.
  class GreetHandler < TaskerCore::StepHandler::Base
    def call(ctx)
      success(result: { "greeting" => "#{initialization["greeting"]}, #{ctx.task_context["name"]}!" })
    end
  end
end

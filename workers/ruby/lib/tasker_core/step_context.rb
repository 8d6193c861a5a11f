# frozen_string_literal: true

module TaskerCore
  # What a handler is given for one step: the task's context, its parents' results, the
  # template's handler initialization, and where the step stands.
  class StepContext
    attr_reader :event_id, :task_uuid, :step_uuid, :step_name, :namespace, :task_name,
                :task_version, :attempt, :max_attempts, :handler_callable, :initialization,
                :inputs, :task_context, :dependency_results, :timeout_seconds

    # `step` is the Hash TaskerCore::Native poll returns (String keys).
    def initialize(step)
      @event_id = step["event_id"]
      @task_uuid = step["task_uuid"]
      @step_uuid = step["step_uuid"]
      @step_name = step["step_name"]
      @namespace = step["namespace"]
      @task_name = step["task_name"]
      @task_version = step["task_version"]
      @attempt = step["attempt"]
      @max_attempts = step["max_attempts"]
      @handler_callable = step["handler_callable"]
      @initialization = step["initialization"] || {}
      @inputs = step["inputs"] || {}
      @task_context = step["task_context"] || {}
      @dependency_results = step["dependency_results"] || {}
      @timeout_seconds = step["timeout_seconds"]
    end

    # A parent step's result value, or nil when `name` is not a parent of this step.
    def dependency_result(name)
      @dependency_results[name.to_s]
    end

    def last_attempt?
      attempt >= max_attempts
    end

    def to_s
      "#<TaskerCore::StepContext #{namespace}/#{task_name} step=#{step_name} attempt=#{attempt}/#{max_attempts}>"
    end
    alias inspect to_s
  end
end

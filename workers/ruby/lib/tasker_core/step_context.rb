# frozen_string_literal: true

module TaskerCore
  # What a handler is given for one step: the task's context, its parents' results, the
  # template's handler initialization, and where the step stands. Reads the Hash that
  # TaskerCore::Native poll returns (String keys) as it is asked, so a handler pays only
  # for what it uses.
  class StepContext
    EMPTY = {}.freeze

    def initialize(step)
      @step = step
    end

    def event_id = @step["event_id"]
    def task_uuid = @step["task_uuid"]
    def step_uuid = @step["step_uuid"]
    def step_name = @step["step_name"]
    def namespace = @step["namespace"]
    def task_name = @step["task_name"]
    def task_version = @step["task_version"]
    def attempt = @step["attempt"]
    def max_attempts = @step["max_attempts"]
    def handler_callable = @step["handler_callable"]
    def timeout_seconds = @step["timeout_seconds"]

    # The template's handler.initialization.
    def initialization = @step["initialization"] || EMPTY
    def inputs = @step["inputs"] || EMPTY
    # The task's JSON context.
    def task_context = @step["task_context"] || EMPTY
    # Each parent's result, by step name.
    def dependency_results = @step["dependency_results"] || EMPTY

    # A parent step's result value, or nil when `name` is not a parent of this step (or is a
    # branch its decision did not create).
    def dependency_result(name)
      dependency_results[name.to_s]
    end

    # In a batch worker: its batch, the Hash its batchable step returned for it.
    def batch
      inputs["batch"]
    end

    # In a convergence step: the results of the batch worker's copies (<worker>_000, _001,
    # ...) in batch order; [] when no batches were created.
    def batch_results(worker_name)
      pattern = /\A#{Regexp.escape(worker_name.to_s)}_(\d+)\z/
      dependency_results.filter_map { |name, result| (m = pattern.match(name)) && [m[1].to_i, result] }
                        .sort_by(&:first).map(&:last)
    end

    def last_attempt?
      attempt >= max_attempts
    end

    def to_h
      @step.dup
    end

    def to_s
      "#<TaskerCore::StepContext #{namespace}/#{task_name} step=#{step_name} attempt=#{attempt}/#{max_attempts}>"
    end
    alias inspect to_s
  end
end

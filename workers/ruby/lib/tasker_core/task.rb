# frozen_string_literal: true

module TaskerCore
  # A task as read from the database (TaskerCore::Client.get_task / wait).
  class Task
    # One workflow step of a task.
    class Step
      attr_reader :name, :status, :attempts, :max_attempts, :result, :error, :step_uuid,
                  :retryable, :completed_at, :step_type, :inputs

      def initialize(row)
        @name = row["name"]
        @status = row["state"]
        @attempts = row["attempts"]
        @max_attempts = row["max_attempts"]
        @result = row["results"]
        @error = row["last_error"]
        @step_uuid = row["step_uuid"]
        @retryable = row["retryable"]
        @completed_at = row["completed_at"]
        @step_type = row["step_type"]
        @inputs = row["inputs"]
      end

      # A batch worker copy's batch.
      def batch
        inputs && inputs["batch"]
      end

      def complete?
        status == "complete"
      end

      def to_s
        "#{name}=#{status}(#{attempts})"
      end
      alias inspect to_s
    end

    attr_reader :task_uuid, :status, :namespace, :name, :version, :context, :steps,
                :idempotency_key, :created_at, :completed_at, :run_at

    # `row` is what TaskerCore::Native.get_task returns; `created` what create_task said.
    def initialize(row, created: nil)
      @task_uuid = row["task_uuid"]
      @status = row["state"]
      @namespace = row["namespace"]
      @name = row["name"]
      @version = row["version"]
      @context = row["context"]
      @idempotency_key = row["idempotency_key"]
      @created_at = row["created_at"]
      @completed_at = row["completed_at"]
      @run_at = row["run_at"]
      @terminal = row["terminal"]
      @steps = (row["steps"] || []).map { |s| Step.new(s) }
      @created = created
    end

    # The step named `name`; raises KeyError listing the task's steps when there is none.
    def step(name)
      @steps.find { |s| s.name == name.to_s } ||
        raise(KeyError, "task #{task_uuid} (#{namespace}/#{self.name}) has no step '#{name}'; " \
                        "steps: #{@steps.map(&:name).join(", ")}")
    end

    # complete, error, cancelled or resolved_manually: nothing more will happen.
    def terminal?
      @terminal ? true : false
    end

    def complete?
      status == "complete"
    end

    # False when create_task found an existing task for the idempotency key.
    def created?
      @created
    end

    def to_s
      "#<TaskerCore::Task #{task_uuid} #{namespace}/#{name}@#{version} #{status} #{@steps.map(&:to_s).join(" ")}>"
    end
    alias inspect to_s
  end
end

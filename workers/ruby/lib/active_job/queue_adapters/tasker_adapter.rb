# frozen_string_literal: true

module ActiveJob
  module QueueAdapters
    # config.active_job.queue_adapter = :tasker
    #
    # perform_later creates a one-step Tasker task that runs the job on a Tasker worker;
    # provider_job_id is the task's uuid. Queue names and priorities are not used.
    class TaskerAdapter
      def enqueue(job)
        TaskerCore::ActiveJobTasks.enqueue(job)
      end

      def enqueue_at(job, timestamp)
        TaskerCore::ActiveJobTasks.enqueue(job, at: timestamp)
      end
    end
  end
end

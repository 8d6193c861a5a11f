# frozen_string_literal: true

require "json"
require "time"
require "active_job"
require "active_job/queue_adapters/tasker_adapter"

module TaskerCore
  # Active Job on Tasker: each job is a one-step task (namespace active_job, template
  # active_job) whose context holds the job serialized the Active Job way (GlobalID included).
  module ActiveJobTasks
    NAMESPACE = "active_job"
    NAME = "active_job"
    VERSION = "1.0.0"
    TEMPLATE_DIR = File.expand_path("active_job/templates", __dir__)

    module_function

    # Inside an open Active Record transaction the job is enqueued when it commits, and not at
    # all if it rolls back. `at` (epoch seconds, set(wait:) / set(wait_until:)) schedules its
    # task: created now, so provider_job_id is its uuid at once, and run no earlier than `at`.
    def enqueue(job, at: nil)
      PendingTask.defer { submit(job, at) } || submit(job, at)
    end

    def submit(job, at)
      job.provider_job_id = Client.create_now(request(job.serialize, at)).task_uuid
    end

    def request(job_data, at = nil)
      { "namespace" => NAMESPACE, "name" => NAME, "version" => VERSION,
        "context" => { "job" => job_data },
        "run_at" => at && Time.at(at).utc.iso8601(6) }.compact
    end
  end

  # The active_job template's step: runs the job. An exception that gets past the job's
  # retry_on / discard_on is final (those rules already had their say); the failure carries
  # its class, message and backtrace.
  class ActiveJobHandler < StepHandler::Base
    BACKTRACE_LINES = 50

    def call(ctx)
      data = ctx.task_context.fetch("job").merge("provider_job_id" => ctx.task_uuid)
      ::ActiveJob::Base.execute(data)
      success(result: { "job_class" => data["job_class"], "job_id" => data["job_id"] })
    rescue StandardError => e
      StepHandler::Result.failure(message: e.message, error_type: "active_job_failed", retryable: false,
                                  error_class: e.class.name, backtrace: e.backtrace&.first(BACKTRACE_LINES))
    end
  end
end

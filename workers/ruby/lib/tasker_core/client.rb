# frozen_string_literal: true

require "time"

module TaskerCore
  # Submits tasks and reads them back, against the configured database.
  module Client
    class << self
      # Returns the Task; inside an open Active Record transaction, a PendingTask instead:
      # the task is created when the transaction commits, and never if it rolls back.
      # run_at: a Time (or anything with #to_time, or an ISO 8601 String) before which no
      # step of the task starts.
      def create_task(namespace:, name:, version:, context:, idempotency_key: nil, run_at: nil)
        request = { "namespace" => namespace.to_s, "name" => name.to_s, "version" => version.to_s,
                    "context" => context }
        request["idempotency_key"] = idempotency_key.to_s unless idempotency_key.nil?
        request["run_at"] = iso8601(run_at) unless run_at.nil?
        PendingTask.defer { create_now(request) } || create_now(request)
      end

      # Creates the task at once, whatever transaction is open.
      def create_now(request)
        created = Native.create_task(request, options)
        Task.new(created["task"], created: created["created"])
      end

      def get_task(task_or_uuid)
        Task.new(Native.get_task(uuid_of(task_or_uuid), options))
      end

      # Returns the task once it is terminal; raises TaskerCore::TimeoutError (naming the
      # task's step states) after `timeout` seconds. The wait is woken by the database when
      # the task finishes (one listening connection per process, however many threads
      # wait) and releases the GVL while it waits.
      def wait(task_or_uuid, timeout:)
        uuid = uuid_of(task_or_uuid)
        # The native call refuses a timeout that is not a non-negative number.
        task = Task.new(Native.wait_task(uuid, timeout, options))
        return task if task.terminal?

        raise TimeoutError, "task #{uuid} (#{task.namespace}/#{task.name}) still #{task.status} after " \
                            "#{timeout} s: #{task.steps.map(&:to_s).join(", ")}"
      end

      # Cancels the task; returns it as it now stands.
      def cancel(task_or_uuid)
        uuid = uuid_of(task_or_uuid)
        Native.cancel_task(uuid, options)
        get_task(uuid)
      end

      private

      def options
        TaskerCore.configuration.native_options
      end

      def iso8601(time)
        return time if time.is_a?(String)
        raise ArgumentError, "run_at: expected a Time, got #{time.class}" unless time.respond_to?(:to_time)

        time.to_time.utc.iso8601(6)
      end

      def uuid_of(task_or_uuid)
        if task_or_uuid.is_a?(PendingTask)
          return task_or_uuid.task_uuid if task_or_uuid.created?

          raise Error, "#{task_or_uuid}: the task is created only when its transaction commits"
        end
        task_or_uuid.respond_to?(:task_uuid) ? task_or_uuid.task_uuid : task_or_uuid.to_s
      end
    end
  end
end

# frozen_string_literal: true

module TaskerCore
  # Submits tasks and reads them back, against the configured database.
  module Client
    class << self
      def create_task(namespace:, name:, version:, context:, idempotency_key: nil)
        request = { "namespace" => namespace.to_s, "name" => name.to_s, "version" => version.to_s,
                    "context" => context }
        request["idempotency_key"] = idempotency_key.to_s unless idempotency_key.nil?
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
                            "#{timeout} s: #{task.steps.map(&:to_s).join(', ')}"
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

      def uuid_of(task_or_uuid)
        task_or_uuid.respond_to?(:task_uuid) ? task_or_uuid.task_uuid : task_or_uuid.to_s
      end
    end
  end
end

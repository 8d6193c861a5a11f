# frozen_string_literal: true

require "tasker_core"
require "tasker_core/rake_support"

module TaskerCore
  # For an application's tests: runs tasks on a worker inside the test process.
  #
  #   require "tasker_core/testing"
  #   task = TaskerCore::Testing.run_task(namespace: "shop", name: "order", version: "1.0.0",
  #                                       context: { "order_id" => 1 })
  #   expect(task.status).to eq("complete")
  #
  # The worker (embedded orchestration, handler threads of this process) starts on the first
  # call, after migrating the configured database once, and stops when the process exits.
  # Handlers run on their own threads with their own database connections: they do not see
  # rows a test wrote inside an uncommitted (transactional-test) transaction.
  module Testing
    # Handler threads, unless configured (config.tasker.concurrency in Rails).
    CONCURRENCY = 4

    @lock = Mutex.new

    class << self
      # Creates the task, waits for it to finish (TaskerCore::TimeoutError after `timeout`
      # seconds) and returns it.
      def run_task(namespace:, name:, version:, context:, timeout: 10)
        serve(namespace.to_s)
        task = Client.create_now("namespace" => namespace.to_s, "name" => name.to_s, "version" => version.to_s,
                                 "context" => context)
        Client.wait(task, timeout: timeout)
      end

      private

      # A running worker that does not serve `namespace` is restarted serving it as well.
      def serve(namespace)
        @lock.synchronize do
          current = Worker.current
          served = current&.running? ? current.namespaces : []
          next if served.include?(namespace)

          prepare_database
          Worker.stop if current&.running?
          concurrency = TaskerCore.configuration.worker_options.fetch(:concurrency, CONCURRENCY)
          Worker.start(namespaces: served + [namespace], concurrency: concurrency, orchestration: :embedded,
                       trap_signals: false)
        end
      end

      def prepare_database
        url = RakeTasks.database_url
        return if @migrated == url

        Native.migrate(url)
        @migrated = url
      end
    end
  end
end

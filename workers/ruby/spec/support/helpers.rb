# frozen_string_literal: true

module TaskerSpec
  module Helpers
    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def elapsed
      t0 = monotonic
      yield
      monotonic - t0
    end

    # Points the library at the spec database (creating it on first use).
    def use_database
      TaskerCore.configuration.database_url = TaskerSpec::TestDatabase.url
    end

    # Starts the process-wide worker with embedded orchestration on the spec database.
    def start_worker(**options)
      use_database
      TaskerCore::Worker.start(concurrency: 10, orchestration: :embedded, trap_signals: false, **options)
    end

    def ok_result(value = nil)
      { "success" => true, "result" => value }
    end

    def loopback_step(overrides = {})
      { "handler_callable" => "Examples::Noop", "task_context" => { "n" => 1 } }.merge(overrides)
    end
  end
end

# frozen_string_literal: true

# Tasker (gem "tasker_core"). Every setting is optional.
Rails.application.configure do
  # Database: DATABASE_URL if set, else this app's config/database.yml for Rails.env,
  # else this.
  # config.tasker.database_url = "postgresql://localhost/tasker"

  # Where task templates are read from (a directory or an Array of them).
  # config.tasker.template_path = Rails.root.join("config/tasker/templates")

  # What bin/rails tasker:worker and `plugin :tasker` in config/puma.rb run: the namespaces
  # served (default: every template's), handler threads per process, and whether the
  # process also orchestrates (:embedded) or a separate `tasker server` does (:external).
  # config.tasker.namespaces = %w[example]
  # config.tasker.concurrency = 10
  # config.tasker.orchestration = :embedded

  # Active Job on Tasker: perform_later creates a task a Tasker worker runs.
  # config.active_job.queue_adapter = :tasker
end

# Any key of Tasker's TOML configuration (TASKER_ENV defaults to Rails.env):
# TaskerCore.configure do |c|
#   c.set("worker.mpsc_channels.handler_dispatch.handler_timeout_ms", 60_000)
# end

# frozen_string_literal: true

# `require "tasker_core/rake_tasks"` in a Rakefile adds the tasker:* tasks. They read the
# same configuration as the library: DATABASE_URL, TASKER_ENV, TASKER_CONFIG_DIR,
# TASKER_TEMPLATE_PATH, or a TaskerCore.configure block loaded before them.
#
# tasker:worker needs the handler classes loaded: it runs the application's `environment`
# task when there is one (Rails), and requires HANDLERS (colon-separated Ruby files or
# directories of them).

require "rake"
require "tasker_core/rake_support"

namespace :tasker do
  desc "Create the database if missing, migrate it, install PGMQ and register the templates"
  task :setup do
    require "tasker_core"
    TaskerCore::RakeTasks.migrate
    TaskerCore::RakeTasks.register_templates
  end

  desc "Create the database if missing, migrate it and install PGMQ"
  task :migrate do
    require "tasker_core"
    TaskerCore::RakeTasks.migrate
  end

  namespace :templates do
    desc "Validate every template on the template path"
    task :validate do
      require "tasker_core"
      TaskerCore::RakeTasks.validate_templates
    end
  end

  desc "Run a worker (NAMESPACES=a,b CONCURRENCY=10 ORCHESTRATION=embedded|external HANDLERS=files) until SIGTERM"
  task :worker do
    require "tasker_core"
    TaskerCore::RakeTasks.run_worker
  end

  desc "Run the order-fulfillment example end to end (embedded orchestration) and print it"
  task :demo do
    require "tasker_core"
    TaskerCore::RakeTasks.demo
  end
end

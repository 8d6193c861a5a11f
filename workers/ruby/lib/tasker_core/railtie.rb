# frozen_string_literal: true

require "rails/railtie"
require "tasker_core/rails_database"
require "tasker_core/active_job" if defined?(::ActiveJob)

module TaskerCore
  # What a Rails app gets from `gem "tasker_core"`: configuration from the app (database,
  # environment, logger, templates), handlers run inside the app's reloader, and the
  # tasker:* rake tasks through bin/rails. It starts no worker: `bin/rails tasker:worker`
  # or `plugin :tasker` in config/puma.rb do.
  #
  # config.tasker.database_url   used when neither DATABASE_URL nor config/database.yml names one
  # config.tasker.template_path  a directory or an Array of them (default config/tasker/templates)
  # config.tasker.namespaces     what workers serve (default: every template's namespace)
  # config.tasker.concurrency    handler threads per worker (default 10)
  # config.tasker.orchestration  :embedded (default) or :external (a separate `tasker server`)
  class Railtie < ::Rails::Railtie
    WORKER_TASKS = %w[tasker:setup tasker:migrate tasker:templates:validate tasker:worker].freeze

    config.tasker = ActiveSupport::OrderedOptions.new

    # After config/initializers, so settings made there count.
    initializer "tasker.configure", after: :load_config_initializers do |app|
      Railtie.configure(app)
    end

    # After a code reload, handler classes are looked up again.
    config.to_prepare { TaskerCore.handlers.forget_constants }

    rake_tasks do
      load "tasker_core/rake_tasks.rb"
      WORKER_TASKS.each { |name| Rake::Task.define_task(name => :environment) }
    end

    class << self
      def configure(app)
        options = app.config.tasker
        TaskerCore.logger = ::Rails.logger if ::Rails.logger
        TaskerCore.configure do |c|
          c.environment = ::Rails.env.to_s if ENV["TASKER_ENV"].to_s.empty?
          c.database_url = RailsDatabase.resolve(active_record: active_record_config(app),
                                                 configured: options.database_url)
          c.template_path = template_paths(app, options)
          c.around_handler = ->(&handler) { app.reloader.wrap(&handler) }
          c.worker_options = { namespaces: options.namespaces, concurrency: options.concurrency || 10,
                               orchestration: (options.orchestration || :embedded).to_sym }.compact
        end
      end

      # Starts this process's worker as config.tasker says (the Puma plugin's entry point).
      def start_worker(trap_signals:)
        options = TaskerCore.configuration.worker_options
        Worker.start(namespaces: options[:namespaces], concurrency: options.fetch(:concurrency, 10),
                     orchestration: options.fetch(:orchestration, :embedded), trap_signals: trap_signals)
      end

      private

      def template_paths(app, options)
        paths = Array(options.template_path || app.root.join("config/tasker/templates")).map(&:to_s)
        paths << ActiveJobTasks::TEMPLATE_DIR if defined?(TaskerCore::ActiveJobTasks)
        paths
      end

      # The environment's primary database from config/database.yml, without loading
      # ActiveRecord::Base; nil when the app has none.
      def active_record_config(app)
        return nil unless defined?(::ActiveRecord::Railtie)

        require "active_record/database_configurations"
        configs = ::ActiveRecord::DatabaseConfigurations.new(app.config.database_configuration)
        db = configs.configs_for(env_name: ::Rails.env, name: "primary") ||
             configs.configs_for(env_name: ::Rails.env).first
        db&.configuration_hash
      rescue RuntimeError => e # no config/database.yml
        TaskerCore.logger.debug("tasker: no Active Record configuration (#{e.message})")
        nil
      end
    end
  end
end

# frozen_string_literal: true

require "logger"

module TaskerCore
  # What a Ruby process sets, layered over the TOML configuration. Unset values fall back
  # to the environment: DATABASE_URL, TASKER_ENV, TASKER_CONFIG_DIR, TASKER_TEMPLATE_PATH
  # (and the TOML itself, e.g. [database] url).
  #
  #   TaskerCore.configure do |c|
  #     c.template_path = "app/tasks"
  #     c.database_url = "postgresql://localhost/app"
  #     c.set("worker.mpsc_channels.handler_dispatch.max_concurrent_handlers", 20)
  #   end
  class Configuration
    attr_writer :database_url, :environment, :config_dir, :template_path

    # A callable given a block, which it must call once, around each handler call (with the
    # handler's lookup); nil runs handlers bare. Rails sets the app's reloader here.
    attr_accessor :around_handler

    # Defaults for the workers tasker:worker and the Puma plugin start (namespaces:,
    # concurrency:, orchestration:); the rake task's environment variables win over them.
    attr_writer :worker_options

    def worker_options
      @worker_options || {}
    end

    def initialize
      @overrides = {}
    end

    def database_url
      @database_url || present(ENV["DATABASE_URL"])
    end

    def environment
      @environment || present(ENV["TASKER_ENV"]) || "development"
    end

    def config_dir
      @config_dir || present(ENV["TASKER_CONFIG_DIR"])
    end

    # Directories (or files) holding task templates: `template_path` (an Array, or a
    # colon-separated String), else TASKER_TEMPLATE_PATH, else ./config/tasks.
    def template_paths
      raw = @template_path || present(ENV["TASKER_TEMPLATE_PATH"]) || "config/tasks"
      list = raw.is_a?(Array) ? raw : raw.to_s.split(":")
      list.map(&:to_s).reject(&:empty?)
    end

    # Sets one configuration key above every other layer, e.g.
    # `set("worker.mpsc_channels.ffi_dispatch.completion_timeout_ms", 60_000)`.
    def set(key, value)
      @overrides[key.to_s] = value
      self
    end

    def overrides
      @overrides.dup
    end

    # What the native extension takes as configuration options.
    def native_options
      {
        "database_url" => database_url,
        "environment" => environment,
        "config_dir" => config_dir,
        "config" => @overrides
      }.compact
    end

    # The merged configuration (TOML, environment, these settings) as a Hash.
    def resolved
      Native.load_config(native_options)
    end

    private

    def present(value)
      value.nil? || value.empty? ? nil : value
    end
  end

  class << self
    def configuration
      @configuration ||= Configuration.new
    end

    def configure
      yield configuration
      configuration
    end

    # Where the Ruby library logs (the Rust core logs to stderr, filtered by TASKER_LOG).
    def logger
      @logger ||= Logger.new($stderr, level: Logger::WARN, progname: "tasker")
    end

    attr_writer :logger

    # Back to the defaults (environment variables and TOML); mainly for tests.
    def reset_configuration!
      @configuration = Configuration.new
    end
  end
end

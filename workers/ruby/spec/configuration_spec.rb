# frozen_string_literal: true

require "spec_helper"

RSpec.describe TaskerCore::Configuration do
  subject(:config) { described_class.new }

  around do |example|
    saved = ENV.to_h.slice("DATABASE_URL", "TASKER_ENV", "TASKER_TEMPLATE_PATH", "TASKER_CONFIG_DIR",
                           "TASKER_WORKER__MPSC_CHANNELS__HANDLER_DISPATCH__HANDLER_TIMEOUT_MS")
    example.run
  ensure
    %w[DATABASE_URL TASKER_ENV TASKER_TEMPLATE_PATH TASKER_CONFIG_DIR
       TASKER_WORKER__MPSC_CHANNELS__HANDLER_DISPATCH__HANDLER_TIMEOUT_MS].each { |k| ENV.delete(k) }
    ENV.update(saved)
  end

  it "takes its defaults from the environment" do
    ENV["DATABASE_URL"] = "postgresql://env/db"
    ENV["TASKER_ENV"] = "production"
    ENV["TASKER_TEMPLATE_PATH"] = "/a:/b"
    expect([config.database_url, config.environment,
            config.template_paths]).to eq(["postgresql://env/db", "production", %w[/a /b]])
    ENV.delete("TASKER_TEMPLATE_PATH")
    expect(config.template_paths).to eq(["config/tasks"])
  end

  it "lets set values win over the environment and the TOML" do
    ENV["TASKER_WORKER__MPSC_CHANNELS__HANDLER_DISPATCH__HANDLER_TIMEOUT_MS"] = "1234"
    config.config_dir = File.join(ROOT, "config/tasker")
    config.environment = "test"
    config.database_url = "postgresql://postgres@127.0.0.1:5432/elsewhere"
    expect(config.resolved.dig("worker", "mpsc_channels", "handler_dispatch", "handler_timeout_ms")).to eq(1234)
    config.set("worker.mpsc_channels.handler_dispatch.handler_timeout_ms", 4321)
    config.set("worker.mpsc_channels.handler_dispatch.max_concurrent_handlers", 20)
    resolved = config.resolved
    expect(resolved.dig("worker", "mpsc_channels", "handler_dispatch"))
      .to include("handler_timeout_ms" => 4321, "max_concurrent_handlers" => 20)
    expect(resolved.dig("database", "url")).to eq("postgresql://postgres@127.0.0.1:5432/elsewhere")
    expect(resolved.dig("orchestration", "fallback_poll_interval_ms")).to eq(200) # environments/test
    expect(resolved["environment"]).to eq("test")
  end

  it "refuses an unknown or invalid key by name" do
    config.set("worker.mpsc_channels.handler_dispatch.max_concurent_handlers", 5)
    expect { config.resolved }.to raise_error(TaskerCore::Native::ConfigError, /max_concurent_handlers/)
    bad = described_class.new.set("worker.mpsc_channels.handler_dispatch.max_concurrent_handlers", 0)
    expect { bad.resolved }.to raise_error(TaskerCore::Native::ConfigError, /max_concurrent_handlers.*at least 1/)
  end

  it "is what TaskerCore.configure yields" do
    TaskerCore.configure { |c| c.set("worker.command_buffer_size", 7) }
    expect(TaskerCore.configuration.overrides).to include("worker.command_buffer_size" => 7)
  ensure
    TaskerSpec.configure_tasker
  end
end

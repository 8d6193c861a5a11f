# frozen_string_literal: true

# The Rails specs (rake spec:rails, their own process). Unit specs boot one small Rails app,
# written into a temporary directory, whose database.yml names the run's spec database;
# end-to-end specs make real apps with `rails new`.

ENV["TASKER_LOG"] ||= "error"
ENV["RAILS_ENV"] = "test"
# The app's own database.yml must decide (the Railtie would take DATABASE_URL first).
ENV.delete("DATABASE_URL")
ENV.delete("TASKER_ENV")

ROOT = File.expand_path("../../..", __dir__)
$LOAD_PATH.unshift(File.join(ROOT, "workers/ruby/lib"))

require "tmpdir"
require "fileutils"
require "uri"
require "rails"
require "active_record/railtie"
require "active_job/railtie"
require "global_id/railtie"
# After Rails, as Bundler.require loads gems in an app: so the Railtie installs.
require "tasker_core"
require_relative "../spec/support/test_database"
require_relative "../spec/support/helpers"

module RailsSpec
  APP_ROOT = Dir.mktmpdir("tasker_rails_app")
  FILES = File.join(__dir__, "app_files")

  # The app's files, with config/database.yml naming the spec database.
  def self.write_app
    FileUtils.cp_r("#{FILES}/.", APP_ROOT)
    url = URI(TaskerSpec::TestDatabase.url)
    File.write(File.join(APP_ROOT, "config/database.yml"), <<~YAML)
      test:
        adapter: postgresql
        host: #{url.host}
        port: #{url.port}
        username: #{url.user}
        database: #{url.path.delete_prefix("/")}
        pool: 5
        checkout_timeout: 2
    YAML
  end
end

RailsSpec.write_app

module RailsSpecApp
  class Application < Rails::Application
    config.root = RailsSpec::APP_ROOT
    config.eager_load = false
    # As in development: code reloads when its files change.
    config.cache_classes = false
    config.logger = Logger.new(File.join(RailsSpec::APP_ROOT, "log.txt"))
    config.active_job.queue_adapter = :tasker
    config.secret_key_base = "tasker-rails-spec"
    config.tasker.concurrency = 10
  end
end
RailsSpecApp::Application.initialize!
# Never anything else (a shared database): the specs would write to it.
unless TaskerCore.configuration.database_url&.end_with?(URI(TaskerSpec::TestDatabase.url).path)
  abort "the app's Tasker database is #{TaskerCore.configuration.database_url.inspect}, not the spec database"
end
# Checked by a spec: booting the app must not have started a worker.
RailsSpec::WORKER_RUNNING_AFTER_BOOT = TaskerCore::Worker.running?

ActiveRecord::Base.connection.create_table(:widgets, force: true) { |t| t.string :name }

RSpec.configure do |config|
  config.expect_with(:rspec) { |c| c.syntax = :expect }
  config.disable_monkey_patching!
  config.order = :defined
  config.include TaskerSpec::Helpers

  config.after(:suite) do
    TaskerCore::Worker.stop(timeout: 5)
    ActiveRecord::Base.connection_pool.disconnect!
    TaskerSpec::TestDatabase.drop
    FileUtils.rm_rf(RailsSpec::APP_ROOT)
  end
end

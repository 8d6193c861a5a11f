# frozen_string_literal: true

# Specs run against the real Postgres (TASKER_TEST_DATABASE_URL, default the local server):
# each run creates its own database, tasker_rspec_<random>, on first use and drops it at
# the end. Slow specs (gem build + install) run only with `--tag slow`.

ENV["TASKER_LOG"] ||= "error"

ROOT = File.expand_path("../../..", __dir__)
$LOAD_PATH.unshift(File.join(ROOT, "workers/ruby/lib"))

require "English"
require "tasker_core"
require_relative "../examples/handlers"
require_relative "support/spec_handlers"
require_relative "support/test_database"
require_relative "support/helpers"

RSpec.configure do |config|
  config.expect_with(:rspec) { |c| c.syntax = :expect }
  config.disable_monkey_patching!
  config.order = :defined
  config.include TaskerSpec::Helpers

  config.filter_run_excluding slow: true unless config.inclusion_filter.rules.key?(:slow)

  config.before(:suite) { TaskerSpec.configure_tasker }
  config.after(:suite) do
    TaskerCore::Worker.stop(timeout: 5)
    TaskerSpec::TestDatabase.drop
  end
end

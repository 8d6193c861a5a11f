# frozen_string_literal: true

require "securerandom"

module TaskerSpec
  # One database per spec run, created and migrated on first use, dropped after the run.
  module TestDatabase
    class << self
      def url
        @url ||= create
      end

      def created?
        !@url.nil?
      end

      def drop
        return unless @url

        TaskerCore::Native.drop_database(@url)
        @url = nil
      end

      private

      def create
        server = ENV.fetch("TASKER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        url = server.sub(%r{/[^/?]*(\?|\z)}) { "/tasker_rspec_#{SecureRandom.hex(6)}#{Regexp.last_match(1)}" }
        TaskerCore::Native.migrate(url)
        url
      end
    end
  end

  SPEC_TEMPLATES = File.join(__dir__, "../fixtures/templates")
  MISSING_TEMPLATES = File.join(__dir__, "../fixtures/missing_templates")

  # The library configured for the specs: the repository's test configuration, the example
  # templates and the spec fixtures, the spec database (created when first needed).
  def self.configure_tasker
    TaskerCore.reset_configuration!
    TaskerCore.configure do |c|
      c.environment = "test"
      c.config_dir = File.join(ROOT, "config/tasker")
      c.template_path = [File.join(ROOT, "config/tasks"), SPEC_TEMPLATES]
    end
  end
end

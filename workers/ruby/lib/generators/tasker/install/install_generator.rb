# frozen_string_literal: true

require "rails/generators"

module Tasker
  module Generators
    # bin/rails generate tasker:install
    #
    # An initializer with the settings commented, config/tasker/templates/ with an example
    # workflow, and its handler under app/handlers/. Files that exist are left as they are.
    class InstallGenerator < ::Rails::Generators::Base
      source_root File.expand_path("templates", __dir__)
      desc "Adds Tasker's initializer, the templates directory and an example workflow"

      def initializer
        copy_file "initializer.rb", "config/initializers/tasker.rb", skip: true
      end

      def example_workflow
        copy_file "hello_world.yaml", "config/tasker/templates/hello_world.yaml", skip: true
        copy_file "greet_handler.rb", "app/handlers/example/greet_handler.rb", skip: true
      end

      def next_steps
        say <<~TEXT

          Next: bin/rails tasker:setup        (Tasker's tables in this app's database, templates registered)
                bin/rails tasker:worker       (a worker; or `plugin :tasker` in config/puma.rb)
                bin/rails generate tasker:workflow NAME --namespace NS --steps a b:a
        TEXT
      end
    end
  end
end

# frozen_string_literal: true

require "rails/generators"

module Tasker
  module Generators
    # bin/rails generate tasker:workflow NAME --namespace NS --steps a b:a c:a,b
    #
    # config/tasker/templates/NAME.yaml (version 1.0.0; `b:a` makes b depend on a, `c:a,b` on
    # both), one handler class per step (app/handlers/ns/a_handler.rb defines Ns::AHandler,
    # returning success with a placeholder result), and spec/workflows/NAME_spec.rb running
    # the workflow when the app uses RSpec.
    class WorkflowGenerator < ::Rails::Generators::NamedBase
      source_root File.expand_path("templates", __dir__)
      desc "Adds a workflow: its template, a handler per step and (with RSpec) a spec"

      class_option :namespace, type: :string, required: true, desc: "The workflow's namespace (its worker queue)"
      class_option :steps, type: :array, required: true, banner: "a b:a c:a,b",
                           desc: "Steps in order, each NAME or NAME:DEPENDENCY,DEPENDENCY"

      Step = Struct.new(:name, :dependencies) do
        def class_name = "#{name.camelize}Handler"
      end

      def check_steps
        names = []
        steps.each do |step|
          unless step.name.match?(/\A[a-z][a-z0-9_]*\z/)
            raise Thor::Error,
                  "step name '#{step.name}' must be snake_case"
          end
          raise Thor::Error, "step '#{step.name}' is named twice" if names.include?(step.name)

          unknown = step.dependencies - names
          raise Thor::Error, "step '#{step.name}' depends on #{unknown.join(", ")}, not an earlier step" if unknown.any?

          names << step.name
        end
        return if workflow_namespace.match?(/\A[a-z][a-z0-9_]*\z/)

        raise Thor::Error, "--namespace '#{workflow_namespace}' must be snake_case"
      end

      def workflow_template
        template "workflow.yaml.tt", "config/tasker/templates/#{file_name}.yaml"
      end

      def handlers
        steps.each do |step|
          @step = step
          template "handler.rb.tt", "app/handlers/#{workflow_namespace}/#{step.name}_handler.rb"
        end
      end

      def workflow_spec
        return unless uses_rspec?

        template "workflow_spec.rb.tt", "spec/workflows/#{file_name}_spec.rb"
      end

      private

      def steps
        @steps ||= options[:steps].map do |spec|
          name, deps = spec.split(":", 2)
          Step.new(name, deps.to_s.split(",").map(&:strip).reject(&:empty?))
        end
      end

      def workflow_namespace
        options[:namespace]
      end

      def module_name
        workflow_namespace.camelize
      end

      def uses_rspec?
        ::Rails.application.config.generators.options.dig(:rails, :test_framework) == :rspec ||
          File.exist?(File.join(destination_root, "spec/spec_helper.rb"))
      end

      def spec_helper
        File.exist?(File.join(destination_root, "spec/rails_helper.rb")) ? "rails_helper" : "spec_helper"
      end
    end
  end
end

# frozen_string_literal: true

module TaskerCore
  # Task templates on the template path, read and validated by the native extension.
  module Templates
    Step = Struct.new(:name, :callable, :dependencies, :timeout_seconds, keyword_init: true)

    Template = Struct.new(:path, :namespace, :name, :version, :steps, keyword_init: true) do
      def identity
        "#{namespace}/#{name}@#{version}"
      end
    end

    class << self
      # Every template below `paths`, as it applies in `environment`. Raises
      # TaskerCore::Native::TemplateError naming the first bad file and field.
      def load(paths = TaskerCore.configuration.template_paths,
               environment: TaskerCore.configuration.environment)
        existing = Array(paths).select { |p| File.exist?(p) }
        return [] if existing.empty?

        Native.load_templates(existing, environment).map do |entry|
          t = entry["template"]
          Template.new(
            path: entry["path"], namespace: t["namespace"], name: t["name"], version: t["version"],
            steps: t["steps"].map do |s|
              Step.new(name: s["name"], callable: s.dig("handler", "callable"),
                       dependencies: s["dependencies"] || [], timeout_seconds: s["timeout_seconds"])
            end
          )
        end
      end

      def namespaces(templates)
        templates.map(&:namespace).uniq.sort
      end
    end
  end
end

# frozen_string_literal: true

require "json"

module TaskerCore
  # What the tasker:* rake tasks do, kept out of the task bodies so they stay small.
  module RakeTasks
    GEM_ROOT = File.expand_path("../../../..", __dir__)
    DEMO_TEMPLATE = File.join(GEM_ROOT, "config/tasks/order_fulfillment.yaml")
    DEMO_HANDLERS = File.join(GEM_ROOT, "workers/ruby/examples/handlers.rb")

    class << self
      def database_url
        TaskerCore.configuration.database_url || TaskerCore.configuration.resolved.dig("database", "url")
      end

      def migrate
        outcome = Native.migrate(database_url)
        puts "#{outcome["created"] ? "created" : "using existing"} database #{outcome["database"]}; " \
             "migrated, PGMQ installed"
      end

      def register_templates
        paths = TaskerCore.configuration.template_paths.select { |p| File.exist?(p) }
        if paths.empty?
          searched = TaskerCore.configuration.template_paths.join(":")
          puts "no template directories found (#{searched}); nothing registered"
          return
        end
        Native.register_templates(database_url, paths, TaskerCore.configuration.environment).each do |t|
          puts "#{t["outcome"].ljust(10)} #{t["identity"]} (#{t["path"]})"
        end
      end

      def validate_templates
        results = Native.validate_templates(TaskerCore.configuration.template_paths)
        results.each do |r|
          puts r["ok"] ? "ok    #{r["path"]} (#{r["identity"]})" : "error #{r["error"]}"
        end
        bad = results.count { |r| !r["ok"] }
        abort "#{bad} template(s) invalid" if bad.positive?
        puts "#{results.size} template(s) valid"
      end

      # Requires every Ruby file named in `spec` (colon-separated files or directories).
      def load_handlers(spec)
        spec.to_s.split(":").reject(&:empty?).each do |path|
          files = File.directory?(path) ? Dir.glob(File.join(path, "**/*.rb")).sort : [path]
          abort "HANDLERS: #{path} does not exist" if files.empty? || !File.exist?(files.first)
          files.each { |f| require File.expand_path(f) }
        end
      end

      def run_worker
        $stdout.sync = true
        Rake::Task[:environment].invoke if Rake::Task.task_defined?(:environment)
        load_handlers(ENV.fetch("HANDLERS", nil))
        defaults = TaskerCore.configuration.worker_options
        namespaces = ENV["NAMESPACES"]&.split(",")&.map(&:strip)&.reject(&:empty?) || defaults[:namespaces]
        concurrency = Integer(ENV.fetch("CONCURRENCY", defaults.fetch(:concurrency, 10)))
        orchestration = ENV["ORCHESTRATION"]&.to_sym || defaults.fetch(:orchestration, :external)
        worker = TaskerCore::Worker.start(namespaces: namespaces, concurrency: concurrency,
                                          orchestration: orchestration)
        puts "worker #{worker.worker_id} serving #{worker.namespaces.join(", ")} with #{concurrency} " \
             "handler threads (orchestration #{orchestration}); SIGTERM or Ctrl-C stops it"
        worker.wait
        puts "worker stopped"
      end

      def demo
        require DEMO_HANDLERS
        TaskerCore.configuration.template_path = [DEMO_TEMPLATE]
        migrate
        events = Queue.new
        subscription = TaskerCore.subscribe("*") { |e| events << e }
        TaskerCore::Worker.start(namespaces: ["ecommerce"], concurrency: 4, orchestration: :embedded)
        begin
          task = TaskerCore::Client.create_task(
            namespace: "ecommerce", name: "order_fulfillment", version: "1.0.0",
            context: { "order_id" => 42, "customer_email" => "demo@example.com",
                       "items" => [{ "sku" => "A", "quantity" => 2, "price" => 10.5 },
                                   { "sku" => "B", "quantity" => 1, "price" => 4.0 }] },
            idempotency_key: "demo-#{Time.now.strftime("%Y%m%d%H%M%S%N")}"
          )
          task = TaskerCore::Client.wait(task, timeout: 60)
          print_task(task, events)
          abort "demo task ended #{task.status}" unless task.complete?
        ensure
          TaskerCore::Worker.stop
          TaskerCore.unsubscribe(subscription)
        end
      end

      private

      def print_task(task, events)
        puts "task #{task.task_uuid} #{task.namespace}/#{task.name}@#{task.version}: #{task.status}"
        task.steps.each do |s|
          puts format("  %-18s %-9s attempts=%d result=%s", s.name, s.status, s.attempts, JSON.generate(s.result))
        end
        names = []
        names << events.pop until events.empty?
        puts "fast domain events: #{names.map(&:name).join(", ")}" unless names.empty?
      end
    end
  end
end

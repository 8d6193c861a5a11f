# frozen_string_literal: true

# Tasker's Ruby side: step handlers, a worker whose handler threads poll the Rust worker
# core (TaskerCore::Native, the native extension), a client for submitting tasks, and
# domain event subscriptions.

require "tasker_core/version"
require "tasker_core/tasker_core"
require "tasker_core/errors"
require "tasker_core/configuration"
require "tasker_core/step_context"
require "tasker_core/step_handler/result"
require "tasker_core/step_handler/base"
require "tasker_core/batches"
require "tasker_core/handler_registry"
require "tasker_core/templates"
require "tasker_core/watchdog"
require "tasker_core/step_runner"
require "tasker_core/handler_pool"
require "tasker_core/events"
require "tasker_core/task"
require "tasker_core/pending_task"
require "tasker_core/client"
require "tasker_core/worker"

module TaskerCore
  class << self
    # Registers a handler for a template callable, in place of (or where there is no)
    # constant of that name. `handler` is a class (instantiated per step) or any object
    # responding to #call(context).
    def register_handler(callable, handler)
      handlers.register(callable, handler)
    end

    # The process-wide handler registry.
    def handlers
      @handlers ||= HandlerRegistry.new
    end

    # Subscribes to `fast` domain events whose name matches `pattern` ("payment.*",
    # "order.validated", "*"). The block runs on the event dispatcher thread.
    def subscribe(pattern, &block)
      events.subscribe(pattern, &block)
    end

    def unsubscribe(subscription)
      events.unsubscribe(subscription)
    end

    def events
      @events ||= Events.new
    end
  end
end

# Loaded by Bundler.require inside a Rails app, after Rails itself.
require "tasker_core/railtie" if defined?(Rails::Railtie)

# frozen_string_literal: true

require "puma/plugin"
require "active_support/lazy_load_hooks"

# `plugin :tasker` in config/puma.rb: a Tasker worker in every Puma process that serves
# requests, as config.tasker says. In cluster mode each Puma worker starts its own after the
# fork (never the master); in single mode the server process starts it once booted. It stops
# with Puma. Puma keeps its own signal handling.
#
# This file loads in the Puma master, possibly before the app: it must not load tasker_core
# itself (its Railtie only installs when Rails is loaded first).
Puma::Plugin.create do
  def config(dsl)
    plugin = self
    dsl.on_worker_boot { plugin.start_worker }
    dsl.on_worker_shutdown { plugin.stop_worker }
  end

  def start(launcher)
    return if launcher.options[:workers].to_i.positive?

    launcher.events.on_booted { start_worker }
    launcher.events.on_stopped { stop_worker }
  end

  # Without preload_app! a cluster worker loads the app after its boot hook: start the
  # worker once the app has initialized (at once when it already has).
  def start_worker
    ActiveSupport.on_load(:after_initialize) do
      TaskerCore::Railtie.start_worker(trap_signals: false)
    end
  end

  def stop_worker
    TaskerCore::Worker.stop if defined?(TaskerCore::Worker)
  end
end

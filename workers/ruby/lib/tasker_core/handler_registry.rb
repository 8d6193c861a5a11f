# frozen_string_literal: true

module TaskerCore
  # Maps a template's handler.callable to the code that runs it: an explicitly registered
  # handler first, else the constant of that name (so `Ecommerce::ChargeCard` finds the
  # class, through autoloading where the app has it).
  class HandlerRegistry
    # How to build a handler for one step.
    Entry = Struct.new(:callable, :handler, :takes_initialization) do
      def build(initialization)
        return handler unless handler.is_a?(Class)

        takes_initialization ? handler.new(initialization) : handler.new
      end
    end

    def initialize
      @explicit = {}
      # Replaced, never mutated, so #resolve can read it without taking the lock.
      @resolved = {}.freeze
      @lock = Mutex.new
    end

    def register(callable, handler)
      entry = entry_for(callable.to_s, handler)
      raise ArgumentError, "handler for '#{callable}' must be a class with #call or respond to #call" unless entry

      @lock.synchronize do
        @explicit[callable.to_s] = entry
        @resolved = @resolved.merge(callable.to_s => entry).freeze
      end
      self
    end

    # The Entry for `callable`, or nil when nothing by that name can run it. Thread-safe;
    # the constant lookup is done once per callable, later calls take no lock.
    def resolve(callable)
      found = @resolved[callable]
      return found if found

      name = callable.to_s
      explicit = @lock.synchronize { @explicit[name] }
      return explicit if explicit

      # Outside the lock: the lookup may autoload a file that registers handlers itself.
      entry = entry_for(name, constant(name))
      @lock.synchronize do
        # A registration made meanwhile wins over the constant.
        return @explicit[name] if @explicit.key?(name)

        @resolved = @resolved.merge(name => entry).freeze if entry
      end
      entry
    end

    # Callables from `callables` that resolve to nothing.
    def missing(callables)
      callables.uniq.reject { |c| resolve(c) }
    end

    # Drops the classes found by constant lookup (explicit registrations stay), so the next
    # lookup finds them again: after Rails reloads code, the old class objects are stale.
    def forget_constants
      @lock.synchronize { @resolved = @explicit.dup.freeze }
    end

    def registered?(callable)
      @lock.synchronize { @explicit.key?(callable.to_s) }
    end

    private

    def constant(name)
      return nil unless name.match?(/\A(::)?[A-Z]\w*(::[A-Z]\w*)*\z/)

      Object.const_get(name)
    rescue NameError
      nil
    end

    def entry_for(name, handler)
      case handler
      when nil then nil
      when Class
        return nil unless handler.method_defined?(:call)

        Entry.new(name, handler, handler.instance_method(:initialize).arity != 0)
      else
        handler.respond_to?(:call) ? Entry.new(name, handler, false) : nil
      end
    end
  end
end

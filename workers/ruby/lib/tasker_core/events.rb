# frozen_string_literal: true

module TaskerCore
  # Subscriptions to `fast` domain events (declared in templates with delivery_mode: fast),
  # and the thread that delivers them while a worker runs.
  class Events
    Event = Struct.new(:event_uuid, :name, :namespace, :task_uuid, :step_uuid, :step_name,
                       :success, :payload, :published_at, keyword_init: true)

    Subscription = Struct.new(:pattern, :block)

    # Glob over dotted names: "payment.*", "*.failed", "{order,payment}.*", "*".
    def self.match?(pattern, name)
      File.fnmatch?(pattern, name, File::FNM_EXTGLOB)
    end

    def initialize
      @lock = Mutex.new
      @subscriptions = []
    end

    def subscribe(pattern, &block)
      raise ArgumentError, "TaskerCore.subscribe needs a block" unless block

      subscription = Subscription.new(pattern.to_s, block)
      @lock.synchronize { @subscriptions += [subscription] }
      subscription
    end

    def unsubscribe(subscription)
      @lock.synchronize { @subscriptions -= [subscription] }
    end

    def clear
      @lock.synchronize { @subscriptions = [] }
    end

    # Delivers one event (the Hash poll_event returns) to every matching subscriber. A
    # subscriber that raises is logged; the others still get the event.
    def dispatch(hash)
      event = Event.new(**hash.transform_keys(&:to_sym).slice(*Event.members))
      @subscriptions.each do |s|
        next unless self.class.match?(s.pattern, event.name)

        begin
          s.block.call(event)
        rescue StandardError => e
          TaskerCore.logger.error("subscriber for '#{s.pattern}' raised on #{event.name}: #{e.class}: #{e.message}")
        end
      end
    end

    # Polls a worker's event stream on one thread until stopped.
    class Dispatcher
      POLL_TIMEOUT = 0.2

      def initialize(source, events)
        @source = source
        @events = events
        @stopping = false
      end

      def start
        @thread = Thread.new do
          Thread.current.name = "tasker-events"
          until @stopping
            event = @source.poll_event(POLL_TIMEOUT)
            break if event == false # the worker stopped and every event was delivered

            @events.dispatch(event) if event
          end
        end
        self
      end

      def stop(timeout = POLL_TIMEOUT * 5)
        @stopping = true
        @thread&.join(timeout) || @thread&.kill
      end
    end
  end
end

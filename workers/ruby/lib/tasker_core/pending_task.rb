# frozen_string_literal: true

module TaskerCore
  # A task requested inside an open Active Record transaction: created when that transaction
  # commits, never if it rolls back. Client.create_task returns one in place of a Task there.
  #
  # It takes part in the transaction the way a record with after_commit/after_rollback
  # callbacks does (Active Record calls committed! / rolledback! on it).
  class PendingTask
    attr_reader :state, :task

    # Defers `create` (which returns the Task) to the commit of the Active Record transaction
    # open on this thread; nil when there is none to join, so the caller creates at once.
    # Transactions that cannot be joined (those of transactional tests) do not defer: Active
    # Record's own after_commit callbacks run without waiting for them either.
    def self.defer(&create)
      connection = open_transaction_connection
      return nil unless connection

      pending = new(create)
      connection.add_transaction_record(pending)
      pending
    end

    def self.open_transaction_connection
      return nil unless defined?(::ActiveRecord::Base)

      # Only a connection this thread already holds can have a transaction open.
      connection = ::ActiveRecord::Base.connection_pool.active_connection?
      connection if connection&.transaction_open? && connection.current_transaction.joinable?
    rescue ::ActiveRecord::ConnectionNotEstablished
      nil
    end
    private_class_method :open_transaction_connection

    def initialize(create)
      @create = create
      @state = :pending
    end

    def pending? = @state == :pending
    def rolled_back? = @state == :rolled_back
    def created? = @state == :created

    # The task's uuid once created; nil before.
    def task_uuid
      @task&.task_uuid
    end

    def to_s
      "#<TaskerCore::PendingTask #{@state}#{" #{task_uuid}" if @task}>"
    end
    alias inspect to_s

    # Active Record's transaction protocol. A failure to create the task raises out of the
    # committing `transaction` block, as an after_commit callback's would.
    def committed!(**)
      return unless pending?

      @state = :creating
      @task = @create.call
      @state = :created
    rescue StandardError
      @state = :failed
      raise
    end

    def rolledback!(**)
      @state = :rolled_back if pending?
    end

    def before_committed!; end

    def trigger_transactional_callbacks?
      true
    end
  end
end

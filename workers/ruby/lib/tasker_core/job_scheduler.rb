# frozen_string_literal: true

require "json"

module TaskerCore
  # Holds Active Job jobs enqueued with set(wait:) / set(wait_until:) until they are due, then
  # creates their tasks. They wait as delayed messages in a PGMQ queue of Tasker's database
  # (invisible until their time; nothing is held in memory, no thread waits per job); every
  # worker serving the active_job namespace runs one thread that reads the due ones about
  # once a second, creates each one's task and only then deletes the message. A worker that
  # dies in between leaves the message to reappear after VISIBILITY_SECONDS; the task's
  # idempotency key (job id and execution count) makes the second creation find the first.
  class JobScheduler
    QUEUE = "tasker_scheduled_jobs"
    POLL_INTERVAL = 1.0
    BATCH = 100
    VISIBILITY_SECONDS = 30

    class << self
      def schedule(job_data, at)
        shared.with do |c|
          c.exec_params("SELECT pgmq.send($1, $2::jsonb, to_timestamp($3))",
                        [QUEUE, JSON.generate(job_data), at.to_f])
        end
      end

      # Worker service: a scheduler for workers that serve the active_job namespace.
      def for_worker(worker)
        new.start if worker.namespaces.include?(ActiveJobTasks::NAMESPACE)
      end

      private

      # One connection per process for enqueueing (reopened after fork).
      def shared
        @shared = nil if @shared && @shared.pid != Process.pid
        @shared ||= Connection.new
      end
    end

    # A PG connection to Tasker's database, used by one thread at a time, opened on first use
    # and once more when it has broken.
    class Connection
      attr_reader :pid

      def initialize
        require "pg"
        @lock = Mutex.new
        @pid = Process.pid
      end

      def with
        @lock.synchronize do
          attempt = 0
          begin
            yield(@conn ||= open)
          rescue PG::ConnectionBad, PG::UnableToSend
            @conn = nil
            attempt += 1
            retry if attempt == 1
            raise
          end
        end
      end

      def close
        @lock.synchronize do
          @conn&.close
          @conn = nil
        end
      end

      private

      def open
        url = TaskerCore.configuration.database_url || TaskerCore.configuration.resolved.dig("database", "url")
        conn = PG.connect(url)
        create_queue(conn)
        conn
      end

      # The first process to use the queue creates it. Two creating it at the same moment
      # can collide in the catalog: the loser finds it made.
      def create_queue(conn)
        return if conn.exec_params("SELECT 1 FROM pgmq.list_queues() WHERE queue_name = $1", [QUEUE]).ntuples.positive?

        conn.exec_params("SELECT pgmq.create($1)", [QUEUE])
      rescue PG::UniqueViolation
        nil
      end
    end

    def initialize
      @connection = Connection.new
      @stopping = false
      @lock = Mutex.new
      @wake = ConditionVariable.new
    end

    def start
      @thread = Thread.new do
        Thread.current.name = "tasker-scheduler"
        run
      end
      self
    end

    def stop
      @lock.synchronize do
        @stopping = true
        @wake.signal
      end
      @thread&.join(POLL_INTERVAL * 5)
      @connection.close
    end

    # Creates the tasks of the jobs now due; returns how many messages it read.
    def hand_over_due
      rows = @connection.with do |c|
        c.exec_params("SELECT msg_id, message FROM pgmq.read($1, $2, $3)", [QUEUE, VISIBILITY_SECONDS, BATCH]).to_a
      end
      rows.each do |row|
        job = JSON.parse(row["message"])
        task = Client.create_now(ActiveJobTasks.request(job, key: "#{job['job_id']}/#{job['executions']}"))
        @connection.with { |c| c.exec_params("SELECT pgmq.delete($1, $2::bigint)", [QUEUE, row["msg_id"]]) }
        TaskerCore.logger.debug("tasker: scheduled job #{job['job_class']} #{job['job_id']} is task #{task.task_uuid}")
      end
      rows.size
    end

    private

    def run
      until @lock.synchronize { @stopping }
        read = begin
          hand_over_due
        rescue StandardError => e
          TaskerCore.logger.error("tasker-scheduler: #{e.class}: #{e.message}")
          0
        end
        # A full batch means more may be due already.
        next if read == BATCH

        @lock.synchronize { @wake.wait(@lock, POLL_INTERVAL) unless @stopping }
      end
    end
  end
end

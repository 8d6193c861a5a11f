-- The waiting-steps gauge walked each worker queue through PGMQ's index on vt, which
-- prepare_queue_table drops, so it read the queue's table whole: every page it ever grew to,
-- since queue vacuums never truncate (100 ms a refresh after a backlog of 100,000 messages).
-- It now walks the queue's primary key.
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;

-- Steps waiting for a worker, as the gauges show them: enqueued steps with a message in a
-- worker queue (a scheduled task's hidden until its run_at), and how long the one visible
-- longest has been visible (a scheduled step waits from its run_at, not its creation). Read
-- from the queues, whose size follows the steps waiting, rather than the steps table, which
-- has no index on the state (its updates are HOT); each message's step is looked at by key,
-- so a stale copy of a claimed step's message does not count. The queues are walked through
-- their primary key (prepare_queue_table drops PGMQ's index on vt): an index scan reads the
-- messages there are, where a scan of the table reads every page it ever grew to (queue
-- vacuums never truncate), so a refresh after a backlog of 100,000 messages read 15,000
-- empty pages, 100 ms, every time.
CREATE OR REPLACE FUNCTION tasker.waiting_steps(OUT waiting bigint, OUT oldest_seconds double precision)
 RETURNS record
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
AS $function$
DECLARE
  v_queue text;
  v_n     bigint;
  v_age   double precision;
BEGIN
  waiting := 0;
  oldest_seconds := 0;
  FOR v_queue IN SELECT m.queue_name FROM pgmq.meta m
                  WHERE m.queue_name LIKE 'worker\_%\_queue' ORDER BY 1 LOOP
    EXECUTE format(
      'SELECT count(DISTINCT s.step_uuid),
              extract(epoch FROM now() - min(greatest(k.enqueued_at, k.vt))
                                           FILTER (WHERE k.vt <= now()))::float8
         FROM (SELECT q.enqueued_at, q.vt,
                      CASE WHEN q.message->>''step_uuid''
                                ~* ''^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$''
                           THEN (q.message->>''step_uuid'')::uuid END AS step
                 FROM pgmq.%I q WHERE q.msg_id > 0) AS k
         JOIN tasker.workflow_steps s ON s.step_uuid = k.step
        WHERE s.state = ''enqueued''', 'q_' || v_queue)
       INTO v_n, v_age;
    waiting := waiting + v_n;
    oldest_seconds := greatest(oldest_seconds, coalesce(v_age, 0));
  END LOOP;
END;
$function$;

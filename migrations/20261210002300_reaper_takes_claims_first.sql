-- reap_dead_workers took each dead worker's claims' rows just before releasing its steps, so
-- with several dead workers it could wait for an expired-claims sweep's row while holding
-- steps released for an earlier one, and the sweep (rows before steps) deadlock with it: it
-- now takes every dead worker's rows before it locks any step.
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;

-- Finds dead workers and releases what they held. A worker is dead when nobody holds its
-- advisory lock any more (its session ended) and it has not been seen for p_grace_ms (a
-- worker that only lost its connection for a moment takes its lock again within that), or
-- when it has not been seen for p_timeout_ms whatever its lock says (its session lingers but
-- the process cannot reach the database). A restart of the database server drops every
-- lock at once, so a worker last seen before the server started is judged by p_timeout_ms
-- counted from the start: live workers reconnect and keep their claims, only those that do
-- not come back are reaped. A dead worker's in-progress steps (found through its rows in
-- tasker.step_claims) go back to enqueued (the attempt counts: the handler may be what
-- killed it), or to error (worker_lost) when that
-- was their last attempt, their tasks finalized; the released steps get new messages (their
-- claims deleted theirs), and hidden messages of enqueued steps in its queues become
-- visible at once (not those of scheduled tasks, still ahead of their run_at); its row is
-- deleted. Rows another reaper is handling are skipped. Returns one row per dead worker: how
-- many steps it held, the queues to wake, and the tasks its lost last attempts failed
-- (their waiters are woken by the caller).
CREATE OR REPLACE FUNCTION tasker.reap_dead_workers(p_grace_ms bigint, p_timeout_ms bigint, p_actor text)
 RETURNS TABLE(worker_id text, released integer, queues text[], failed_tasks uuid[])
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  w       record;
  v_dead  text[] := ARRAY[]::text[];
  v_by    text[];
  v_steps uuid[];
  v_n     integer;
  v_queues text[];
  v_ns    text;
  v_queue text;
  v_shown integer;
  v_failed uuid[];
  v_claimed uuid[];
BEGIN
  FOR w IN SELECT ww.worker_id, ww.lock_key, ww.last_seen_at, ww.namespaces FROM tasker.workers ww
            WHERE ww.last_seen_at < clock_timestamp() - make_interval(secs => p_grace_ms / 1000.0)
            ORDER BY ww.worker_id
            FOR UPDATE SKIP LOCKED LOOP
    -- The transaction-level lock is released at commit; a live worker holds its session
    -- lock, so taking it proves the worker's session is gone, unless the server restarted
    -- since the worker was last seen (then no lock survived, and it may be reconnecting).
    CONTINUE WHEN NOT ((w.last_seen_at >= pg_postmaster_start_time()
                        AND pg_try_advisory_xact_lock(w.lock_key))
                       OR greatest(w.last_seen_at, pg_postmaster_start_time())
                            < clock_timestamp() - make_interval(secs => p_timeout_ms / 1000.0));
    v_dead := v_dead || w.worker_id;
  END LOOP;
  IF cardinality(v_dead) = 0 THEN
    RETURN;
  END IF;
  -- Every dead worker's claims' rows before any step is locked: an expired-claims sweep
  -- locks rows before steps, so a reaper that waited for a sweep's row while holding steps
  -- released for another dead worker could deadlock with it.
  WITH gone AS (
    DELETE FROM tasker.step_claims c WHERE c.worker_id = ANY (v_dead)
    RETURNING c.worker_id, c.steps
  )
  SELECT array_agg(g.worker_id), array_agg(u.step) INTO v_by, v_steps
    FROM gone g CROSS JOIN LATERAL unnest(g.steps) AS u(step);
  FOR w IN SELECT ww.worker_id, ww.namespaces FROM tasker.workers ww
            WHERE ww.worker_id = ANY (v_dead)
            ORDER BY ww.worker_id LOOP
    SELECT coalesce(array_agg(DISTINCT u.step), ARRAY[]::uuid[]) INTO v_claimed
      FROM unnest(v_by, v_steps) AS u(worker_id, step)
     WHERE u.worker_id = w.worker_id;
    SELECT r.released, r.queues, r.failed_tasks INTO v_n, v_queues, v_failed
      FROM tasker.release_lost_claims(
             v_claimed, w.worker_id, p_actor, 'worker_lost') AS r;
    -- Messages of enqueued steps hidden now: any the dead worker had read but not claimed
    -- (a claim taken apart reads first). Visible again at once (a live worker that read
    -- one of those too finds the step claimed and drops it). The message names its step,
    -- and queue tables hold only unfinished messages, so these scans are short.
    FOREACH v_ns IN ARRAY w.namespaces LOOP
      v_queue := 'worker_' || v_ns || '_queue';
      CONTINUE WHEN to_regclass(format('pgmq.%I', 'q_' || v_queue)) IS NULL;
      EXECUTE format(
        'UPDATE pgmq.%1$I SET vt = clock_timestamp()
          WHERE msg_id IN (
            SELECT q.msg_id FROM pgmq.%1$I q
             WHERE q.vt > clock_timestamp()
               AND EXISTS (SELECT 1 FROM tasker.workflow_steps s
                            WHERE s.step_uuid = (q.message->>''step_uuid'')::uuid
                              AND s.state = ''enqueued''
                              AND NOT EXISTS (SELECT 1 FROM tasker.tasks t
                                               WHERE t.task_uuid = s.task_uuid
                                                 AND t.run_at > clock_timestamp()))
               FOR UPDATE SKIP LOCKED)', 'q_' || v_queue);
      GET DIAGNOSTICS v_shown = ROW_COUNT;
      IF v_shown > 0 AND NOT (v_queue = ANY (v_queues)) THEN
        v_queues := v_queues || v_queue;
      END IF;
    END LOOP;
    DELETE FROM tasker.workers ww WHERE ww.worker_id = w.worker_id;
    worker_id := w.worker_id;
    released := v_n;
    queues := v_queues;
    failed_tasks := v_failed;
    RETURN NEXT;
  END LOOP;
END;
$function$;

-- A step whose worker is lost on its last attempt (the reaper, or a claim that finds its
-- lease expired) goes to error with a worker_lost failure instead of back to enqueued: a
-- handler that kills its worker no longer kills worker after worker. The reaper judges a
-- worker last seen before the database server started by liveness_timeout_ms counted from the
-- start, since a restart drops every advisory lock at once, and leaves scheduled tasks'
-- messages hidden.
-- Written by bin/sql-migration from db/ (docs/sql.md).

INSERT INTO tasker.step_state_transitions (from_state, to_state) VALUES ('in_progress', 'error');

SET LOCAL check_function_bodies = off;

-- Claims steps for a worker: each enqueued step (or in_progress one whose lease expired: its
-- worker died) moves to in_progress with this worker as owner, a new attempt and a lease.
-- One row per requested step with its outcome and, when claimed, everything the handler
-- needs (task context, parents' results). Outcomes: claimed; busy (another worker's live
-- lease, lease_expires_at says until when); scheduled (its task's run_at is later: that
-- time is in lease_expires_at); finished (nothing to run); missing. Commits without
-- waiting for the flush: a claim lost in a crash is only a step claimed again.
CREATE OR REPLACE FUNCTION tasker.claim_steps(p_steps uuid[], p_worker text, p_lease_seconds integer)
 RETURNS TABLE(step_uuid uuid, outcome text, lease_expires_at timestamp with time zone, task_uuid uuid, step_name text, namespace text, task_name text, task_version text, attempt integer, max_attempts integer, handler_callable text, handler_initialization jsonb, timeout_seconds integer, publishes_events jsonb, inputs jsonb, task_context jsonb, dependency_results jsonb)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_id      uuid;
  v_lost    uuid[];
  v_poisoned uuid[];
  v_claimed uuid[];
  v_tasks   uuid[];
  v_from    text[];
  v_to      text[];
  v_meta    jsonb[];
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  -- A step whose lease expired on its last attempt fails (its task finalized), so its task
  -- is locked before any step, as every locker of both does. Rare: read without locks.
  SELECT array_agg(DISTINCT k.task_uuid) INTO v_poisoned
    FROM (SELECT s.task_uuid, s.state, s.lease_expires_at, s.attempts, s.max_attempts
            FROM tasker.workflow_steps s WHERE s.step_uuid = ANY (p_steps) OFFSET 0) AS k
   WHERE k.state = 'in_progress' AND k.lease_expires_at <= clock_timestamp()
     AND k.attempts >= k.max_attempts;
  IF v_poisoned IS NOT NULL THEN
    PERFORM 1 FROM tasker.tasks t WHERE t.task_uuid = ANY (v_poisoned)
     ORDER BY t.task_uuid FOR NO KEY UPDATE;
  END IF;
  -- Sorted, so concurrent claimers and cancellations lock rows in one order.
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (p_steps) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  -- A step whose worker died (lease expired) is handed back first, then claimed afresh;
  -- on its last attempt it fails instead (worker_lost).
  FOR v_id IN SELECT k.step_uuid
                FROM (SELECT s.step_uuid, s.state, s.lease_expires_at, s.attempts, s.max_attempts
                        FROM tasker.workflow_steps s
                       WHERE s.step_uuid = ANY (p_steps) OFFSET 0) AS k
               WHERE k.state = 'in_progress' AND k.lease_expires_at <= clock_timestamp()
                 AND k.attempts < k.max_attempts
               ORDER BY k.step_uuid LOOP
    PERFORM tasker.transition_step(v_id, 'in_progress', 'enqueued', p_worker,
                                   jsonb_build_object('reason', 'lease_expired'));
  END LOOP;
  IF v_poisoned IS NOT NULL THEN
    SELECT array_agg(k.step_uuid) INTO v_lost
      FROM (SELECT s.step_uuid, s.task_uuid, s.state, s.lease_expires_at, s.attempts, s.max_attempts
              FROM tasker.workflow_steps s WHERE s.step_uuid = ANY (p_steps) OFFSET 0) AS k
     WHERE k.state = 'in_progress' AND k.lease_expires_at <= clock_timestamp()
       AND k.attempts >= k.max_attempts AND k.task_uuid = ANY (v_poisoned);
    PERFORM tasker.finalize_task(f.t, p_worker)
       FROM tasker.fail_lost_steps(v_lost, NULL, p_worker, 'lease_expired') AS f(t);
  END IF;
  -- The steps are reached by key alone (OFFSET 0 keeps their state out of the scan): the
  -- partial indexes on state hold an entry for every version of a step ever in that
  -- state until a vacuum, and a generic plan that scans one for the state visits them all.
  -- A scheduled task's steps wait for its run_at.
  WITH due AS (
    SELECT k.step_uuid
      FROM (SELECT s.step_uuid, s.state, s.task_uuid FROM tasker.workflow_steps s
             WHERE s.step_uuid = ANY (p_steps) OFFSET 0) AS k
     WHERE k.state = 'enqueued'
       AND NOT EXISTS (SELECT 1 FROM tasker.tasks t
                        WHERE t.task_uuid = k.task_uuid AND t.run_at > clock_timestamp())
  ), claimed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'in_progress', updated_at = now(), attempts = s.attempts + 1,
           claim_owner = p_worker,
           lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           started_at = clock_timestamp()
      FROM due d
     WHERE s.step_uuid = ANY (p_steps) AND s.step_uuid = d.step_uuid
    RETURNING s.step_uuid, s.task_uuid
  )
  SELECT array_agg(c.step_uuid), array_agg(c.task_uuid), array_agg('enqueued'::text),
         array_agg('in_progress'::text), array_agg('{}'::jsonb)
    INTO v_claimed, v_tasks, v_from, v_to, v_meta
    FROM claimed c;
  IF v_claimed IS NOT NULL THEN
    PERFORM tasker.record_step_transitions(v_claimed, v_tasks, v_from, v_to, p_worker, v_meta);
  END IF;
  RETURN QUERY
    SELECT u.id,
           CASE WHEN s.step_uuid IS NULL THEN 'missing'
                WHEN c.step_uuid IS NOT NULL THEN 'claimed'
                WHEN s.state = 'in_progress' THEN 'busy'
                WHEN s.state = 'enqueued' THEN 'scheduled'
                ELSE 'finished' END,
           CASE WHEN s.state = 'in_progress' THEN s.lease_expires_at
                WHEN s.state = 'enqueued' AND c.step_uuid IS NULL
                  THEN (SELECT t.run_at FROM tasker.tasks t WHERE t.task_uuid = s.task_uuid)
           END,
           c.task_uuid, c.name, c.namespace, c.task_name, c.version, c.attempts, c.max_attempts,
           c.handler_callable, c.handler_initialization, c.timeout_seconds,
           c.publishes_events, c.inputs, c.context, c.dependency_results
      FROM (SELECT DISTINCT x AS id FROM unnest(p_steps) AS x) u
      LEFT JOIN tasker.workflow_steps s ON s.step_uuid = u.id AND s.step_uuid = ANY (p_steps)
      LEFT JOIN LATERAL (
        SELECT s.step_uuid, s.task_uuid, s.name, n.name AS namespace, nt.name AS task_name,
               nt.version, s.attempts, s.max_attempts, s.handler_callable,
               s.handler_initialization, s.timeout_seconds, s.publishes_events, s.inputs,
               t.context,
               coalesce((SELECT jsonb_object_agg(ps.name, ps.results)
                           FROM tasker.workflow_step_edges e
                           JOIN tasker.workflow_steps ps ON ps.step_uuid = e.from_step_uuid
                          WHERE e.to_step_uuid = s.step_uuid AND NOT e.gate), '{}'::jsonb)
                 AS dependency_results
          FROM tasker.tasks t
          JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
          JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
         WHERE s.step_uuid = ANY (v_claimed) AND t.task_uuid = s.task_uuid
      ) c ON true
     ORDER BY u.id;
END;
$function$;

-- Steps whose claim was lost (their worker died, or its lease ran out) on their last
-- attempt: error with a worker_lost failure that is not retryable, so a handler that kills
-- its worker (OOM, segfault, exit!) fails its step instead of killing worker after worker.
-- The lost attempt gets its audit row like any failed one. p_worker: the worker lost, when
-- the caller knows it (else the step's claim owner). The caller holds the tasks and then the
-- steps locked, and finalizes the tasks returned (they are blocked by the failure).
CREATE OR REPLACE FUNCTION tasker.fail_lost_steps(p_steps uuid[], p_worker text, p_actor text, p_reason text)
 RETURNS SETOF uuid
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_steps uuid[];
  v_tasks uuid[];
  v_n     integer;
BEGIN
  WITH failed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'error', updated_at = now(), claim_owner = NULL, lease_expires_at = NULL,
           next_retry_at = NULL,
           last_error = jsonb_build_object(
             'message', format('worker %s was lost (%s) while running attempt %s of %s: its process died or lost the database; the step is not run again',
                               coalesce(p_worker, s.claim_owner, 'unknown'), p_reason, s.attempts,
                               s.max_attempts),
             'error_type', 'worker_lost', 'retryable', false,
             'worker_id', coalesce(p_worker, s.claim_owner))
     WHERE s.step_uuid = ANY (p_steps) AND s.state = 'in_progress'
    RETURNING s.step_uuid, s.task_uuid, s.attempts, s.last_error
  ), audited AS (
    INSERT INTO tasker.step_result_audits
      (step_uuid, task_uuid, attempt, worker_id, success, error, execution_time_ms, metadata)
    SELECT f.step_uuid, f.task_uuid, f.attempts, coalesce(f.last_error->>'worker_id', 'unknown'), false,
           f.last_error, 0, jsonb_build_object('reason', p_reason)
      FROM failed f
    ON CONFLICT DO NOTHING
  )
  SELECT array_agg(f.step_uuid ORDER BY f.step_uuid), array_agg(f.task_uuid ORDER BY f.step_uuid)
    INTO v_steps, v_tasks
    FROM failed f;
  v_n := coalesce(cardinality(v_steps), 0);
  IF v_n = 0 THEN
    RETURN;
  END IF;
  PERFORM tasker.record_step_transitions(
    v_steps, v_tasks, array_fill('in_progress'::text, ARRAY[v_n]),
    array_fill('error'::text, ARRAY[v_n]), p_actor,
    array_fill(jsonb_build_object('reason', p_reason, 'worker_id', p_worker), ARRAY[v_n]));
  RETURN QUERY SELECT DISTINCT t FROM unnest(v_tasks) AS t;
END;
$function$;

-- Finds dead workers and releases what they held. A worker is dead when nobody holds its
-- advisory lock any more (its session ended) and it has not been seen for p_grace_ms (a
-- worker that only lost its connection for a moment takes its lock again within that), or
-- when it has not been seen for p_timeout_ms whatever its lock says (its session lingers but
-- the process cannot reach the database). A restart of the database server drops every
-- lock at once, so a worker last seen before the server started is judged by p_timeout_ms
-- counted from the start: live workers reconnect and keep their claims, only those that do
-- not come back are reaped. A dead worker's in-progress steps go back to enqueued (the
-- attempt counts: the handler may be what killed it), or to error (worker_lost) when that
-- was their last attempt, their tasks finalized; the hidden messages of enqueued steps in
-- its queues become visible at once (not those of scheduled tasks, still ahead of their
-- run_at); its row is deleted. Rows another reaper is handling are skipped. Returns one row
-- per dead worker: how many steps it held and the queues to wake.
CREATE OR REPLACE FUNCTION tasker.reap_dead_workers(p_grace_ms bigint, p_timeout_ms bigint, p_actor text)
 RETURNS TABLE(worker_id text, released integer, queues text[])
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  w       record;
  v_steps uuid[];
  v_tasks uuid[];
  v_n     integer;
  v_queues text[];
  v_ns    text;
  v_queue text;
  v_shown integer;
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
    -- Tasks, then steps, each in key order, as every other locker of both.
    PERFORM 1 FROM tasker.tasks t
     WHERE t.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                            WHERE s.state = 'in_progress' AND s.claim_owner = w.worker_id
                              AND s.attempts >= s.max_attempts)
     ORDER BY t.task_uuid FOR NO KEY UPDATE;
    PERFORM 1 FROM tasker.workflow_steps s
     WHERE s.state = 'in_progress' AND s.lease_expires_at IS NOT NULL
       AND s.claim_owner = w.worker_id
     ORDER BY s.step_uuid FOR NO KEY UPDATE;
    PERFORM tasker.finalize_task(f.t, p_actor)
       FROM tasker.fail_lost_steps(
              ARRAY(SELECT s.step_uuid FROM tasker.workflow_steps s
                     WHERE s.state = 'in_progress' AND s.lease_expires_at IS NOT NULL
                       AND s.claim_owner = w.worker_id AND s.attempts >= s.max_attempts),
              w.worker_id, p_actor, 'worker_lost') AS f(t);
    WITH freed AS (
      UPDATE tasker.workflow_steps s
         SET state = 'enqueued', updated_at = now(), claim_owner = NULL,
             lease_expires_at = NULL, enqueued_at = clock_timestamp()
       WHERE s.state = 'in_progress' AND s.lease_expires_at IS NOT NULL
         AND s.claim_owner = w.worker_id
      RETURNING s.step_uuid, s.task_uuid
    )
    SELECT array_agg(r.step_uuid ORDER BY r.step_uuid), array_agg(r.task_uuid ORDER BY r.step_uuid)
      INTO v_steps, v_tasks
      FROM freed r;
    v_n := coalesce(cardinality(v_steps), 0);
    v_queues := '{}';
    IF v_n > 0 THEN
      PERFORM tasker.record_step_transitions(
        v_steps, v_tasks, array_fill('in_progress'::text, ARRAY[v_n]),
        array_fill('enqueued'::text, ARRAY[v_n]), p_actor,
        array_fill(jsonb_build_object('reason', 'worker_lost', 'worker_id', w.worker_id), ARRAY[v_n]));
    END IF;
    -- Messages of enqueued steps that are hidden now: the released steps' own messages, and
    -- any the dead worker had read but not yet claimed. Visible again at once (a live
    -- worker that read one of those too finds the step claimed and defers it). Steps do not
    -- keep their message id; the message names its step, and queue tables hold only
    -- unfinished messages, so these scans are short.
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
      IF v_shown > 0 THEN
        v_queues := v_queues || v_queue;
      END IF;
    END LOOP;
    DELETE FROM tasker.workers ww WHERE ww.worker_id = w.worker_id;
    worker_id := w.worker_id;
    released := v_n;
    queues := v_queues;
    RETURN NEXT;
  END LOOP;
END;
$function$;

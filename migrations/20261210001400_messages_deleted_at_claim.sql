-- A step's queue message was written three times (sent, read, deleted at the recording; issue
-- 28: at most 6 rows written per step). The claim now deletes it: a claimed step's row holds
-- its claim, and whoever releases a claim (reap_dead_workers, release_steps, the new
-- release_expired_claims for leases that ran out under a live worker) sends the step a new
-- message (send_enqueued_step_messages). Recordings no longer delete messages.
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;
DROP FUNCTION IF EXISTS tasker.release_steps(p_steps uuid[], p_worker text);

-- Finds dead workers and releases what they held. A worker is dead when nobody holds its
-- advisory lock any more (its session ended) and it has not been seen for p_grace_ms (a
-- worker that only lost its connection for a moment takes its lock again within that), or
-- when it has not been seen for p_timeout_ms whatever its lock says (its session lingers but
-- the process cannot reach the database). A restart of the database server drops every
-- lock at once, so a worker last seen before the server started is judged by p_timeout_ms
-- counted from the start: live workers reconnect and keep their claims, only those that do
-- not come back are reaped. A dead worker's in-progress steps go back to enqueued (the
-- attempt counts: the handler may be what killed it), or to error (worker_lost) when that
-- was their last attempt, their tasks finalized; the released steps get new messages (their
-- claims deleted theirs), and hidden messages of enqueued steps in its queues become
-- visible at once (not those of scheduled tasks, still ahead of their run_at); its row is
-- deleted. Rows another reaper is handling are skipped. Returns one row
-- per dead worker: how many steps it held, the queues to wake, and the tasks its lost last
-- attempts failed (their waiters are woken by the caller).
CREATE OR REPLACE FUNCTION tasker.reap_dead_workers(p_grace_ms bigint, p_timeout_ms bigint, p_actor text)
 RETURNS TABLE(worker_id text, released integer, queues text[], failed_tasks uuid[])
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  w       record;
  v_steps uuid[];
  v_n     integer;
  v_queues text[];
  v_ns    text;
  v_queue text;
  v_shown integer;
  v_failed uuid[];
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
    v_failed := ARRAY(
      SELECT f.t FROM tasker.fail_lost_steps(
               ARRAY(SELECT s.step_uuid FROM tasker.workflow_steps s
                      WHERE s.state = 'in_progress' AND s.lease_expires_at IS NOT NULL
                        AND s.claim_owner = w.worker_id AND s.attempts >= s.max_attempts),
               w.worker_id, p_actor, 'worker_lost') AS f(t)
       ORDER BY f.t);
    PERFORM tasker.finalize_task(t, p_actor) FROM unnest(v_failed) AS t;
    WITH freed AS (
      UPDATE tasker.workflow_steps s
         SET state = 'enqueued', updated_at = now(), claim_owner = NULL,
             lease_expires_at = NULL, enqueued_at = clock_timestamp(),
             transitions = s.transitions
                           || tasker.transition_entry('in_progress', 'enqueued', p_actor,
                                                     jsonb_build_object('reason', 'worker_lost',
                                                                        'worker_id', w.worker_id))
       WHERE s.state = 'in_progress' AND s.lease_expires_at IS NOT NULL
         AND s.claim_owner = w.worker_id
      RETURNING s.step_uuid
    )
    SELECT array_agg(r.step_uuid ORDER BY r.step_uuid) INTO v_steps FROM freed r;
    v_n := coalesce(cardinality(v_steps), 0);
    -- The released steps' messages were deleted by their claims: each gets a new one.
    v_queues := tasker.send_enqueued_step_messages(coalesce(v_steps, ARRAY[]::uuid[]));
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

-- Claims whose lease ran out although no worker was found dead: the worker lost track of
-- the step, or never learnt it had claimed it (the claim's answer was lost with its
-- connection). A claimed step has no queue message, so nothing else would run it again.
-- Each goes back to enqueued with a new message, or, on its last attempt, fails
-- (worker_lost, lease_expired) and its task is finalized. At most p_limit, oldest lease
-- first; steps another transaction holds are skipped. Returns how many were released, the
-- queues written to and the tasks whose steps failed.
CREATE OR REPLACE FUNCTION tasker.release_expired_claims(p_actor text, p_limit integer)
 RETURNS TABLE(released integer, queues text[], failed_tasks uuid[])
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
AS $function$
DECLARE
  v_expired uuid[];
  v_lost    uuid[];
  v_steps   uuid[];
BEGIN
  -- In-progress steps are the few entries of workflow_steps_claim_owner_idx; read unlocked.
  SELECT array_agg(k.step_uuid) INTO v_expired
    FROM (SELECT s.step_uuid FROM tasker.workflow_steps s
           WHERE s.state = 'in_progress' AND s.claim_owner IS NOT NULL
             AND s.lease_expires_at < clock_timestamp()
           ORDER BY s.lease_expires_at
           LIMIT p_limit) AS k;
  released := 0;
  queues := ARRAY[]::text[];
  failed_tasks := ARRAY[]::uuid[];
  IF v_expired IS NULL THEN
    RETURN NEXT;
    RETURN;
  END IF;
  -- Tasks, then steps, each in key order, as every other locker of both.
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                          WHERE s.step_uuid = ANY (v_expired) AND s.attempts >= s.max_attempts)
   ORDER BY t.task_uuid FOR NO KEY UPDATE;
  SELECT array_agg(s.step_uuid ORDER BY s.step_uuid) INTO v_expired
    FROM (SELECT w.step_uuid FROM tasker.workflow_steps w
           WHERE w.step_uuid = ANY (v_expired)
           ORDER BY w.step_uuid
           FOR NO KEY UPDATE SKIP LOCKED) AS s;
  -- Still expired now that they are locked: a late renewal or recording may have won.
  SELECT array_agg(s.step_uuid) FILTER (WHERE s.attempts >= s.max_attempts),
         array_agg(s.step_uuid) FILTER (WHERE s.attempts < s.max_attempts)
    INTO v_lost, v_steps
    FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (coalesce(v_expired, ARRAY[]::uuid[]))
     AND s.state = 'in_progress' AND s.lease_expires_at < clock_timestamp();
  IF v_lost IS NOT NULL THEN
    failed_tasks := ARRAY(SELECT f.t FROM tasker.fail_lost_steps(v_lost, NULL, p_actor,
                                                                'lease_expired') AS f(t)
                           ORDER BY f.t);
    PERFORM tasker.finalize_task(t, p_actor) FROM unnest(failed_tasks) AS t;
  END IF;
  IF v_steps IS NOT NULL THEN
    UPDATE tasker.workflow_steps s
       SET state = 'enqueued', updated_at = now(), enqueued_at = clock_timestamp(),
           transitions = s.transitions
                         || tasker.transition_entry('in_progress', 'enqueued', p_actor,
                                                   jsonb_build_object('reason', 'lease_expired',
                                                                      'worker_id', s.claim_owner)),
           claim_owner = NULL, lease_expires_at = NULL
     WHERE s.step_uuid = ANY (v_steps);
    released := cardinality(v_steps);
    queues := tasker.send_enqueued_step_messages(v_steps);
  END IF;
  RETURN NEXT;
END;
$function$;

-- Graceful shutdown: a worker hands back steps it claimed but will not finish. The attempt
-- is not counted (no result was recorded), and each step gets a new queue message (its
-- claim deleted the old one) so another worker picks it up. Returns the queues written to.
CREATE OR REPLACE FUNCTION tasker.release_steps(p_steps uuid[], p_worker text)
 RETURNS text[]
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_id       uuid;
  v_released uuid[] := ARRAY[]::uuid[];
BEGIN
  FOR v_id IN SELECT DISTINCT x FROM unnest(p_steps) AS x ORDER BY x LOOP
    IF EXISTS (SELECT 1 FROM tasker.workflow_steps
                WHERE step_uuid = v_id AND state = 'in_progress' AND claim_owner = p_worker
                FOR NO KEY UPDATE) THEN
      PERFORM tasker.transition_step(v_id, 'in_progress', 'enqueued', p_worker,
                                     jsonb_build_object('reason', 'worker_shutdown'));
      UPDATE tasker.workflow_steps
         SET attempts = greatest(attempts - 1, 0), claim_owner = NULL, lease_expires_at = NULL,
             enqueued_at = clock_timestamp()
       WHERE step_uuid = v_id;
      v_released := v_released || v_id;
    END IF;
  END LOOP;
  RETURN tasker.send_enqueued_step_messages(v_released);
END;
$function$;

-- Sends a worker message for each of these steps that is enqueued, in its namespace's
-- queue: for steps released from a claim, whose message the claim deleted (a claimed step
-- has none). Returns the queues written to, for the caller to wake.
CREATE OR REPLACE FUNCTION tasker.send_enqueued_step_messages(p_steps uuid[])
 RETURNS text[]
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
AS $function$
DECLARE
  q        record;
  v_queues text[] := ARRAY[]::text[];
BEGIN
  FOR q IN SELECT n.name AS ns,
                  array_agg(jsonb_build_object('task_uuid', s.task_uuid, 'step_uuid', s.step_uuid,
                                               'step_name', s.name, 'namespace', n.name,
                                               'attempt', s.attempts + 1)
                            ORDER BY s.step_uuid) AS msgs
             FROM tasker.workflow_steps s
             JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
             JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
             JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
            WHERE s.step_uuid = ANY (p_steps) AND s.state = 'enqueued'
            GROUP BY n.name
            ORDER BY n.name LOOP
    PERFORM tasker.send_step_messages(q.ns, q.msgs);
    v_queues := v_queues || ('worker_' || q.ns || '_queue');
  END LOOP;
  RETURN v_queues;
END;
$function$;

-- Stores a batch of results: checks each against the step's claim (state in_progress, this
-- worker, this attempt), stores it (step state, result or error, audit, transition, a
-- decision's or batch's outcome applied). p_send: send each recorded result to the
-- orchestration results queue (steps wait in enqueued_for_orchestration /
-- enqueued_as_error_for_orchestration). Without it the
-- caller applies the results in the same transaction, and a success of a step without an
-- outcome goes straight to complete; decision and batchable steps still pass through
-- enqueued_for_orchestration, because their outcome's new steps count the step as a
-- pending parent until it completes. Returns the recorded results with the state each
-- moved to.
CREATE OR REPLACE FUNCTION tasker.store_step_results(p_worker text, p_results jsonb, p_send boolean)
 RETURNS TABLE(step_uuid uuid, task_uuid uuid, attempt integer, state text)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_ids       uuid[];
  v_steps     uuid[];
  v_tasks     uuid[];
  v_attempts  integer[];
  v_to        text[];
  v_decided   uuid[];
  v_dyn_tasks uuid[];
  t           uuid;
BEGIN
  SELECT array_agg(DISTINCT (x->>'step_uuid')::uuid) INTO v_ids
    FROM jsonb_array_elements(p_results) AS x;
  -- An outcome changes its task (expand_steps locks the task row), so the tasks of decision
  -- and batchable steps are locked first, in order, as everything else locks a task before
  -- its steps. A step's type never changes, so reading it unlocked is safe.
  PERFORM 1 FROM tasker.tasks tt
   WHERE tt.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                           WHERE s.step_uuid = ANY (v_ids)
                             AND s.step_type IN ('decision', 'batchable'))
   ORDER BY tt.task_uuid FOR NO KEY UPDATE;
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (v_ids) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  WITH r AS (
    SELECT DISTINCT ON ((x->>'step_uuid')::uuid)
           (x->>'step_uuid')::uuid AS step_uuid, (x->>'attempt')::integer AS attempt,
           (x->>'success')::boolean AS success, x->'result' AS result,
           CASE WHEN jsonb_typeof(x->'error') = 'object' THEN x->'error' END AS error,
           (x->>'execution_ms')::bigint AS execution_ms,
           CASE WHEN jsonb_typeof(x->'metadata') = 'object' THEN x->'metadata' ELSE '{}'::jsonb END AS metadata,
           CASE WHEN jsonb_typeof(x->'outcome') <> 'null' THEN x->'outcome' END AS outcome
      FROM jsonb_array_elements(p_results) AS x
     ORDER BY (x->>'step_uuid')::uuid
  ), checked AS (
    SELECT c.*,
           CASE WHEN NOT (c.success AND c.bad IS NULL) THEN 'enqueued_as_error_for_orchestration'
                WHEN p_send OR c.step_type IN ('decision', 'batchable')
                  THEN 'enqueued_for_orchestration'
                ELSE 'complete' END AS to_state
      FROM (SELECT r.*, s.step_type,
                   CASE WHEN r.success AND (r.outcome IS NOT NULL
                                            OR s.step_type IN ('decision', 'batchable'))
                        THEN tasker.outcome_error(s.task_uuid, s.name, s.step_type, r.outcome)
                   END AS bad
              FROM r JOIN tasker.workflow_steps s ON s.step_uuid = r.step_uuid
             WHERE s.step_uuid = ANY (v_ids)) AS c
  ), applied AS (
    -- A result that completes its step is audited in the step's row; any other gets a row
    -- in the audit log below.
    UPDATE tasker.workflow_steps s
       SET state = r.to_state,
           completed_at = CASE WHEN r.to_state = 'complete' THEN clock_timestamp()
                               ELSE s.completed_at END,
           updated_at = now(),
           results = CASE WHEN r.success AND r.bad IS NULL THEN r.result ELSE s.results END,
           last_error = CASE WHEN r.success AND r.bad IS NULL THEN NULL
                             ELSE coalesce(r.bad, r.error) END,
           outcome = CASE WHEN r.success AND r.bad IS NULL
                           AND s.step_type IN ('decision', 'batchable')
                          THEN r.outcome ELSE s.outcome END,
           claim_owner = NULL, lease_expires_at = NULL,
           recorded_by = CASE WHEN r.to_state = 'complete' THEN p_worker END,
           execution_time_ms = CASE WHEN r.to_state = 'complete' THEN r.execution_ms END,
           result_metadata = CASE WHEN r.to_state = 'complete' THEN r.metadata END,
           transitions = s.transitions
                         || tasker.transition_entry('in_progress', r.to_state, p_worker,
                                                   jsonb_build_object('attempt', r.attempt,
                                                                      'execution_time_ms', r.execution_ms))
      FROM checked r
     WHERE s.step_uuid = ANY (v_ids) AND s.step_uuid = r.step_uuid AND s.state = 'in_progress'
       AND s.claim_owner = p_worker AND s.attempts = r.attempt
    RETURNING s.step_uuid, s.task_uuid, s.state, r.attempt, r.success AND r.bad IS NULL AS ok,
              r.result, coalesce(r.bad, r.error) AS error, r.execution_ms, r.metadata,
              r.success AND r.bad IS NULL AND s.step_type IN ('decision', 'batchable') AS decided
  ), audited AS (
    INSERT INTO tasker.step_result_audit_log
      (step_uuid, task_uuid, attempt, worker_id, success, result, error, execution_time_ms, metadata)
    SELECT a.step_uuid, a.task_uuid, a.attempt, p_worker, a.ok,
           CASE WHEN a.ok THEN a.result END, CASE WHEN NOT a.ok THEN a.error END,
           a.execution_ms, a.metadata
      FROM applied a
     WHERE a.state <> 'complete'
  ), sent AS (
    INSERT INTO pgmq.q_orchestration_step_results (vt, message)
    SELECT clock_timestamp(), jsonb_build_object(
             'task_uuid', a.task_uuid, 'step_uuid', a.step_uuid, 'attempt', a.attempt,
             'success', a.ok, 'worker_id', p_worker)
      FROM applied a
     WHERE p_send
  )
  SELECT array_agg(a.step_uuid), array_agg(a.task_uuid), array_agg(a.attempt),
         array_agg(a.state),
         array_agg(a.step_uuid) FILTER (WHERE a.decided),
         array_agg(DISTINCT a.task_uuid) FILTER (WHERE a.decided)
    INTO v_steps, v_tasks, v_attempts, v_to, v_decided, v_dyn_tasks
    FROM applied a;
  IF v_steps IS NULL THEN
    RETURN;
  END IF;
  -- A cancelled task gets no new steps: its in-flight results still land, nothing more.
  IF v_decided IS NOT NULL THEN
    SELECT array_agg(s.step_uuid ORDER BY s.step_uuid), array_agg(DISTINCT s.task_uuid)
      INTO v_decided, v_dyn_tasks
      FROM tasker.workflow_steps s JOIN tasker.tasks tt ON tt.task_uuid = s.task_uuid
     WHERE s.step_uuid = ANY (v_decided) AND tt.task_uuid = ANY (v_dyn_tasks)
       AND tt.state <> 'cancelled';
  END IF;
  IF v_decided IS NOT NULL THEN
    PERFORM tasker.create_batch_workers(v_decided, p_worker);
    FOREACH t IN ARRAY v_dyn_tasks LOOP
      PERFORM tasker.expand_steps(t, p_worker);
    END LOOP;
  END IF;
  RETURN QUERY SELECT * FROM unnest(v_steps, v_tasks, v_attempts, v_to);
END;
$function$;

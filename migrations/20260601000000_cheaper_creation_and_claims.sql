-- Hot path v3: creation and claims.
--
-- Profiling the benchmark after hot path v2 (pg_stat_statements, track = all, 1,000 tasks of
-- 10 no-op steps) put task creation first: create_task took more statement time than
-- complete_steps, claim_steps and the queue reads together. Inside it, start_task updated
-- every new root step from pending to enqueued right after inserting it (a second row
-- version with its index entries, in one more statement), and each transition log row and
-- audit row checked its step with a foreign-key query that locks the step row.
--
-- 1. A fixed DAG's root steps are inserted enqueued, with both of their first transitions
--    (NULL -> pending, pending -> enqueued) in the log, and the task row is inserted in
--    steps_in_process with its first four transitions. The history is the same as before.
--    A dynamic task's first steps are enqueued by start_task, from their parent counters,
--    without computing an execution context; both paths send the first messages and write
--    the task's transitions through task_started.
-- 2. Transition log and audit rows no longer have a foreign key to their step: the only
--    writers are the functions that have just locked or created that step. Deleting steps
--    (which deleting their task cascades to) still deletes their log and audit rows, by a
--    statement-level trigger instead of one lookup per row. The index of steps by lease
--    expiry, which no query used, is dropped.
-- 3. Claims and queue reads commit without waiting for their WAL to reach disk
--    (synchronous_commit off for that transaction only). Losing one in a crash only makes a
--    step run again, which the at-least-once contract allows: a claim lost that way has no
--    recorded result behind it, because the result's synchronous commit would have flushed
--    the claim's earlier WAL too. Task creation and results still wait for the flush.

ALTER TABLE tasker.workflow_step_transition_log
  DROP CONSTRAINT workflow_step_transitions_step_uuid_fkey;
ALTER TABLE tasker.step_result_audits DROP CONSTRAINT step_result_audits_step_uuid_fkey;

-- No query looks steps up by lease expiry (a claim checks its step's lease by key, the
-- reaper finds a dead worker's steps by owner), so this index only cost every claim one more
-- index entry.
DROP INDEX tasker.workflow_steps_lease_idx;

CREATE FUNCTION tasker.workflow_steps_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM tasker.workflow_step_transition_log l
   WHERE l.step_uuid IN (SELECT g.step_uuid FROM gone g);
  DELETE FROM tasker.step_result_audits a
   WHERE a.step_uuid IN (SELECT g.step_uuid FROM gone g);
  RETURN NULL;
END;
$$;

CREATE TRIGGER workflow_steps_deleted
  AFTER DELETE ON tasker.workflow_steps
  REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION tasker.workflow_steps_deleted();

-- A new task's first steps are on their way: their worker messages are sent (first
-- attempt) and the task's first four transitions are written, ending in steps_in_process.
-- The caller has enqueued the steps and set the task's state.
CREATE FUNCTION tasker.task_started(
  p_task uuid, p_ns text, p_steps uuid[], p_names text[], p_actor text
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pgmq.send_batch('worker_' || p_ns || '_queue',
    (SELECT array_agg(jsonb_build_object('task_uuid', p_task, 'step_uuid', u.step,
                                         'step_name', u.name, 'namespace', p_ns,
                                         'attempt', 1))
       FROM unnest(p_steps, p_names) AS u(step, name)));
  INSERT INTO tasker.task_transitions
    (task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
  VALUES (p_task, NULL, 'pending', 0, false, p_actor, '{}'),
         (p_task, 'pending', 'initializing', 1, false, p_actor, '{}'),
         (p_task, 'initializing', 'enqueuing_steps', 2, false, p_actor, '{}'),
         (p_task, 'enqueuing_steps', 'steps_in_process', 3, true, p_actor,
          '{"execution_status": "processing"}');
END;
$$;

-- Starts a new task whose steps exist as pending (a dynamic task's, or none), without
-- computing its execution context: every pending step with no parent left to wait for (its
-- counter, set when it was created) is enqueued, and the task goes straight to
-- steps_in_process. A task with no such step (no steps, or steps created without counters)
-- takes the general path: its first finalization decides.
CREATE OR REPLACE FUNCTION tasker.start_task(p_task uuid, p_actor text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  v_state text;
  v_steps uuid[];
  v_names text[];
  v_n     integer;
BEGIN
  SELECT t.state INTO v_state FROM tasker.tasks t WHERE t.task_uuid = p_task;
  IF v_state IS DISTINCT FROM 'pending' THEN
    RAISE EXCEPTION 'task %: cannot start, it is not a new pending task', p_task
      USING ERRCODE = 'check_violation';
  END IF;
  WITH moved AS (
    UPDATE tasker.workflow_steps s
       SET state = 'enqueued', updated_at = now(), enqueued_at = clock_timestamp()
     WHERE s.task_uuid = p_task AND s.state = 'pending' AND s.pending_parents = 0
    RETURNING s.step_uuid, s.name
  )
  SELECT array_agg(m.step_uuid), array_agg(m.name) INTO v_steps, v_names FROM moved m;
  IF v_steps IS NULL THEN
    UPDATE tasker.tasks SET state = 'enqueuing_steps', updated_at = now()
     WHERE task_uuid = p_task;
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, actor)
    VALUES (p_task, NULL, 'pending', 0, false, p_actor),
           (p_task, 'pending', 'initializing', 1, false, p_actor),
           (p_task, 'initializing', 'enqueuing_steps', 2, true, p_actor);
    RETURN tasker.finalize_task(p_task, p_actor);
  END IF;
  v_n := cardinality(v_steps);
  PERFORM tasker.record_step_transitions(
    v_steps, array_fill(p_task, ARRAY[v_n]), array_fill('pending'::text, ARRAY[v_n]),
    array_fill('enqueued'::text, ARRAY[v_n]), p_actor,
    array_fill('{"attempt": 1}'::jsonb, ARRAY[v_n]));
  UPDATE tasker.tasks SET state = 'steps_in_process', updated_at = now()
   WHERE task_uuid = p_task;
  PERFORM tasker.task_started(p_task, tasker.task_namespace(p_task), v_steps, v_names, p_actor);
  RETURN 'steps_in_process';
END;
$$;

-- A task created in one round trip: the task row (or, when its idempotency key is taken,
-- the task that holds it), then either a fixed DAG's steps, edges and first transitions,
-- or a dynamic task's blueprints. A fixed DAG with a root step starts in the same
-- statements: the task row is inserted steps_in_process and its roots enqueued, each with
-- both of its first log rows. Anything else (blueprints, no steps) starts through
-- start_task. Returns the task, whether this call created it, and its state.
CREATE FUNCTION tasker.create_task(
  p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text,
  p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[],
  p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[],
  p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[],
  p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer
) RETURNS TABLE (task_uuid uuid, created boolean, state text)
LANGUAGE plpgsql AS $$
DECLARE
  v_task    uuid;
  v_started boolean := p_blueprints IS NULL AND 0 = ANY (p_parents);
  v_ns      text;
  v_roots   uuid[];
  v_names   text[];
BEGIN
  INSERT INTO tasker.tasks (named_task_uuid, context, idempotency_key, initiator, state)
  VALUES (p_named_task, p_context, p_idempotency_key, p_initiator,
          CASE WHEN v_started THEN 'steps_in_process' ELSE 'pending' END)
  ON CONFLICT (named_task_uuid, idempotency_key) DO NOTHING
  RETURNING tasks.task_uuid INTO v_task;
  IF v_task IS NULL THEN
    -- The key was taken (possibly by a concurrent identical request, which this insert
    -- waited for): hand back that task.
    RETURN QUERY
      SELECT t.task_uuid, false, t.state FROM tasker.tasks t
       WHERE t.named_task_uuid = p_named_task AND t.idempotency_key = p_idempotency_key;
    RETURN;
  END IF;
  IF p_blueprints IS NOT NULL THEN
    -- Only what is certain is created now; the rest waits for outcomes.
    PERFORM tasker.create_dynamic_steps(v_task, p_blueprints, p_max_steps, p_actor);
    RETURN QUERY SELECT v_task, true, tasker.start_task(v_task, p_actor);
    RETURN;
  END IF;
  WITH made AS (
    INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
      handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
      max_backoff_ms, timeout_seconds, publishes_events, parent_count, pending_parents,
      state, enqueued_at)
    SELECT v_task, u.*, u.parents,
           CASE WHEN u.parents = 0 THEN 'enqueued' ELSE 'pending' END,
           CASE WHEN u.parents = 0 THEN clock_timestamp() END
      FROM unnest(p_names, p_positions, p_callables, p_inits, p_max_attempts, p_retryable,
                  p_backoff, p_base_ms, p_max_ms, p_timeouts, p_events, p_parents)
           AS u(name, position, callable, init, max_attempts, retryable, backoff, base_ms,
                max_ms, timeout, events, parents)
    RETURNING workflow_steps.step_uuid, workflow_steps.name, workflow_steps.state
  ), logged AS (
    INSERT INTO tasker.workflow_step_transition_log
      (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
    SELECT m.step_uuid, v_task, NULL, 'pending', 0, p_actor, '{}'::jsonb FROM made m
    UNION ALL
    SELECT m.step_uuid, v_task, 'pending', 'enqueued', 1, p_actor, '{"attempt": 1}'::jsonb
      FROM made m WHERE m.state = 'enqueued'
  ), linked AS (
    INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
    SELECT v_task, f.step_uuid, t.step_uuid
      FROM unnest(p_edge_from, p_edge_to) AS e(from_name, to_name)
      JOIN made f ON f.name = e.from_name
      JOIN made t ON t.name = e.to_name
  )
  SELECT array_agg(m.step_uuid), array_agg(m.name) INTO v_roots, v_names
    FROM made m WHERE m.state = 'enqueued';
  IF NOT v_started THEN
    RETURN QUERY SELECT v_task, true, tasker.start_task(v_task, p_actor);
    RETURN;
  END IF;
  SELECT n.name INTO v_ns
    FROM tasker.named_tasks nt JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
   WHERE nt.named_task_uuid = p_named_task;
  PERFORM tasker.task_started(v_task, v_ns, v_roots, v_names, p_actor);
  RETURN QUERY SELECT v_task, true, 'steps_in_process'::text;
END;
$$;

-- Queue reads: pgmq.read, committed without waiting for the flush (see 3 above).
CREATE FUNCTION tasker.read_messages(p_queue text, p_vt integer, p_qty integer)
RETURNS TABLE (msg_id bigint, read_ct integer, enqueued_at timestamptz, message jsonb)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  RETURN QUERY SELECT r.msg_id, r.read_ct, r.enqueued_at, r.message
                 FROM pgmq.read(p_queue, p_vt, p_qty) AS r;
END;
$$;

-- Claims: as before, committed without waiting for the flush (see 3 above).
CREATE OR REPLACE FUNCTION tasker.claim_steps(p_steps uuid[], p_worker text, p_lease_seconds integer)
RETURNS TABLE (
  step_uuid uuid,
  outcome text,
  lease_expires_at timestamptz,
  task_uuid uuid,
  step_name text,
  namespace text,
  task_name text,
  task_version text,
  attempt integer,
  max_attempts integer,
  handler_callable text,
  handler_initialization jsonb,
  timeout_seconds integer,
  publishes_events jsonb,
  inputs jsonb,
  task_context jsonb,
  dependency_results jsonb
) LANGUAGE plpgsql AS $$
DECLARE
  v_id      uuid;
  v_claimed uuid[];
  v_tasks   uuid[];
  v_from    text[];
  v_to      text[];
  v_meta    jsonb[];
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  -- Sorted, so concurrent claimers and cancellations lock rows in one order.
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (p_steps) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  -- A step whose worker died (lease expired) is handed back first, then claimed afresh.
  FOR v_id IN SELECT s.step_uuid FROM tasker.workflow_steps s
               WHERE s.step_uuid = ANY (p_steps) AND s.state = 'in_progress'
                 AND s.lease_expires_at <= clock_timestamp()
               ORDER BY s.step_uuid LOOP
    PERFORM tasker.transition_step(v_id, 'in_progress', 'enqueued', p_worker,
                                   jsonb_build_object('reason', 'lease_expired'));
  END LOOP;
  WITH claimed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'in_progress', updated_at = now(), attempts = s.attempts + 1,
           claim_owner = p_worker,
           lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           started_at = clock_timestamp()
     WHERE s.step_uuid = ANY (p_steps) AND s.state = 'enqueued'
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
                ELSE 'finished' END,
           CASE WHEN s.state = 'in_progress' THEN s.lease_expires_at END,
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
$$;

ALTER FUNCTION tasker.claim_steps(uuid[], text, integer) SET enable_seqscan = off;
ALTER FUNCTION tasker.claim_steps(uuid[], text, integer) SET plan_cache_mode = force_generic_plan;

ALTER FUNCTION tasker.start_task(uuid, text) SET enable_seqscan = off;
ALTER FUNCTION tasker.start_task(uuid, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tasker.task_started(uuid, text, uuid[], text[], text) SET enable_seqscan = off;
ALTER FUNCTION tasker.task_started(uuid, text, uuid[], text[], text)
  SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tasker.create_task(uuid, jsonb, text, text, text, text[], integer[], text[],
  jsonb[], integer[], boolean[], text[], bigint[], bigint[], integer[], jsonb[], integer[],
  text[], text[], jsonb, integer) SET enable_seqscan = off;
ALTER FUNCTION tasker.create_task(uuid, jsonb, text, text, text, text[], integer[], text[],
  jsonb[], integer[], boolean[], text[], bigint[], bigint[], integer[], jsonb[], integer[],
  text[], text[], jsonb, integer) SET plan_cache_mode = force_generic_plan;

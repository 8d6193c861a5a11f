-- Hot path v4: finalizations that cannot change anything, and the queue-send layers.
--
-- Profiling bin/bench after the worker stopped counting steps awaiting their recording
-- against max_steps_in_flight (pg_stat_statements, track = all): complete_steps finalized
-- every task a batch touched, computing its execution context although most of those tasks
-- still had steps enqueued or running and nothing ready; and every worker message went
-- through pgmq.send_batch, two plpgsql layers around one dynamic INSERT, which cost about
-- as much again as the insert itself.
--
-- 1. complete_steps finalizes a task its successes touched only when finalizing could
--    change something: the task is not steps_in_process, or it has no step enqueued or
--    running, or it has a step that may be ready or decides its fate (pending with no
--    parent left or without counters, a retry whose backoff is over, an error, a step
--    between worker and orchestration). Otherwise finalization would find it processing
--    and leave it as it is; the completion of its last running step finalizes it.
-- 2. tasker.send_step_messages writes a batch of worker messages into the namespace's
--    queue table in one dynamic statement (the same row pgmq.send_batch writes: visible
--    now, no headers). Task start and enqueue_steps_of use it.
-- 3. complete_steps says whether its transaction sent worker messages (column enqueued,
--    from a transaction-local flag that send_step_messages sets). The worker woke its
--    namespace's consumers after every batch, and most of those wake-ups read an empty
--    queue: a step's completion makes new work only when it enqueues children.
-- 4. A worker reads its queue and claims the steps the messages name in one statement: the
--    read is an UPDATE of the queue table in the statement itself, the claim
--    tasker.claim_messages (claim_steps, as before). Reading and claiming were two round
--    trips and two commits per batch, and pgmq.read plans its dynamic SQL on every call.

CREATE FUNCTION tasker.send_step_messages(p_ns text, p_msgs jsonb[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('INSERT INTO pgmq.%I (vt, message) SELECT clock_timestamp(), m FROM unnest($1) AS m',
                 'q_worker_' || p_ns || '_queue')
    USING p_msgs;
  PERFORM set_config('tasker.steps_enqueued', 'on', true);
END;
$$;

CREATE OR REPLACE FUNCTION tasker.task_started(
  p_task uuid, p_ns text, p_steps uuid[], p_names text[], p_actor text
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM tasker.send_step_messages(p_ns,
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

CREATE OR REPLACE FUNCTION tasker.enqueue_steps_of(p_task uuid, p_actor text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  v_ns    text;
  v_steps uuid[];
  v_tasks uuid[];
  v_from  text[];
  v_to    text[];
  v_meta  jsonb[];
  v_msgs  jsonb[];
BEGIN
  v_ns := tasker.task_namespace(p_task);
  WITH ready AS (
    SELECT rs.step_uuid, rs.current_state, rs.name
      FROM tasker.get_step_readiness_status(p_task) rs
     WHERE rs.ready_for_execution
  ), moved AS (
    UPDATE tasker.workflow_steps s
       SET state = 'enqueued', updated_at = now(), enqueued_at = clock_timestamp(),
           next_retry_at = NULL
      FROM ready
     WHERE s.task_uuid = p_task AND s.step_uuid = ready.step_uuid
       AND s.state = ready.current_state
    RETURNING s.step_uuid, ready.current_state AS from_state, s.attempts, ready.name
  )
  SELECT array_agg(step_uuid), array_agg(p_task), array_agg(from_state),
         array_agg('enqueued'::text), array_agg(jsonb_build_object('attempt', attempts + 1)),
         array_agg(jsonb_build_object('task_uuid', p_task, 'step_uuid', step_uuid,
                                      'step_name', name, 'namespace', v_ns,
                                      'attempt', attempts + 1))
    INTO v_steps, v_tasks, v_from, v_to, v_meta, v_msgs
    FROM moved;
  IF v_steps IS NULL THEN
    RETURN 0;
  END IF;
  PERFORM tasker.record_step_transitions(v_steps, v_tasks, v_from, v_to, p_actor, v_meta);
  PERFORM tasker.send_step_messages(v_ns, v_msgs);
  RETURN cardinality(v_steps);
END;
$$;

-- Whether finalizing this task could change anything (see 1 above). The caller holds the
-- task row, so no other transaction changes its steps' states meanwhile.
CREATE FUNCTION tasker.task_needs_finalizing(p_task uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_busy   boolean;
  v_decide boolean;
BEGIN
  IF (SELECT t.state FROM tasker.tasks t WHERE t.task_uuid = p_task)
     IS DISTINCT FROM 'steps_in_process' THEN
    RETURN true;
  END IF;
  SELECT coalesce(bool_or(s.state IN ('enqueued', 'in_progress')), false),
         coalesce(bool_or((s.state = 'pending' AND coalesce(s.pending_parents, 0) = 0)
                          OR (s.state = 'waiting_for_retry'
                              AND (s.next_retry_at IS NULL OR s.next_retry_at <= clock_timestamp()))
                          OR s.state NOT IN ('pending', 'waiting_for_retry', 'enqueued',
                                             'in_progress', 'complete', 'resolved_manually')),
                  false)
    INTO v_busy, v_decide
    FROM tasker.workflow_steps s
   WHERE s.task_uuid = p_task;
  RETURN v_decide OR NOT v_busy;
END;
$$;

DROP FUNCTION tasker.complete_steps(text, jsonb, float8, bigint);

-- As before, and each row says whether this transaction sent worker messages (children
-- enqueued, or a decision's or batch's new steps): only then are there new steps to wake
-- the namespace's workers for.
CREATE FUNCTION tasker.complete_steps(
  p_worker text, p_results jsonb, p_jitter_ratio float8, p_max_retry_after_ms bigint
) RETURNS TABLE (step_uuid uuid, task_uuid uuid, namespace text, outcome text, enqueued boolean)
LANGUAGE plpgsql AS $$
DECLARE
  v_ids         uuid[];
  v_done        uuid[];
  v_done_tasks  uuid[];
  v_steps       uuid[];
  v_tasks       uuid[];
  v_attempts    integer[];
  v_applied     jsonb;
  v_enqueued    boolean;
BEGIN
  PERFORM set_config('tasker.steps_enqueued', 'off', true);
  SELECT array_agg(DISTINCT (x->>'step_uuid')::uuid) INTO v_ids
    FROM jsonb_array_elements(p_results) AS x;
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                          WHERE s.step_uuid = ANY (v_ids))
   ORDER BY t.task_uuid FOR NO KEY UPDATE;
  SELECT array_agg(r.step_uuid ORDER BY r.step_uuid) FILTER (WHERE r.state = 'complete'),
         array_agg(r.task_uuid ORDER BY r.step_uuid) FILTER (WHERE r.state = 'complete'),
         array_agg(r.step_uuid ORDER BY r.task_uuid, r.step_uuid) FILTER (WHERE r.state <> 'complete'),
         array_agg(r.task_uuid ORDER BY r.task_uuid, r.step_uuid) FILTER (WHERE r.state <> 'complete'),
         array_agg(r.attempt ORDER BY r.task_uuid, r.step_uuid) FILTER (WHERE r.state <> 'complete')
    INTO v_done, v_done_tasks, v_steps, v_tasks, v_attempts
    FROM tasker.store_step_results(p_worker, p_results, false) r;
  IF v_done IS NOT NULL THEN
    PERFORM tasker.parents_done(v_done);
  END IF;
  IF v_steps IS NOT NULL THEN
    SELECT jsonb_agg(jsonb_build_object('step', v_steps[a.msg_id], 'task', a.task_uuid,
                                        'ns', a.namespace, 'outcome', a.outcome))
      INTO v_applied
      FROM tasker.apply_step_results(
             (SELECT array_agg(g) FROM generate_series(1, cardinality(v_steps)) AS g),
             v_tasks, v_steps, v_attempts, array_fill(p_worker, ARRAY[cardinality(v_steps)]),
             p_worker, p_jitter_ratio, p_max_retry_after_ms) a;
  END IF;
  IF v_done IS NOT NULL THEN
    -- Tasks the failures above touched are finalized already. Materialized, so each task
    -- is checked once rather than once per step.
    PERFORM tasker.finalize_task(d.t, p_worker)
       FROM (SELECT DISTINCT u.t FROM unnest(v_done_tasks) AS u(t)
              WHERE NOT (u.t = ANY (coalesce(v_tasks, ARRAY[]::uuid[])))
             OFFSET 0) AS d
      WHERE tasker.task_needs_finalizing(d.t)
      ORDER BY d.t;
  END IF;
  v_enqueued := current_setting('tasker.steps_enqueued') = 'on';
  RETURN QUERY
    SELECT (a->>'step')::uuid, (a->>'task')::uuid, a->>'ns', a->>'outcome', v_enqueued
      FROM jsonb_array_elements(coalesce(v_applied, '[]'::jsonb)) AS a;
  IF v_done IS NOT NULL THEN
    RETURN QUERY
      SELECT d.s, d.t, n.ns, 'completed'::text, v_enqueued
        FROM unnest(v_done, v_done_tasks) AS d(s, t)
        JOIN (SELECT u.t, tasker.task_namespace(u.t) AS ns
                FROM (SELECT DISTINCT x AS t FROM unnest(v_done_tasks) AS x) AS u) AS n
          ON n.t = d.t;
  END IF;
  RETURN QUERY
    SELECT id, NULL::uuid, NULL::text, 'refused'::text, v_enqueued
      FROM unnest(v_ids) AS id
     WHERE NOT (id = ANY (coalesce(v_steps, ARRAY[]::uuid[]) || coalesce(v_done, ARRAY[]::uuid[])));
END;
$$;

-- A message read from a worker queue, the step it names and that step's claim.
CREATE TYPE tasker.message_claim AS (
  msg_id bigint,
  message jsonb,
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
);

-- Claims the steps named by messages just read (ids and bodies in one order), committing
-- without waiting for the flush as reads and claims do. One row per message, in that
-- order: the step it names (NULL when it names none: a malformed message, for the caller to
-- set aside) and that step's claim_steps row; messages naming the same step share it.
CREATE FUNCTION tasker.claim_messages(
  p_ids bigint[], p_msgs jsonb[], p_worker text, p_lease_seconds integer
) RETURNS SETOF tasker.message_claim LANGUAGE plpgsql AS $$
DECLARE
  v_named uuid[];
  v_steps uuid[];
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  IF p_ids IS NULL THEN
    RETURN;
  END IF;
  SELECT array_agg(CASE WHEN jsonb_typeof(u.m) = 'object'
                         AND u.m->>'step_uuid' ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                        THEN (u.m->>'step_uuid')::uuid END ORDER BY u.i)
    INTO v_named
    FROM unnest(p_msgs) WITH ORDINALITY AS u(m, i);
  SELECT array_agg(DISTINCT x) INTO v_steps FROM unnest(v_named) AS x WHERE x IS NOT NULL;
  RETURN QUERY
    SELECT u.id, u.m, u.step, c.outcome, c.lease_expires_at, c.task_uuid, c.step_name,
           c.namespace, c.task_name, c.task_version, c.attempt, c.max_attempts,
           c.handler_callable, c.handler_initialization, c.timeout_seconds,
           c.publishes_events, c.inputs, c.task_context, c.dependency_results
      FROM unnest(p_ids, p_msgs, v_named) WITH ORDINALITY AS u(id, m, step, i)
      LEFT JOIN tasker.claim_steps(coalesce(v_steps, ARRAY[]::uuid[]), p_worker, p_lease_seconds) AS c
        ON c.step_uuid = u.step
     ORDER BY u.i;
END;
$$;

-- CREATE OR REPLACE drops a function's settings. Only the entry points carry them: the
-- functions they call run under them, and a SET clause costs every call a save and restore.
ALTER FUNCTION tasker.complete_steps(text, jsonb, float8, bigint) SET enable_seqscan = off;
ALTER FUNCTION tasker.complete_steps(text, jsonb, float8, bigint)
  SET plan_cache_mode = force_generic_plan;

-- create_task, create_task_read and create_tasks take a task as one tasker.task_spec (its
-- steps as tasker.step_spec values, parents by name, position by place) instead of a
-- column array per field.
-- Written by bin/sql-migration from db/ (docs/sql.md).

CREATE TYPE tasker.step_spec AS (
	name text,
	handler_callable text,
	handler_initialization jsonb,
	max_attempts integer,
	retryable boolean,
	backoff text,
	backoff_base_ms bigint,
	max_backoff_ms bigint,
	timeout_seconds integer,
	publishes_events jsonb,
	dependencies text[]
);

CREATE TYPE tasker.task_spec AS (
	named_task_uuid uuid,
	context jsonb,
	idempotency_key text,
	initiator text,
	steps tasker.step_spec[]
);

SET LOCAL check_function_bodies = off;
DROP FUNCTION IF EXISTS tasker.create_task(p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text, p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[], p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[], p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[], p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean, p_claim_worker text, p_claims boolean[], p_lease_seconds integer, p_run_at timestamp with time zone);
DROP FUNCTION IF EXISTS tasker.create_task_read(p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text, p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[], p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[], p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[], p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean, p_claim_worker text, p_claims boolean[], p_lease_seconds integer, p_run_at timestamp with time zone);
DROP FUNCTION IF EXISTS tasker.create_tasks(p_ns text, p_actor text, p_named_tasks uuid[], p_contexts jsonb[], p_keys text[], p_initiators text[], p_step_task integer[], p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[], p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[], p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[], p_edge_task integer[], p_edge_from text[], p_edge_to text[]);

-- Creates one task with its steps, edges, parent counters and first transitions, and starts
-- it: roots enqueued (their messages inserted into the namespace queue unless p_hold_roots,
-- when the caller sends them), or, for a dynamic task, its blueprints stored and the
-- certain steps created. p_claim_worker with p_claim_roots: that many roots, first in
-- template order, are claimed for that worker (a worker in the creating process) in this
-- transaction instead of being queued. p_run_at in the future schedules the task: nothing
-- is claimed at creation, the roots are enqueued with their messages hidden until then,
-- and claim_steps refuses its steps until then. An idempotency key already taken returns
-- the existing task (created false).
CREATE OR REPLACE FUNCTION tasker.create_task(p_actor text, p_task tasker.task_spec, p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean DEFAULT false, p_claim_worker text DEFAULT NULL::text, p_claim_roots integer DEFAULT 0, p_lease_seconds integer DEFAULT 0, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS TABLE(task_uuid uuid, created boolean, state text, messages jsonb, claimed uuid[], lease_expires_at timestamp with time zone)
 LANGUAGE plpgsql
 ROWS 1
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_task    uuid;
  v_started boolean := p_blueprints IS NULL
                        AND EXISTS (SELECT 1 FROM unnest((p_task).steps) AS s
                                     WHERE coalesce(cardinality(s.dependencies), 0) = 0);
  v_ns      text;
  v_roots   uuid[];
  v_names   text[];
  v_claimed uuid[];
  v_lease   timestamptz := clock_timestamp() + make_interval(secs => p_lease_seconds);
  v_later   boolean := p_run_at > clock_timestamp();
BEGIN
  INSERT INTO tasker.tasks (named_task_uuid, context, idempotency_key, initiator, state, run_at)
  VALUES ((p_task).named_task_uuid, (p_task).context, (p_task).idempotency_key,
          (p_task).initiator,
          CASE WHEN v_started THEN 'steps_in_process' ELSE 'pending' END, p_run_at)
  ON CONFLICT (named_task_uuid, idempotency_key) DO NOTHING
  RETURNING tasks.task_uuid INTO v_task;
  IF v_task IS NULL THEN
    -- The key was taken (possibly by a concurrent identical request, which this insert
    -- waited for): hand back that task.
    RETURN QUERY
      SELECT t.task_uuid, false, t.state, NULL::jsonb, NULL::uuid[], NULL::timestamptz
        FROM tasker.tasks t
       WHERE t.named_task_uuid = (p_task).named_task_uuid
         AND t.idempotency_key = (p_task).idempotency_key;
    RETURN;
  END IF;
  IF p_blueprints IS NOT NULL THEN
    -- Only what is certain is created now; the rest waits for outcomes.
    PERFORM tasker.create_dynamic_steps(v_task, p_blueprints, p_max_steps, p_actor);
    RETURN QUERY SELECT v_task, true, tasker.start_task(v_task, p_actor), NULL::jsonb,
                        NULL::uuid[], NULL::timestamptz;
    RETURN;
  END IF;
  WITH spec AS (
    SELECT u.*, (u.n - 1)::integer AS position,
           coalesce(cardinality(u.dependencies), 0) AS parents
      FROM unnest((p_task).steps) WITH ORDINALITY
           AS u(name, callable, init, max_attempts, retryable, backoff, base_ms, max_ms,
                timeout, events, dependencies, n)
  ), made AS (
    INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
      handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
      max_backoff_ms, timeout_seconds, publishes_events, parent_count, pending_parents,
      state, enqueued_at, attempts, claim_owner, lease_expires_at, started_at)
    SELECT v_task, u.name, u.position, u.callable, u.init, u.max_attempts, u.retryable,
           u.backoff, u.base_ms, u.max_ms, u.timeout, u.events, u.parents, u.parents,
           CASE WHEN u.parents > 0 THEN 'pending'
                WHEN u.claimed THEN 'in_progress' ELSE 'enqueued' END,
           CASE WHEN u.parents = 0 THEN greatest(clock_timestamp(), p_run_at) END,
           CASE WHEN u.claimed THEN 1 ELSE 0 END,
           CASE WHEN u.claimed THEN p_claim_worker END,
           CASE WHEN u.claimed THEN v_lease END,
           CASE WHEN u.claimed THEN clock_timestamp() END
      FROM (SELECT s.*, s.parents = 0 AND p_claim_worker IS NOT NULL AND v_later IS NOT TRUE
                        AND row_number() OVER (PARTITION BY s.parents = 0 ORDER BY s.position)
                            <= p_claim_roots AS claimed
              FROM spec s) AS u
    RETURNING workflow_steps.step_uuid, workflow_steps.name, workflow_steps.state
  ), logged AS (
    INSERT INTO tasker.workflow_step_transition_log
      (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
    SELECT m.step_uuid, v_task, NULL, 'pending', 0, p_actor, '{}'::jsonb FROM made m
    UNION ALL
    SELECT m.step_uuid, v_task, 'pending', 'enqueued', 1, p_actor, '{"attempt": 1}'::jsonb
      FROM made m WHERE m.state IN ('enqueued', 'in_progress')
    UNION ALL
    SELECT m.step_uuid, v_task, 'enqueued', 'in_progress', 2, p_claim_worker, '{}'::jsonb
      FROM made m WHERE m.state = 'in_progress'
  ), linked AS (
    INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
    SELECT v_task, f.step_uuid, t.step_uuid
      FROM spec s
     CROSS JOIN LATERAL unnest(s.dependencies) AS d(parent)
      JOIN made f ON f.name = d.parent
      JOIN made t ON t.name = s.name
  )
  SELECT array_agg(m.step_uuid), array_agg(m.name),
         array_agg(m.step_uuid) FILTER (WHERE m.state = 'in_progress')
    INTO v_roots, v_names, v_claimed
    FROM made m WHERE m.state IN ('enqueued', 'in_progress');
  IF NOT v_started THEN
    RETURN QUERY SELECT v_task, true, tasker.start_task(v_task, p_actor), NULL::jsonb,
                        NULL::uuid[], NULL::timestamptz;
    RETURN;
  END IF;
  SELECT n.name INTO v_ns
    FROM tasker.named_tasks nt JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
   WHERE nt.named_task_uuid = (p_task).named_task_uuid;
  -- Claimed roots are only claimed by a caller that sends their messages (as read).
  IF v_claimed IS NOT NULL AND NOT p_hold_roots THEN
    RAISE EXCEPTION 'task %: roots claimed at creation need p_hold_roots', v_task
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM tasker.task_started(v_task, v_ns, v_roots, v_names, p_actor, NOT p_hold_roots,
                              p_run_at);
  -- The roots' messages built here rather than by tasker.root_messages: a SQL function's
  -- body is planned on every call, this statement once per connection.
  RETURN QUERY SELECT v_task, true, 'steps_in_process'::text,
    CASE WHEN p_hold_roots THEN
      (SELECT jsonb_agg(jsonb_build_object('task_uuid', v_task, 'step_uuid', u.step,
                                           'step_name', u.name, 'namespace', v_ns,
                                           'attempt', 1))
         FROM unnest(v_roots, v_names) AS u(step, name))
    END,
    v_claimed, CASE WHEN v_claimed IS NOT NULL THEN v_lease END;
END;
$function$;

-- create_task, then the task and its steps read back as JSON in the same call (one round
-- trip for a creating client).
CREATE OR REPLACE FUNCTION tasker.create_task_read(p_actor text, p_task tasker.task_spec, p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean DEFAULT false, p_claim_worker text DEFAULT NULL::text, p_claim_roots integer DEFAULT 0, p_lease_seconds integer DEFAULT 0, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS TABLE(task_uuid uuid, created boolean, state text, task json, steps json, messages jsonb, claimed uuid[], lease_expires_at timestamp with time zone)
 LANGUAGE plpgsql
 ROWS 1
AS $function$
DECLARE
  v_task     uuid;
  v_created  boolean;
  v_state    text;
  v_messages jsonb;
  v_claimed  uuid[];
  v_lease    timestamptz;
BEGIN
  SELECT c.task_uuid, c.created, c.state, c.messages, c.claimed, c.lease_expires_at
    INTO v_task, v_created, v_state, v_messages, v_claimed, v_lease
    FROM tasker.create_task(p_actor, p_task, p_blueprints, p_max_steps, p_hold_roots,
           p_claim_worker, p_claim_roots, p_lease_seconds, p_run_at) AS c;
  RETURN QUERY SELECT v_task, v_created, v_state,
    (SELECT to_json(r) FROM tasker.task_rows r WHERE r.task_uuid = v_task),
    (SELECT coalesce(json_agg(to_json(s) ORDER BY s.position, s.name), '[]'::json)
       FROM tasker.step_rows s WHERE s.task_uuid = v_task),
    v_messages, v_claimed, v_lease;
END;
$function$;

-- Creates a batch of fixed-DAG tasks of one namespace in one statement per table (the
-- creation batcher's path): tasks, steps, edges, transitions and root messages. Requests are
-- numbered 1..n in p_tasks' order. One row per request: its task, whether it was created (an
-- idempotency key already taken returns the existing task) and its state.
CREATE OR REPLACE FUNCTION tasker.create_tasks(p_ns text, p_actor text, p_tasks tasker.task_spec[])
 RETURNS TABLE(idx integer, task_uuid uuid, created boolean, state text)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_idx   integer[];
  v_tasks uuid[];
  v_msgs  jsonb[];
BEGIN
  -- Materialized (it is read twice), so each task's generated key is drawn once.
  WITH req AS (
    SELECT u.i::integer AS i, tasker.uuid_v7() AS id, u.nt, u.ctx, u.k, u.ini
      FROM unnest(p_tasks) WITH ORDINALITY AS u(nt, ctx, k, ini, steps, i)
  ), made AS (
    INSERT INTO tasker.tasks AS t (task_uuid, named_task_uuid, context, idempotency_key,
                                   initiator, state)
    SELECT r.id, r.nt, r.ctx, r.k, r.ini, 'steps_in_process' FROM req r ORDER BY r.i
    ON CONFLICT (named_task_uuid, idempotency_key) DO NOTHING
    RETURNING t.task_uuid
  )
  SELECT array_agg(r.i ORDER BY r.i), array_agg(r.id ORDER BY r.i) INTO v_idx, v_tasks
    FROM req r JOIN made m ON m.task_uuid = r.id;
  IF v_tasks IS NOT NULL THEN
    WITH spec AS (
      SELECT c.id, u.name, (u.n - 1)::integer AS position, u.callable, u.init,
             u.max_attempts, u.retryable, u.backoff, u.base_ms, u.max_ms, u.timeout,
             u.events, u.dependencies, coalesce(cardinality(u.dependencies), 0) AS parents
        FROM unnest(p_tasks) WITH ORDINALITY AS r(nt, ctx, k, ini, steps, i)
        JOIN unnest(v_idx, v_tasks) AS c(i, id) ON c.i = r.i
       CROSS JOIN LATERAL unnest(r.steps) WITH ORDINALITY
             AS u(name, callable, init, max_attempts, retryable, backoff, base_ms, max_ms,
                  timeout, events, dependencies, n)
    ), made AS (
      INSERT INTO tasker.workflow_steps AS s (task_uuid, name, position, handler_callable,
        handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
        max_backoff_ms, timeout_seconds, publishes_events, parent_count, pending_parents,
        state, enqueued_at)
      SELECT u.id, u.name, u.position, u.callable, u.init, u.max_attempts, u.retryable,
             u.backoff, u.base_ms, u.max_ms, u.timeout, u.events, u.parents, u.parents,
             CASE WHEN u.parents = 0 THEN 'enqueued' ELSE 'pending' END,
             CASE WHEN u.parents = 0 THEN clock_timestamp() END
        FROM spec u
      RETURNING s.step_uuid, s.task_uuid, s.name, s.state
    ), logged AS (
      INSERT INTO tasker.workflow_step_transition_log
        (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
      SELECT m.step_uuid, m.task_uuid, NULL, 'pending', 0, p_actor, '{}'::jsonb FROM made m
      UNION ALL
      SELECT m.step_uuid, m.task_uuid, 'pending', 'enqueued', 1, p_actor,
             '{"attempt": 1}'::jsonb
        FROM made m WHERE m.state = 'enqueued'
    ), linked AS (
      INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
      SELECT u.id, f.step_uuid, t.step_uuid
        FROM spec u
       CROSS JOIN LATERAL unnest(u.dependencies) AS d(parent)
        JOIN made f ON f.task_uuid = u.id AND f.name = d.parent
        JOIN made t ON t.task_uuid = u.id AND t.name = u.name
    )
    SELECT array_agg(jsonb_build_object('task_uuid', m.task_uuid, 'step_uuid', m.step_uuid,
                                        'step_name', m.name, 'namespace', p_ns,
                                        'attempt', 1))
      INTO v_msgs
      FROM made m WHERE m.state = 'enqueued';
    IF v_msgs IS NOT NULL THEN
      PERFORM tasker.send_step_messages(p_ns, v_msgs);
    END IF;
    INSERT INTO tasker.task_transitions
      (task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
    SELECT c.id, f.from_state, f.to_state, f.sort_key, f.most_recent, p_actor, f.metadata
      FROM unnest(v_tasks) AS c(id)
     CROSS JOIN (VALUES (NULL, 'pending', 0, false, '{}'::jsonb),
                        ('pending', 'initializing', 1, false, '{}'::jsonb),
                        ('initializing', 'enqueuing_steps', 2, false, '{}'::jsonb),
                        ('enqueuing_steps', 'steps_in_process', 3, true,
                         '{"execution_status": "processing"}'::jsonb))
           AS f(from_state, to_state, sort_key, most_recent, metadata);
  END IF;
  RETURN QUERY
    SELECT c.i, c.id, true, 'steps_in_process'::text
      FROM unnest(v_idx, v_tasks) AS c(i, id)
    UNION ALL
    -- The key was taken (by an earlier request of this batch, or a concurrent one whose
    -- insert this one waited for): that task.
    SELECT r.i::integer, t.task_uuid, false, t.state
      FROM unnest(p_tasks) WITH ORDINALITY AS r(nt, ctx, k, ini, steps, i)
      JOIN tasker.tasks t ON t.named_task_uuid = r.nt AND t.idempotency_key = r.k
     WHERE NOT (r.i::integer = ANY (coalesce(v_idx, ARRAY[]::integer[])));
END;
$function$;

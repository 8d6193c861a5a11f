-- A creation's root messages inserted by its caller's statement.
--
-- A process that creates tasks one by one (the README's Ruby example) waits for each
-- creation: it is that process's critical path. tasker.create_task sent a new task's root
-- messages with send_step_messages, a dynamic INSERT parsed and planned on every call
-- (0.29 ms of statement time per creation under load, 0.08 ms of it the INSERT itself),
-- and tasker.create_task_read built the task and its steps as jsonb.
--
-- With p_hold_roots, tasker.create_task and tasker.create_task_read return the roots'
-- messages instead of sending them, and the caller, which knows the namespace's queue,
-- inserts them in the same statement with a static INSERT, prepared once per connection
-- (as recordings insert the children they enqueue). tasker.create_task_read's task and
-- steps come back as json, cheaper to build than jsonb and read the same way.

DROP FUNCTION tasker.task_started(uuid, text, uuid[], text[], text);

-- A started task's root messages, as its workers read them.
CREATE FUNCTION tasker.root_messages(p_task uuid, p_ns text, p_steps uuid[], p_names text[])
RETURNS jsonb[] LANGUAGE sql STABLE AS $$
  SELECT array_agg(jsonb_build_object('task_uuid', p_task, 'step_uuid', u.step,
                                      'step_name', u.name, 'namespace', p_ns, 'attempt', 1))
    FROM unnest(p_steps, p_names) AS u(step, name)
$$;

-- p_send false: the caller sends the roots' messages itself.
CREATE FUNCTION tasker.task_started(
  p_task uuid, p_ns text, p_steps uuid[], p_names text[], p_actor text,
  p_send boolean DEFAULT true
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_send THEN
    PERFORM tasker.send_step_messages(p_ns,
                                      tasker.root_messages(p_task, p_ns, p_steps, p_names));
  END IF;
  INSERT INTO tasker.task_transitions
    (task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
  VALUES (p_task, NULL, 'pending', 0, false, p_actor, '{}'),
         (p_task, 'pending', 'initializing', 1, false, p_actor, '{}'),
         (p_task, 'initializing', 'enqueuing_steps', 2, false, p_actor, '{}'),
         (p_task, 'enqueuing_steps', 'steps_in_process', 3, true, p_actor,
          '{"execution_status": "processing"}');
END;
$$;

DROP FUNCTION tasker.create_task(uuid, jsonb, text, text, text, text[], integer[], text[],
  jsonb[], integer[], boolean[], text[], bigint[], bigint[], integer[], jsonb[], integer[],
  text[], text[], jsonb, integer);

-- As before; with p_hold_roots a fixed DAG's roots are enqueued without their messages,
-- which come back in `messages` for the caller to send (NULL otherwise).
CREATE FUNCTION tasker.create_task(
  p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text,
  p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[],
  p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[],
  p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[],
  p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer,
  p_hold_roots boolean DEFAULT false
) RETURNS TABLE (task_uuid uuid, created boolean, state text, messages jsonb)
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
      SELECT t.task_uuid, false, t.state, NULL::jsonb FROM tasker.tasks t
       WHERE t.named_task_uuid = p_named_task AND t.idempotency_key = p_idempotency_key;
    RETURN;
  END IF;
  IF p_blueprints IS NOT NULL THEN
    -- Only what is certain is created now; the rest waits for outcomes.
    PERFORM tasker.create_dynamic_steps(v_task, p_blueprints, p_max_steps, p_actor);
    RETURN QUERY SELECT v_task, true, tasker.start_task(v_task, p_actor), NULL::jsonb;
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
    RETURN QUERY SELECT v_task, true, tasker.start_task(v_task, p_actor), NULL::jsonb;
    RETURN;
  END IF;
  SELECT n.name INTO v_ns
    FROM tasker.named_tasks nt JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
   WHERE nt.named_task_uuid = p_named_task;
  PERFORM tasker.task_started(v_task, v_ns, v_roots, v_names, p_actor, NOT p_hold_roots);
  RETURN QUERY SELECT v_task, true, 'steps_in_process'::text,
    CASE WHEN p_hold_roots
         THEN to_jsonb(tasker.root_messages(v_task, v_ns, v_roots, v_names)) END;
END;
$$;

DROP FUNCTION tasker.create_task_read(uuid, jsonb, text, text, text, text[], integer[], text[],
  jsonb[], integer[], boolean[], text[], bigint[], bigint[], integer[], jsonb[], integer[],
  text[], text[], jsonb, integer);

-- As before, with the task and steps as json; with p_hold_roots, `messages` holds the
-- messages of the roots a fixed DAG started with, for the caller to send (NULL when the task
-- existed, or did not start at creation, a dynamic template or a DAG without a root: their
-- messages were sent).
CREATE FUNCTION tasker.create_task_read(
  p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text,
  p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[],
  p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[],
  p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[],
  p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer,
  p_hold_roots boolean DEFAULT false
) RETURNS TABLE (task_uuid uuid, created boolean, state text, task json, steps json,
                 messages jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  v_task     uuid;
  v_created  boolean;
  v_state    text;
  v_messages jsonb;
BEGIN
  SELECT c.task_uuid, c.created, c.state, c.messages
    INTO v_task, v_created, v_state, v_messages
    FROM tasker.create_task(p_named_task, p_context, p_idempotency_key, p_initiator, p_actor,
           p_names, p_positions, p_callables, p_inits, p_max_attempts, p_retryable, p_backoff,
           p_base_ms, p_max_ms, p_timeouts, p_events, p_parents, p_edge_from, p_edge_to,
           p_blueprints, p_max_steps, p_hold_roots) AS c;
  RETURN QUERY SELECT v_task, v_created, v_state,
    (SELECT to_json(r) FROM tasker.task_rows r WHERE r.task_uuid = v_task),
    (SELECT coalesce(json_agg(to_json(s) ORDER BY s.position, s.name), '[]'::json)
       FROM tasker.step_rows s WHERE s.task_uuid = v_task),
    v_messages;
END;
$$;

-- DROP FUNCTION took the settings with it.
ALTER FUNCTION tasker.task_started(uuid, text, uuid[], text[], text, boolean)
  SET enable_seqscan = off;
ALTER FUNCTION tasker.task_started(uuid, text, uuid[], text[], text, boolean)
  SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tasker.create_task(uuid, jsonb, text, text, text, text[], integer[], text[],
  jsonb[], integer[], boolean[], text[], bigint[], bigint[], integer[], jsonb[], integer[],
  text[], text[], jsonb, integer, boolean) SET enable_seqscan = off;
ALTER FUNCTION tasker.create_task(uuid, jsonb, text, text, text, text[], integer[], text[],
  jsonb[], integer[], boolean[], text[], bigint[], bigint[], integer[], jsonb[], integer[],
  text[], text[], jsonb, integer, boolean) SET plan_cache_mode = force_generic_plan;
-- Each returns one row; the caller's statement is costed with that.
ALTER FUNCTION tasker.create_task(uuid, jsonb, text, text, text, text[], integer[], text[],
  jsonb[], integer[], boolean[], text[], bigint[], bigint[], integer[], jsonb[], integer[],
  text[], text[], jsonb, integer, boolean) ROWS 1;
ALTER FUNCTION tasker.create_task_read(uuid, jsonb, text, text, text, text[], integer[],
  text[], jsonb[], integer[], boolean[], text[], bigint[], bigint[], integer[], jsonb[],
  integer[], text[], text[], jsonb, integer, boolean) ROWS 1;

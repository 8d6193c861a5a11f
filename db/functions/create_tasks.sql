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
  v_edges boolean := EXISTS (SELECT 1 FROM unnest(p_tasks) AS r CROSS JOIN LATERAL unnest(r.steps) AS s
                              WHERE cardinality(s.dependencies) > 0);
BEGIN
  -- Materialized (it is read twice), so each task's generated key is drawn once.
  WITH req AS (
    SELECT u.i::integer AS i, tasker.uuid_v7() AS id, u.nt, u.ctx, u.k, u.ini
      FROM unnest(p_tasks) WITH ORDINALITY AS u(nt, ctx, k, ini, steps, i)
  ), made AS (
    INSERT INTO tasker.tasks AS t (task_uuid, named_task_uuid, context, idempotency_key,
                                   initiator, state, transitions)
    SELECT r.id, r.nt, r.ctx, r.k, r.ini, 'steps_in_process',
           tasker.task_start_transitions(p_actor)
      FROM req r ORDER BY r.i
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
        state, enqueued_at, transitions)
      SELECT u.id, u.name, u.position, u.callable, u.init, u.max_attempts, u.retryable,
             u.backoff, u.base_ms, u.max_ms, u.timeout, u.events, u.parents, u.parents,
             CASE WHEN u.parents = 0 THEN 'enqueued' ELSE 'pending' END,
             CASE WHEN u.parents = 0 THEN clock_timestamp() END,
             ARRAY[tasker.transition_entry(NULL, 'pending', p_actor)]
             || CASE WHEN u.parents = 0
                     THEN ARRAY[tasker.transition_entry('pending', 'enqueued', p_actor,
                                                        '{"attempt": 1}')]
                     ELSE '{}'::tasker.transition[] END
        FROM spec u
      RETURNING s.step_uuid, s.task_uuid, s.name, s.state
    ), linked AS (
      -- Runs only for a batch with dependencies (v_edges, a one-time filter), and starts
      -- from the dependencies: joined to the inserted steps first, every step met every
      -- step of its task (ten tasks of ten roots: a thousand rows for no edge).
      INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
      SELECT d.id, f.step_uuid, t.step_uuid
        FROM (SELECT u.id, u.name, p.parent
                FROM spec u CROSS JOIN LATERAL unnest(u.dependencies) AS p(parent)
               WHERE v_edges OFFSET 0) AS d
        JOIN made f ON f.task_uuid = d.id AND f.name = d.parent
        JOIN made t ON t.task_uuid = d.id AND t.name = d.name
    )
    SELECT array_agg(jsonb_build_object('task_uuid', m.task_uuid, 'step_uuid', m.step_uuid,
                                        'step_name', m.name, 'namespace', p_ns,
                                        'attempt', 1))
      INTO v_msgs
      FROM made m WHERE m.state = 'enqueued';
    IF v_msgs IS NOT NULL THEN
      PERFORM tasker.send_step_messages(p_ns, v_msgs);
    END IF;
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

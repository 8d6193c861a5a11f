-- tasker.create_task returns the task and step rows it inserted (p_read) instead of
-- tasker.create_task_read reading them back: one function level and two reads fewer a creation
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;
DROP FUNCTION IF EXISTS tasker.create_task(p_actor text, p_task tasker.task_spec, p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean, p_claim_worker text, p_claim_roots integer, p_lease_seconds integer, p_run_at timestamp with time zone);
DROP FUNCTION IF EXISTS tasker.create_task_read(p_actor text, p_task tasker.task_spec, p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean, p_claim_worker text, p_claim_roots integer, p_lease_seconds integer, p_run_at timestamp with time zone);

-- Creates one task with its steps, edges, parent counters and first transitions, and starts
-- it: roots enqueued (their messages inserted into the namespace queue unless p_hold_roots,
-- when the caller sends them), or, for a dynamic task, its blueprints stored and the
-- certain steps created. p_claim_worker with p_claim_roots: that many roots, first in
-- template order, are claimed for that worker (a worker in the creating process) in this
-- transaction instead of being queued. p_run_at in the future schedules the task: nothing
-- is claimed at creation, the roots are enqueued with their messages hidden until then,
-- and claim_steps refuses its steps until then. An idempotency key already taken returns
-- the existing task (created false). With p_read, the task and its steps come back too, as
-- rows of tasker.task_rows and tasker.step_rows (a creating client returns them): a task that
-- starts at once gets them from what its inserts returned, without reading them again.
CREATE OR REPLACE FUNCTION tasker.create_task(p_actor text, p_task tasker.task_spec, p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean DEFAULT false, p_claim_worker text DEFAULT NULL::text, p_claim_roots integer DEFAULT 0, p_lease_seconds integer DEFAULT 0, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_read boolean DEFAULT false)
 RETURNS TABLE(task_uuid uuid, created boolean, state text, messages jsonb, claimed uuid[], lease_expires_at timestamp with time zone, task tasker.task_rows, steps tasker.step_rows[])
 LANGUAGE plpgsql
 ROWS 1
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_task    tasker.tasks;
  v_started boolean := p_blueprints IS NULL
                        AND EXISTS (SELECT 1 FROM unnest((p_task).steps) AS s
                                     WHERE coalesce(cardinality(s.dependencies), 0) = 0);
  v_ns      text;
  v_name    text;
  v_version text;
  v_state   text;
  v_roots   uuid[];
  v_names   text[];
  v_claimed uuid[];
  v_steps   tasker.step_rows[];
  v_lease   timestamptz := clock_timestamp() + make_interval(secs => p_lease_seconds);
  v_later   boolean := p_run_at > clock_timestamp();
  v_edges   boolean := EXISTS (SELECT 1 FROM unnest((p_task).steps) AS s
                                WHERE cardinality(s.dependencies) > 0);
BEGIN
  INSERT INTO tasker.tasks AS t (named_task_uuid, context, idempotency_key, initiator, state,
                                 run_at, transitions)
  VALUES ((p_task).named_task_uuid, (p_task).context, (p_task).idempotency_key,
          (p_task).initiator,
          CASE WHEN v_started THEN 'steps_in_process' ELSE 'pending' END, p_run_at,
          CASE WHEN v_started THEN tasker.task_start_transitions(p_actor)
               ELSE '{}'::tasker.transition[] END)
  ON CONFLICT (named_task_uuid, idempotency_key) DO NOTHING
  RETURNING t.* INTO v_task;
  IF v_task.task_uuid IS NULL THEN
    -- The key was taken (possibly by a concurrent identical request, which this insert
    -- waited for): hand back that task.
    RETURN QUERY
      SELECT t.task_uuid, false, t.state, NULL::jsonb, NULL::uuid[], NULL::timestamptz,
             r.task, r.steps
        FROM tasker.tasks t
             CROSS JOIN LATERAL tasker.task_with_steps(t.task_uuid, p_read) AS r
       WHERE t.named_task_uuid = (p_task).named_task_uuid
         AND t.idempotency_key = (p_task).idempotency_key;
    RETURN;
  END IF;
  IF p_blueprints IS NOT NULL THEN
    -- Only what is certain is created now; the rest waits for outcomes.
    PERFORM tasker.create_dynamic_steps(v_task.task_uuid, p_blueprints, p_max_steps, p_actor);
  ELSE
    WITH spec AS (
      SELECT u.*, (u.n - 1)::integer AS position,
             coalesce(cardinality(u.dependencies), 0) AS parents
        FROM unnest((p_task).steps) WITH ORDINALITY
             AS u(name, callable, init, max_attempts, retryable, backoff, base_ms, max_ms,
                  timeout, events, dependencies, n)
    ), made AS (
      INSERT INTO tasker.workflow_steps AS s (task_uuid, name, position, handler_callable,
        handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
        max_backoff_ms, timeout_seconds, publishes_events, parent_count, pending_parents,
        state, enqueued_at, attempts, claim_owner, lease_expires_at, started_at, transitions)
      SELECT v_task.task_uuid, u.name, u.position, u.callable, u.init, u.max_attempts,
             u.retryable, u.backoff, u.base_ms, u.max_ms, u.timeout, u.events, u.parents,
             u.parents,
             CASE WHEN u.parents > 0 THEN 'pending'
                  WHEN u.claimed THEN 'in_progress' ELSE 'enqueued' END,
             CASE WHEN u.parents = 0 THEN greatest(clock_timestamp(), p_run_at) END,
             CASE WHEN u.claimed THEN 1 ELSE 0 END,
             CASE WHEN u.claimed THEN p_claim_worker END,
             CASE WHEN u.claimed THEN v_lease END,
             CASE WHEN u.claimed THEN clock_timestamp() END,
             ARRAY[tasker.transition_entry(NULL, 'pending', p_actor)]
             || CASE WHEN u.parents = 0
                     THEN ARRAY[tasker.transition_entry('pending', 'enqueued', p_actor,
                                                        '{"attempt": 1}')]
                     ELSE '{}'::tasker.transition[] END
             || CASE WHEN u.claimed
                     THEN ARRAY[tasker.transition_entry('enqueued', 'in_progress', p_claim_worker)]
                     ELSE '{}'::tasker.transition[] END
        FROM (SELECT s.*, s.parents = 0 AND p_claim_worker IS NOT NULL AND v_later IS NOT TRUE
                          AND row_number() OVER (PARTITION BY s.parents = 0 ORDER BY s.position)
                              <= p_claim_roots AS claimed
                FROM spec s) AS u
      RETURNING s.*
    ), linked AS (
      -- Only for a template with dependencies, starting from them (as create_tasks does).
      INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
      SELECT v_task.task_uuid, f.step_uuid, t.step_uuid
        FROM (SELECT s.name, p.parent
                FROM spec s CROSS JOIN LATERAL unnest(s.dependencies) AS p(parent)
               WHERE v_edges OFFSET 0) AS d
        JOIN made f ON f.name = d.parent
        JOIN made t ON t.name = d.name
    )
    -- The step rows in tasker.step_rows' column order (a column added there must be added
    -- here: the cast fails otherwise).
    SELECT array_agg(m.step_uuid) FILTER (WHERE m.state IN ('enqueued', 'in_progress')),
           array_agg(m.name) FILTER (WHERE m.state IN ('enqueued', 'in_progress')),
           array_agg(m.step_uuid) FILTER (WHERE m.state = 'in_progress'),
           array_agg(ROW(m.step_uuid, m.task_uuid, m.name, m.position, m.step_type,
                         m.handler_callable, m.state, m.attempts, m.max_attempts, m.retryable,
                         m.backoff, m.backoff_base_ms, m.max_backoff_ms, m.timeout_seconds,
                         m.inputs, m.results, m.last_error, m.next_retry_at, m.claim_owner,
                         m.lease_expires_at, m.enqueued_at, m.started_at,
                         m.completed_at)::tasker.step_rows
                     ORDER BY m.position, m.name) FILTER (WHERE p_read)
      INTO v_roots, v_names, v_claimed, v_steps
      FROM made m;
    PERFORM tasker.note_claims(p_claim_worker, v_claimed, v_lease);
  END IF;
  -- A dynamic task, or a fixed one whose every step waits for a parent.
  IF NOT v_started THEN
    v_state := tasker.start_task(v_task.task_uuid, p_actor);
    RETURN QUERY SELECT v_task.task_uuid, true, v_state, NULL::jsonb, NULL::uuid[],
                        NULL::timestamptz, r.task, r.steps
                   FROM tasker.task_with_steps(v_task.task_uuid, p_read) AS r;
    RETURN;
  END IF;
  SELECT n.name, nt.name, nt.version INTO v_ns, v_name, v_version
    FROM tasker.named_tasks nt JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
   WHERE nt.named_task_uuid = (p_task).named_task_uuid;
  -- Roots are only claimed for a caller that sends the other roots' messages (a claimed
  -- step has none).
  IF v_claimed IS NOT NULL AND NOT p_hold_roots THEN
    RAISE EXCEPTION 'task %: roots claimed at creation need p_hold_roots', v_task.task_uuid
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF NOT p_hold_roots THEN
    PERFORM tasker.send_step_messages(v_ns, tasker.root_messages(v_task.task_uuid, v_ns,
                                                                 v_roots, v_names),
                                      p_run_at);
  END IF;
  -- The roots' messages built here rather than by tasker.root_messages: a SQL function's
  -- body is planned on every call, this statement once per connection. The task row in
  -- tasker.task_rows' column order, as the step rows above.
  RETURN QUERY SELECT v_task.task_uuid, true, 'steps_in_process'::text,
    CASE WHEN p_hold_roots THEN
      (SELECT jsonb_agg(jsonb_build_object('task_uuid', v_task.task_uuid, 'step_uuid', u.step,
                                           'step_name', u.name, 'namespace', v_ns,
                                           'attempt', 1))
         FROM unnest(v_roots, v_names) AS u(step, name))
    END,
    v_claimed, CASE WHEN v_claimed IS NOT NULL THEN v_lease END,
    CASE WHEN p_read THEN
      ROW(v_task.task_uuid, v_ns, v_name, v_version, v_task.state, v_task.context,
          v_task.correlation_id, v_task.idempotency_key, v_task.initiator, v_task.created_at,
          v_task.updated_at, v_task.completed_at, v_task.run_at)::tasker.task_rows
    END,
    v_steps;
END;
$function$;

-- A task's row and its steps as a creating client returns them (tasker.create_task with
-- p_read), read back: for the creations that cannot build them from what they inserted (a
-- key already taken, a dynamic task, a task started by its first finalization). Nothing
-- (NULLs) without p_read.
CREATE OR REPLACE FUNCTION tasker.task_with_steps(p_task uuid, p_read boolean)
 RETURNS TABLE(task tasker.task_rows, steps tasker.step_rows[])
 LANGUAGE plpgsql
 ROWS 1
AS $function$
BEGIN
  IF NOT p_read THEN
    RETURN QUERY SELECT NULL::tasker.task_rows, NULL::tasker.step_rows[];
    RETURN;
  END IF;
  RETURN QUERY SELECT (SELECT r FROM tasker.task_rows r WHERE r.task_uuid = p_task),
    (SELECT coalesce(array_agg(s ORDER BY s.position, s.name), '{}')
       FROM tasker.step_rows s WHERE s.task_uuid = p_task);
END;
$function$;

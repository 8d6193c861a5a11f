-- Creates every step of a dynamic task that should exist now and is missing, with its
-- edges and first transition: steps whose dependencies all exist (and whose decision
-- parents chose them), and convergence steps with an edge from each created dependency (a
-- batch worker's copies) and a gate edge from the nearest created decision or batchable step
-- whose outcome may still create a missing one. Repeated until nothing more is created (a
-- chosen branch's own descendants, steps after a convergence). Idempotent. Loops run over
-- the template's steps, never over batch copies. Returns the number of steps created.
CREATE OR REPLACE FUNCTION tasker.expand_steps(p_task uuid, p_actor text)
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_all   uuid[] := ARRAY[]::uuid[];
  v_round uuid[];
  v_ids   uuid[];
  v_deps  uuid[];
  v_gates uuid[];
  v_conv  uuid;
  v_edges integer;
  c       record;
  d       text;
  g       text;
  gs      record;
  v_created tasker.transition[] := ARRAY[
    tasker.transition_entry(NULL, 'pending', p_actor, '{"created_by": "expand_steps"}')];
BEGIN
  -- The task row first, as result processing and operator actions take it: parents cannot
  -- finish (and be counted down) between reading their states and counting the edges added.
  PERFORM 1 FROM tasker.tasks WHERE task_uuid = p_task FOR NO KEY UPDATE;
  LOOP
    v_round := ARRAY[]::uuid[];
    LOOP
      WITH created AS (
        INSERT INTO tasker.workflow_steps
          (task_uuid, name, position, step_type, handler_callable, handler_initialization,
           max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, timeout_seconds,
           publishes_events, parent_count, pending_parents, transitions)
        SELECT p_task, b.name, b.position, b.step_type, b.handler_callable,
               b.handler_initialization, b.max_attempts, b.retryable, b.backoff,
               b.backoff_base_ms, b.max_backoff_ms, b.timeout_seconds, b.publishes_events, 0, 0,
               v_created
          FROM tasker.step_blueprints b
         WHERE b.task_uuid = p_task
           AND b.step_type NOT IN ('batch_worker', 'deferred_convergence')
           AND NOT EXISTS (SELECT 1 FROM tasker.workflow_steps s
                            WHERE s.task_uuid = p_task AND s.name = b.name)
           AND NOT EXISTS (
             SELECT 1 FROM unnest(b.dependencies) AS dep(name)
               LEFT JOIN tasker.workflow_steps ps ON ps.task_uuid = p_task AND ps.name = dep.name
              WHERE ps.step_uuid IS NULL
                 OR (ps.step_type = 'decision'
                     AND NOT coalesce(ps.outcome->'next_steps' ? b.name, false)))
         ORDER BY b.position
        ON CONFLICT (task_uuid, name) DO NOTHING
        RETURNING step_uuid
      )
      SELECT array_agg(step_uuid) INTO v_ids FROM created;
      EXIT WHEN v_ids IS NULL;
      v_round := v_round || v_ids;
    END LOOP;
    IF cardinality(v_round) > 0 THEN
      WITH added AS (
        INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
        SELECT p_task, ps.step_uuid, s.step_uuid
          FROM tasker.workflow_steps s
          JOIN tasker.step_blueprints b ON b.task_uuid = p_task AND b.name = s.name
          CROSS JOIN unnest(b.dependencies) AS dep(name)
          JOIN tasker.workflow_steps ps ON ps.task_uuid = p_task AND ps.name = dep.name
         WHERE s.step_uuid = ANY (v_round)
        ON CONFLICT DO NOTHING
        RETURNING from_step_uuid, to_step_uuid
      )
      SELECT tasker.count_new_parents(array_agg(from_step_uuid), array_agg(to_step_uuid))
        INTO v_edges FROM added;
    END IF;

    FOR c IN SELECT b.* FROM tasker.step_blueprints b
              WHERE b.task_uuid = p_task AND b.step_type = 'deferred_convergence'
              ORDER BY b.position LOOP
      v_deps := ARRAY[]::uuid[];
      v_gates := ARRAY[]::uuid[];
      FOREACH d IN ARRAY c.dependencies LOOP
        SELECT array_agg(s.step_uuid) INTO v_ids FROM tasker.workflow_steps s
         WHERE s.task_uuid = p_task AND (s.name = d OR s.template_step = d);
        IF v_ids IS NOT NULL THEN
          v_deps := v_deps || v_ids;
          CONTINUE;
        END IF;
        -- Not created: wait for the nearest created gate that has not decided yet. A gate
        -- that has decided without creating it means it never will be.
        g := d;
        LOOP
          SELECT b.gate INTO g FROM tasker.step_blueprints b
           WHERE b.task_uuid = p_task AND b.name = g;
          EXIT WHEN g IS NULL;
          SELECT s.step_uuid, s.outcome INTO gs FROM tasker.workflow_steps s
           WHERE s.task_uuid = p_task AND s.name = g;
          IF FOUND THEN
            IF gs.outcome IS NULL THEN
              v_gates := v_gates || gs.step_uuid;
            END IF;
            EXIT;
          END IF;
        END LOOP;
      END LOOP;
      SELECT s.step_uuid INTO v_conv FROM tasker.workflow_steps s
       WHERE s.task_uuid = p_task AND s.name = c.name;
      IF v_conv IS NULL THEN
        -- Created once anything it waits for exists.
        CONTINUE WHEN cardinality(v_deps) = 0 AND cardinality(v_gates) = 0;
        INSERT INTO tasker.workflow_steps
          (task_uuid, name, position, step_type, handler_callable, handler_initialization,
           max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, timeout_seconds,
           publishes_events, parent_count, pending_parents, transitions)
        VALUES (p_task, c.name, c.position, c.step_type, c.handler_callable,
                c.handler_initialization, c.max_attempts, c.retryable, c.backoff,
                c.backoff_base_ms, c.max_backoff_ms, c.timeout_seconds, c.publishes_events, 0, 0,
                v_created)
        ON CONFLICT (task_uuid, name) DO NOTHING
        RETURNING step_uuid INTO v_conv;
        CONTINUE WHEN v_conv IS NULL;
        v_round := v_round || v_conv;
      END IF;
      WITH added AS (
        INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid, gate)
        SELECT p_task, f, v_conv, false FROM unnest(v_deps) AS f
        UNION ALL
        SELECT p_task, f, v_conv, true FROM unnest(v_gates) AS f
         WHERE NOT (f = ANY (v_deps))
        ON CONFLICT DO NOTHING
        RETURNING from_step_uuid, to_step_uuid
      )
      SELECT tasker.count_new_parents(array_agg(from_step_uuid), array_agg(to_step_uuid))
        INTO v_edges FROM added;
    END LOOP;

    EXIT WHEN cardinality(v_round) = 0;
    v_all := v_all || v_round;
  END LOOP;

  RETURN cardinality(v_all);
END;
$function$;

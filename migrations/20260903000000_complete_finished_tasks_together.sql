-- Completing finished tasks together.
--
-- Profiling bin/bench after creating tasks together (pg_stat_statements, track = all) put
-- recording first, and in it, after storing the results and waiting for task locks,
-- finalization: about a sixth of a recording's statement time. Most of it is the tasks
-- whose last steps the batch completed: finalize_task ran for each one by one (its lock,
-- its execution context over the task's steps, the transition check, the task update, the
-- transition log's two writes).
--
-- complete_steps now moves every task it touched that is steps_in_process and has no step
-- left that is not complete (or resolved manually) to complete in three statements for all
-- of them: exactly the transition finalize_task writes when the execution context says
-- all_complete (steps_in_process -> complete, metadata execution_status all_complete, by
-- the recording worker, completed_at set). Every other task it touched is finalized one by
-- one as before. The tasks are locked, as before, by the recording's first statement.
-- The namespace of each recorded step's task, which the worker gets back, comes from one
-- join for all the tasks instead of a call of tasker.task_namespace per task.

CREATE OR REPLACE FUNCTION tasker.complete_steps(
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
  v_touched     uuid[];
  v_finished    uuid[];
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
    -- Tasks the failures above touched are finalized already.
    SELECT array_agg(DISTINCT u.t ORDER BY u.t) INTO v_touched
      FROM unnest(v_done_tasks) AS u(t)
     WHERE NOT (u.t = ANY (coalesce(v_tasks, ARRAY[]::uuid[])));
    -- Those whose every step is now complete (or resolved manually) complete together:
    -- what finalize_task would do for each (its execution context says all_complete), in
    -- three statements for all of them.
    WITH finished AS (
      SELECT t.task_uuid FROM tasker.tasks t
       WHERE t.task_uuid = ANY (v_touched) AND t.state = 'steps_in_process'
         AND NOT EXISTS (SELECT 1 FROM tasker.workflow_steps s
                          WHERE s.task_uuid = t.task_uuid
                            AND s.state NOT IN ('complete', 'resolved_manually'))
    ), moved AS (
      UPDATE tasker.tasks t
         SET state = 'complete', updated_at = now(), completed_at = clock_timestamp()
        FROM finished f
       WHERE t.task_uuid = f.task_uuid AND t.state = 'steps_in_process'
      RETURNING t.task_uuid
    ), previous AS (
      UPDATE tasker.task_transitions x SET most_recent = false
        FROM moved m
       WHERE x.task_uuid = m.task_uuid AND x.most_recent
      RETURNING x.task_uuid, x.sort_key
    ), logged AS (
      INSERT INTO tasker.task_transitions AS n
        (task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
      SELECT p.task_uuid, 'steps_in_process', 'complete', p.sort_key + 1, true, p_worker,
             '{"execution_status": "all_complete"}'::jsonb
        FROM previous p
      RETURNING n.task_uuid
    )
    SELECT array_agg(l.task_uuid) INTO v_finished FROM logged l;
    -- The rest one by one, where finalizing could change something. Materialized, so each
    -- task is checked once rather than once per step.
    PERFORM tasker.finalize_task(d.t, p_worker)
       FROM (SELECT u.t FROM unnest(v_touched) AS u(t)
              WHERE NOT (u.t = ANY (coalesce(v_finished, ARRAY[]::uuid[])))
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
        JOIN (SELECT u.t, ns.name AS ns
                FROM (SELECT DISTINCT x AS t FROM unnest(v_done_tasks) AS x) AS u
                JOIN tasker.tasks tk ON tk.task_uuid = u.t
                JOIN tasker.named_tasks nt ON nt.named_task_uuid = tk.named_task_uuid
                JOIN tasker.namespaces ns ON ns.namespace_uuid = nt.namespace_uuid) AS n
          ON n.t = d.t;
  END IF;
  RETURN QUERY
    SELECT id, NULL::uuid, NULL::text, 'refused'::text, v_enqueued
      FROM unnest(v_ids) AS id
     WHERE NOT (id = ANY (coalesce(v_steps, ARRAY[]::uuid[]) || coalesce(v_done, ARRAY[]::uuid[])));
END;
$$;

-- CREATE OR REPLACE drops a function's settings.
ALTER FUNCTION tasker.complete_steps(text, jsonb, float8, bigint) SET enable_seqscan = off;
ALTER FUNCTION tasker.complete_steps(text, jsonb, float8, bigint)
  SET plan_cache_mode = force_generic_plan;

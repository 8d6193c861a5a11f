-- Starts a new task whose steps exist as pending (a dynamic task's, or none), without
-- computing its execution context: every pending step with no parent left to wait for (its
-- counter, set when it was created) is enqueued, and the task goes straight to
-- steps_in_process. A task with no such step (no steps, or steps created without counters)
-- takes the general path: its first finalization decides.
CREATE OR REPLACE FUNCTION tasker.start_task(p_task uuid, p_actor text)
 RETURNS text
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_state text;
  v_steps uuid[];
  v_names text[];
  v_n     integer;
  v_ns    text;
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
    UPDATE tasker.tasks
       SET state = 'enqueuing_steps', updated_at = now(),
           transitions = transitions
                         || ARRAY[tasker.transition_entry(NULL, 'pending', p_actor),
                                  tasker.transition_entry('pending', 'initializing', p_actor),
                                  tasker.transition_entry('initializing', 'enqueuing_steps', p_actor)]
     WHERE task_uuid = p_task;
    RETURN tasker.finalize_task(p_task, p_actor);
  END IF;
  v_n := cardinality(v_steps);
  PERFORM tasker.record_step_transitions(
    v_steps, array_fill('pending'::text, ARRAY[v_n]),
    array_fill('enqueued'::text, ARRAY[v_n]), p_actor,
    array_fill('{"attempt": 1}'::jsonb, ARRAY[v_n]));
  UPDATE tasker.tasks
     SET state = 'steps_in_process', updated_at = now(),
         transitions = transitions || tasker.task_start_transitions(p_actor)
   WHERE task_uuid = p_task;
  v_ns := tasker.task_namespace(p_task);
  PERFORM tasker.send_step_messages(v_ns, tasker.root_messages(p_task, v_ns, v_steps, v_names));
  RETURN 'steps_in_process';
END;
$function$;

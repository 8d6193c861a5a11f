-- Enqueues a task's ready steps (get_step_readiness_status): state enqueued, transition
-- appended, one message each in the namespace's queue. Returns how many.
CREATE OR REPLACE FUNCTION tasker.enqueue_steps_of(p_task uuid, p_actor text)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_ns    text;
  v_steps uuid[];
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
           next_retry_at = NULL,
           transitions = s.transitions
                         || tasker.transition_entry(ready.current_state, 'enqueued', p_actor,
                                                   jsonb_build_object('attempt', s.attempts + 1))
      FROM ready
     WHERE s.task_uuid = p_task AND s.step_uuid = ready.step_uuid
       AND s.state = ready.current_state
    RETURNING s.step_uuid, s.attempts, ready.name
  )
  SELECT array_agg(step_uuid),
         array_agg(jsonb_build_object('task_uuid', p_task, 'step_uuid', step_uuid,
                                      'step_name', name, 'namespace', v_ns,
                                      'attempt', attempts + 1))
    INTO v_steps, v_msgs
    FROM moved;
  IF v_steps IS NULL THEN
    RETURN 0;
  END IF;
  PERFORM tasker.send_step_messages(v_ns, v_msgs);
  RETURN cardinality(v_steps);
END;
$function$;

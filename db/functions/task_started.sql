-- The transitions of a task that starts with its roots enqueued (pending -> initializing ->
-- enqueuing_steps -> steps_in_process); with p_send, the roots' messages too (false: the
-- caller sends them), hidden until p_visible_at when it is given (a scheduled task).
CREATE OR REPLACE FUNCTION tasker.task_started(p_task uuid, p_ns text, p_steps uuid[], p_names text[], p_actor text, p_send boolean DEFAULT true, p_visible_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS void
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  IF p_send THEN
    PERFORM tasker.send_step_messages(p_ns,
                                      tasker.root_messages(p_task, p_ns, p_steps, p_names),
                                      p_visible_at);
  END IF;
  INSERT INTO tasker.task_transitions
    (task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
  VALUES (p_task, NULL, 'pending', 0, false, p_actor, '{}'),
         (p_task, 'pending', 'initializing', 1, false, p_actor, '{}'),
         (p_task, 'initializing', 'enqueuing_steps', 2, false, p_actor, '{}'),
         (p_task, 'enqueuing_steps', 'steps_in_process', 3, true, p_actor,
          '{"execution_status": "processing"}');
END;
$function$;

-- Appends one transition to a step's log, after its last.
CREATE OR REPLACE FUNCTION tasker.record_step_transition(p_step uuid, p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb)
 RETURNS void
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  INSERT INTO tasker.workflow_step_transition_log
    (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
  VALUES (p_step, p_task, p_from, p_to,
          coalesce((SELECT max(l.sort_key) + 1 FROM tasker.workflow_step_transition_log l
                     WHERE l.step_uuid = p_step), 0),
          p_actor, coalesce(p_metadata, '{}'::jsonb));
END;
$function$;

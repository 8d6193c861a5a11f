-- Moves a task from p_from to p_to only if it is still in p_from, appending the transition
-- to its list. Returns false when the state moved underneath (another process won); raises
-- for a transition the table forbids.
CREATE OR REPLACE FUNCTION tasker.transition_task(p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb DEFAULT '{}'::jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tasker.task_state_transitions
                  WHERE from_state = p_from AND to_state = p_to) THEN
    RAISE EXCEPTION 'task %: transition % -> % is not allowed', p_task, p_from, p_to
      USING ERRCODE = 'check_violation';
  END IF;
  UPDATE tasker.tasks
     SET state = p_to,
         updated_at = now(),
         completed_at = CASE WHEN p_to IN ('complete', 'error', 'cancelled', 'resolved_manually')
                             THEN clock_timestamp() ELSE NULL END,
         transitions = transitions || tasker.transition_entry(p_from, p_to, p_actor, p_metadata)
   WHERE task_uuid = p_task AND state = p_from;
  RETURN FOUND;
END;
$function$;

-- Moves a step from p_from to p_to only if it is still in p_from, logging the transition.
-- Returns false when the state moved underneath; raises for a transition the table forbids.
CREATE OR REPLACE FUNCTION tasker.transition_step(p_step uuid, p_from text, p_to text, p_actor text, p_metadata jsonb DEFAULT '{}'::jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_task uuid;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tasker.step_state_transitions
                  WHERE from_state = p_from AND to_state = p_to) THEN
    RAISE EXCEPTION 'step %: transition % -> % is not allowed', p_step, p_from, p_to
      USING ERRCODE = 'check_violation';
  END IF;
  UPDATE tasker.workflow_steps
     SET state = p_to, updated_at = now()
   WHERE step_uuid = p_step AND state = p_from
  RETURNING task_uuid INTO v_task;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM tasker.record_step_transition(p_step, v_task, p_from, p_to, p_actor, p_metadata);
  RETURN true;
END;
$function$;

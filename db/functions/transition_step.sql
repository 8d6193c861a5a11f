-- Moves a step from p_from to p_to only if it is still in p_from, appending the transition
-- to its list (a retry's time goes when the step stops waiting for it). Returns false when
-- the state moved underneath; raises for a transition the table forbids.
CREATE OR REPLACE FUNCTION tasker.transition_step(p_step uuid, p_from text, p_to text, p_actor text, p_metadata jsonb DEFAULT '{}'::jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tasker.step_state_transitions
                  WHERE from_state = p_from AND to_state = p_to) THEN
    RAISE EXCEPTION 'step %: transition % -> % is not allowed', p_step, p_from, p_to
      USING ERRCODE = 'check_violation';
  END IF;
  UPDATE tasker.workflow_steps
     SET state = p_to, updated_at = now(),
         next_retry_at = CASE WHEN p_to = 'waiting_for_retry' THEN next_retry_at END,
         transitions = transitions || tasker.transition_entry(p_from, p_to, p_actor, p_metadata)
   WHERE step_uuid = p_step AND state = p_from;
  RETURN FOUND;
END;
$function$;

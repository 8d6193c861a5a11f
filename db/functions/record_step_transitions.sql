-- Appends one transition to each step's list, for callers that moved the steps in a
-- statement of their own (the rarer paths: failures, releases, reaping). The hot paths
-- append in the UPDATE that moves the step instead, which writes no second row version.
CREATE OR REPLACE FUNCTION tasker.record_step_transitions(p_steps uuid[], p_from text[], p_to text[], p_actor text, p_metadata jsonb[])
 RETURNS void
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_bad record;
BEGIN
  SELECT u.step, u.f, u.t INTO v_bad
    FROM unnest(p_steps, p_from, p_to) AS u(step, f, t)
   WHERE NOT EXISTS (SELECT 1 FROM tasker.step_state_transitions a
                      WHERE a.from_state = u.f AND a.to_state = u.t)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'step %: transition % -> % is not allowed', v_bad.step, v_bad.f, v_bad.t
      USING ERRCODE = 'check_violation';
  END IF;
  UPDATE tasker.workflow_steps s
     SET transitions = s.transitions || tasker.transition_entry(u.f, u.t, p_actor, u.meta)
    FROM unnest(p_steps, p_from, p_to, p_metadata) AS u(step, f, t, meta)
   WHERE s.step_uuid = ANY (p_steps) AND s.step_uuid = u.step;
END;
$function$;

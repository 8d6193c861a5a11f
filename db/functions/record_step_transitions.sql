-- Appends one transition per step. The callers hold the steps' rows locked (their UPDATE of
-- the state), so each step's next sort_key cannot be taken concurrently; the primary key
-- would refuse it if it were.
CREATE OR REPLACE FUNCTION tasker.record_step_transitions(p_steps uuid[], p_tasks uuid[], p_from text[], p_to text[], p_actor text, p_metadata jsonb[])
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
  INSERT INTO tasker.workflow_step_transition_log
    (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
  SELECT u.step, u.task, u.f, u.t,
         coalesce((SELECT max(l.sort_key) + 1 FROM tasker.workflow_step_transition_log l
                    WHERE l.step_uuid = u.step), 0),
         p_actor, coalesce(u.meta, '{}'::jsonb)
    FROM unnest(p_steps, p_tasks, p_from, p_to, p_metadata) AS u(step, task, f, t, meta);
END;
$function$;

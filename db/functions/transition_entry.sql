-- One entry of a task's or a step's transitions list (tasks.transitions,
-- workflow_steps.transitions), made now; empty metadata is kept as NULL. Callers append it in
-- the UPDATE that moves the row: `transitions = transitions || tasker.transition_entry(...)`.
CREATE OR REPLACE FUNCTION tasker.transition_entry(p_from text, p_to text, p_actor text, p_metadata jsonb DEFAULT NULL::jsonb)
 RETURNS tasker.transition
 LANGUAGE sql
AS $function$
  SELECT ROW(p_from, p_to, p_actor, nullif(p_metadata, '{}'::jsonb), clock_timestamp())::tasker.transition
$function$;

-- One entry of a task's or a step's transitions list (tasks.transitions,
-- workflow_steps.transitions), made now. Callers append it in the UPDATE that moves the row:
-- `transitions = transitions || tasker.transition_entry(...)`.
CREATE OR REPLACE FUNCTION tasker.transition_entry(p_from text, p_to text, p_actor text, p_metadata jsonb DEFAULT '{}'::jsonb)
 RETURNS jsonb
 LANGUAGE sql
AS $function$
  SELECT jsonb_build_object('from_state', p_from, 'to_state', p_to, 'actor', p_actor,
                            'metadata', coalesce(p_metadata, '{}'::jsonb),
                            'created_at', clock_timestamp())
$function$;

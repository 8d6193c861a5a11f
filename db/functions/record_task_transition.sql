-- Appends a task transition row and moves the most_recent flag to it.
CREATE OR REPLACE FUNCTION tasker.record_task_transition(p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_prev integer;
BEGIN
  UPDATE tasker.task_transitions SET most_recent = false
   WHERE task_uuid = p_task AND most_recent
  RETURNING sort_key INTO v_prev;
  INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
  VALUES (p_task, p_from, p_to, coalesce(v_prev + 1, 0), true, p_actor, coalesce(p_metadata, '{}'::jsonb));
END;
$function$;

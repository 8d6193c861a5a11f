-- Rows written to the view land in the log (most_recent follows from sort_key). Only the
-- rarely-run step creators of dynamic workflows write through it.
CREATE OR REPLACE FUNCTION tasker.workflow_step_transitions_insert()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
  INSERT INTO tasker.workflow_step_transition_log
    (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata, created_at)
  VALUES (NEW.step_uuid, NEW.task_uuid, NEW.from_state, NEW.to_state, NEW.sort_key, NEW.actor,
          coalesce(NEW.metadata, '{}'::jsonb), coalesce(NEW.created_at, clock_timestamp()));
  RETURN NEW;
END;
$function$;

CREATE OR REPLACE TRIGGER workflow_step_transitions_insert
  INSTEAD OF INSERT ON tasker.workflow_step_transitions
  FOR EACH ROW EXECUTE FUNCTION tasker.workflow_step_transitions_insert();

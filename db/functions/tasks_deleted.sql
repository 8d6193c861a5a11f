-- Tasks deleted (retention, or by hand): their steps and edges go with them, as the foreign
-- keys' cascades did (the tables have none: see db/schema.sql); the steps' audit rows follow
-- by workflow_steps_deleted.
CREATE OR REPLACE FUNCTION tasker.tasks_deleted()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
  DELETE FROM tasker.workflow_step_edges e
   WHERE e.task_uuid IN (SELECT g.task_uuid FROM gone g);
  DELETE FROM tasker.workflow_steps s
   WHERE s.task_uuid IN (SELECT g.task_uuid FROM gone g);
  RETURN NULL;
END;
$function$;

CREATE OR REPLACE TRIGGER tasks_deleted
  AFTER DELETE ON tasker.tasks REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION tasker.tasks_deleted();

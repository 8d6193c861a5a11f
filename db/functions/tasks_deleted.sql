-- Tasks deleted (by hand): their steps, edges and audit log rows go with them, as the foreign
-- keys' cascades did (the tables have none: see db/schema.sql). A task's rows go with the
-- task, never one step at a time: nothing deletes a step but its task's removal.
-- remove_finished_tasks deletes them itself, in the order its locks need, and sets
-- tasker.removing_tasks for its own statement, so this finds nothing to do then and skips
-- a second look through the steps it has just deleted.
CREATE OR REPLACE FUNCTION tasker.tasks_deleted()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
  IF current_setting('tasker.removing_tasks', true) = 'on' THEN
    RETURN NULL;
  END IF;
  DELETE FROM tasker.workflow_step_edges e
   WHERE e.task_uuid IN (SELECT g.task_uuid FROM gone g);
  DELETE FROM tasker.workflow_steps s
   WHERE s.task_uuid IN (SELECT g.task_uuid FROM gone g);
  DELETE FROM tasker.step_result_audit_log a
   WHERE a.task_uuid IN (SELECT g.task_uuid FROM gone g);
  RETURN NULL;
END;
$function$;

CREATE OR REPLACE TRIGGER tasks_deleted
  AFTER DELETE ON tasker.tasks REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION tasker.tasks_deleted();

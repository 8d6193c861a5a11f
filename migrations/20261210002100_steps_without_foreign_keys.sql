-- A step's and an edge's foreign keys were checked for every inserted row, each check an
-- executor of its own (about a twentieth of Postgres's CPU in a no-op run, perf): the rows
-- are only written by the functions that create their task or hold its lock, and a task's
-- deletion takes them by trigger (tasker.tasks_deleted) instead of by cascade.
-- Written by bin/sql-migration from db/ (docs/sql.md).

ALTER TABLE tasker.workflow_steps DROP CONSTRAINT workflow_steps_task_uuid_fkey;
ALTER TABLE tasker.workflow_step_edges DROP CONSTRAINT workflow_step_edges_task_uuid_fkey;
ALTER TABLE tasker.workflow_step_edges DROP CONSTRAINT workflow_step_edges_from_step_uuid_fkey;
ALTER TABLE tasker.workflow_step_edges DROP CONSTRAINT workflow_step_edges_to_step_uuid_fkey;

SET LOCAL check_function_bodies = off;

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

-- Tasks deleted (retention, or by hand): their steps, edges and audit log rows go with them,
-- as the foreign keys' cascades did (the tables have none: see db/schema.sql). A step is
-- never deleted but with its task. The steps are deleted by key through the primary key: a
-- B-tree scan visits an array's keys in sorted order and deletes each step as it reaches
-- it, so their locks come in key order, as every other writer takes them (tasks before
-- steps: the tasks' rows are locked by the DELETE that fires this). The settings rule out the
-- sequential and bitmap scans, which go in page order.
CREATE OR REPLACE FUNCTION tasker.tasks_deleted()
 RETURNS trigger
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
AS $function$
DECLARE
  v_tasks uuid[] := ARRAY(SELECT g.task_uuid FROM gone g);
BEGIN
  DELETE FROM tasker.workflow_steps w
   WHERE w.step_uuid = ANY (ARRAY(
     SELECT s.step_uuid FROM tasker.workflow_steps s WHERE s.task_uuid = ANY (v_tasks)));
  DELETE FROM tasker.workflow_step_edges e WHERE e.task_uuid = ANY (v_tasks);
  DELETE FROM tasker.step_result_audit_log a WHERE a.task_uuid = ANY (v_tasks);
  RETURN NULL;
END;
$function$;

CREATE OR REPLACE TRIGGER tasks_deleted
  AFTER DELETE ON tasker.tasks REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION tasker.tasks_deleted();

-- A removal deletes its tasks' steps by task in one pass, a quarter less work, and in key
-- order when it meets a held step
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;

-- Tasks deleted (retention, or by hand): their steps, edges and audit log rows go with them,
-- as the foreign keys' cascades did (the tables have none: see db/schema.sql). A step is
-- never deleted but with its task.
--
-- The steps are deleted by task, through workflow_steps_task_uuid_name_key: one pass, a
-- quarter less work than fetching their keys and deleting by those. That takes their locks in
-- name order, while a writer that locks several steps without their task (a worker's
-- results, the claim sweeps) takes them in key order: were the two to meet on two steps of
-- a removed task, each would wait for the other. So the pass gives up any lock wait longer
-- than lock_timeout below, and a deadlock found first, and deletes in key order instead,
-- through the primary key: a B-tree scan visits an array's keys in sorted order and deletes
-- each step as it reaches it. Giving up rolls back only the pass, so the other writer gets
-- the step it waits for within those milliseconds. The settings rule out the sequential and
-- bitmap scans, which go in page order.
CREATE OR REPLACE FUNCTION tasker.tasks_deleted()
 RETURNS trigger
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
AS $function$
DECLARE
  v_tasks        uuid[] := ARRAY(SELECT g.task_uuid FROM gone g);
  v_lock_timeout text := current_setting('lock_timeout');
BEGIN
  BEGIN
    PERFORM set_config('lock_timeout', '10ms', true);
    DELETE FROM tasker.workflow_steps w WHERE w.task_uuid = ANY (v_tasks);
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
  EXCEPTION
    WHEN lock_not_available OR deadlock_detected THEN
      DELETE FROM tasker.workflow_steps w
       WHERE w.step_uuid = ANY (ARRAY(
         SELECT s.step_uuid FROM tasker.workflow_steps s WHERE s.task_uuid = ANY (v_tasks)));
  END;
  DELETE FROM tasker.workflow_step_edges e WHERE e.task_uuid = ANY (v_tasks);
  DELETE FROM tasker.step_result_audit_log a WHERE a.task_uuid = ANY (v_tasks);
  RETURN NULL;
END;
$function$;

CREATE OR REPLACE TRIGGER tasks_deleted
  AFTER DELETE ON tasker.tasks REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION tasker.tasks_deleted();

-- A removed task's steps, edges and audit rows are deleted once, by tasks_deleted (steps by
-- key, in key order); the steps' statement trigger goes (a step goes only with its task)
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;
DROP TRIGGER workflow_steps_deleted ON tasker.workflow_steps;
DROP FUNCTION IF EXISTS tasker.workflow_steps_deleted();

-- Retention: removes up to p_limit tasks in the final state p_state that finished more than
-- p_age ago, oldest first, with every row that is theirs (steps with their transitions and
-- results, edges and audit log rows by the trigger tasks_deleted; blueprints by their
-- foreign key's cascade), and leaves a tombstone for each in removed_tasks. With p_archive
-- the rows are copied to tasker_archive first. Tasks another transaction holds are skipped
-- rather than waited for; a task that is not in p_state, such as an open one, is never
-- touched. Returns how many it removed; the caller repeats while that is p_limit.
--
-- Most of a removal's WAL is page images: the first change to a page after a checkpoint logs
-- the whole page, and history pages are seldom changed since. Where the role may set
-- wal_compression (a superuser, or GRANT SET ON PARAMETER wal_compression) and the server
-- leaves it off, the removal compresses them, lz4 where the server has it: a third of the WAL
-- for the same work. The setting is put back before the function returns.
CREATE OR REPLACE FUNCTION tasker.remove_finished_tasks(p_state text, p_age interval, p_limit integer, p_archive boolean)
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
AS $function$
DECLARE
  v_tasks uuid[];
  v_wal_compression text := current_setting('wal_compression');
BEGIN
  IF p_state IS NULL OR p_state NOT IN ('complete', 'error', 'cancelled', 'resolved_manually') THEN
    RAISE EXCEPTION 'retention removes tasks in a final state, not %', coalesce(p_state, 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF v_wal_compression = 'off' THEN
    BEGIN
      PERFORM set_config('wal_compression', 'lz4', true);
    EXCEPTION
      WHEN invalid_parameter_value THEN  -- a server built without lz4, or before 15
        PERFORM set_config('wal_compression', 'on', true);
      WHEN insufficient_privilege THEN
        NULL;
    END;
  END IF;
  -- tasks_finished_idx: a range from its oldest entry, as long as what is removed.
  SELECT array_agg(f.task_uuid ORDER BY f.task_uuid) INTO v_tasks
    FROM (SELECT t.task_uuid FROM tasker.tasks t
           WHERE t.state = p_state AND t.completed_at < now() - p_age
           ORDER BY t.completed_at
           LIMIT p_limit
           FOR UPDATE SKIP LOCKED) AS f;
  IF v_tasks IS NULL THEN
    IF current_setting('wal_compression') <> v_wal_compression THEN
      PERFORM set_config('wal_compression', v_wal_compression, true);
    END IF;
    RETURN 0;
  END IF;
  IF p_archive THEN
    INSERT INTO tasker_archive.tasks
      SELECT t.* FROM tasker.tasks t WHERE t.task_uuid = ANY (v_tasks);
    INSERT INTO tasker_archive.workflow_steps
      SELECT w.* FROM tasker.workflow_steps w WHERE w.task_uuid = ANY (v_tasks);
    INSERT INTO tasker_archive.workflow_step_edges
      SELECT e.* FROM tasker.workflow_step_edges e WHERE e.task_uuid = ANY (v_tasks);
    INSERT INTO tasker_archive.step_blueprints
      SELECT b.* FROM tasker.step_blueprints b WHERE b.task_uuid = ANY (v_tasks);
    INSERT INTO tasker_archive.step_result_audit_log
      SELECT a.* FROM tasker.step_result_audit_log a WHERE a.task_uuid = ANY (v_tasks);
  END IF;
  -- The tasks' steps, edges and audit rows go by tasks_deleted, each row once.
  WITH gone AS (
    DELETE FROM tasker.tasks t WHERE t.task_uuid = ANY (v_tasks)
    RETURNING t.task_uuid, t.state, t.completed_at
  )
  INSERT INTO tasker.removed_tasks (task_uuid, state, completed_at, archived)
    SELECT g.task_uuid, g.state, g.completed_at, p_archive FROM gone g;
  IF current_setting('wal_compression') <> v_wal_compression THEN
    PERFORM set_config('wal_compression', v_wal_compression, true);
  END IF;
  RETURN cardinality(v_tasks);
END;
$function$;

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

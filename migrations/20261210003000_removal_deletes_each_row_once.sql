-- Retention deletes a batch's edges and audit rows itself and tasks_deleted skips its second
-- look at them; steps lose their statement trigger (a step goes only with its task)
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;
DROP TRIGGER workflow_steps_deleted ON tasker.workflow_steps;
DROP FUNCTION IF EXISTS tasker.workflow_steps_deleted();

-- Retention: removes up to p_limit tasks in the final state p_state that finished more than
-- p_age ago, oldest first, with every row that is theirs (steps with their transitions and
-- results, edges, audit log rows, here; blueprints, by their foreign key's cascade), and
-- leaves a tombstone for each in removed_tasks. With p_archive the rows are copied to
-- tasker_archive first. Tasks another transaction holds are skipped rather than waited for;
-- a task that is not in p_state, such as an open one, is never touched. Returns how many it
-- removed; the caller repeats while that is p_limit.
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
  v_steps uuid[];
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
  -- The batch's steps (a finished task gains none).
  SELECT array_agg(w.step_uuid ORDER BY w.step_uuid) INTO v_steps
    FROM tasker.workflow_steps w WHERE w.task_uuid = ANY (v_tasks);
  IF p_archive THEN
    INSERT INTO tasker_archive.tasks
      SELECT t.* FROM tasker.tasks t WHERE t.task_uuid = ANY (v_tasks);
    INSERT INTO tasker_archive.workflow_steps
      SELECT w.* FROM tasker.workflow_steps w WHERE w.task_uuid = ANY (v_tasks);
    INSERT INTO tasker_archive.workflow_step_edges
      SELECT e.* FROM tasker.workflow_step_edges e WHERE e.task_uuid = ANY (v_tasks);
    INSERT INTO tasker_archive.step_blueprints
      SELECT b.* FROM tasker.step_blueprints b WHERE b.task_uuid = ANY (v_tasks);
    -- By step: the log's key.
    INSERT INTO tasker_archive.step_result_audit_log
      SELECT a.* FROM tasker.step_result_audit_log a
       WHERE a.step_uuid = ANY (coalesce(v_steps, ARRAY[]::uuid[]));
  END IF;
  -- Steps are locked in key order, as every other writer locks them (tasks before steps):
  -- an index scan of the primary key visits an array's keys in sorted order and deletes each
  -- step as it reaches it (the settings above rule out the sequential and bitmap scans, which
  -- go in page order). No pass that locks them first: that was a tenth of a removal's time.
  DELETE FROM tasker.workflow_steps w WHERE w.step_uuid = ANY (v_steps);
  DELETE FROM tasker.workflow_step_edges e WHERE e.task_uuid = ANY (v_tasks);
  DELETE FROM tasker.step_result_audit_log a WHERE a.task_uuid = ANY (v_tasks);
  -- The rows tasks_deleted would delete are gone: it skips its second look through them
  -- (a third of a removal's time). Only for this statement: a DELETE by hand later in the
  -- same transaction still takes its task's rows.
  PERFORM set_config('tasker.removing_tasks', 'on', true);
  WITH gone AS (
    DELETE FROM tasker.tasks t WHERE t.task_uuid = ANY (v_tasks)
    RETURNING t.task_uuid, t.state, t.completed_at
  )
  INSERT INTO tasker.removed_tasks (task_uuid, state, completed_at, archived)
    SELECT g.task_uuid, g.state, g.completed_at, p_archive FROM gone g;
  PERFORM set_config('tasker.removing_tasks', '', true);
  IF current_setting('wal_compression') <> v_wal_compression THEN
    PERFORM set_config('wal_compression', v_wal_compression, true);
  END IF;
  RETURN cardinality(v_tasks);
END;
$function$;

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

-- Retention of finished tasks (issue 28): tasker.remove_finished_tasks removes (or moves to
-- the new tasker_archive schema) tasks finished longer ago than their state's period, leaving
-- a tombstone in tasker.removed_tasks; tasks_finished_idx makes a run read what it removes;
-- workflow_step_edges_task_idx keeps the cascade to edges from scanning them all.
-- Written by bin/sql-migration from db/ (docs/sql.md).

-- Retention (crates/tasker-orchestration/src/retention.rs) takes finished tasks per state,
-- oldest first, by a range of this index: a run reads what it removes, not what is kept.
CREATE INDEX tasks_finished_idx ON tasker.tasks USING btree (state, completed_at)
  WHERE (state = ANY (ARRAY['complete'::text, 'error'::text, 'cancelled'::text, 'resolved_manually'::text]));
-- Removing a task cascades to its edges by task_uuid; without this each removed task would
-- scan the whole edge table.
CREATE INDEX workflow_step_edges_task_idx ON tasker.workflow_step_edges USING btree (task_uuid);

-- Tasks removed by retention, so asking for one answers that it was removed rather than
-- that it never existed. Pruned after [retention] tombstone_after (removed_at's index).
CREATE TABLE tasker.removed_tasks (
    task_uuid uuid NOT NULL PRIMARY KEY,
    state text NOT NULL,
    completed_at timestamp with time zone,
    removed_at timestamp with time zone DEFAULT now() NOT NULL,
    -- Its rows were moved to tasker_archive ([retention] mode = "archive").
    archived boolean NOT NULL
);

CREATE INDEX removed_tasks_removed_at_idx ON tasker.removed_tasks USING btree (removed_at);

-- Where retention moves a finished task's rows with mode = "archive": the live tables'
-- columns in the same order (tasker.remove_finished_tasks copies rows with SELECT *; the
-- test retention checks the shapes agree), without foreign keys or defaults. Tasker never
-- removes anything from here; the rows are the operator's to read, export or drop.
CREATE SCHEMA tasker_archive;

CREATE TABLE tasker_archive.tasks (LIKE tasker.tasks, PRIMARY KEY (task_uuid));
CREATE TABLE tasker_archive.workflow_steps (LIKE tasker.workflow_steps, PRIMARY KEY (step_uuid));
CREATE INDEX workflow_steps_task_idx ON tasker_archive.workflow_steps USING btree (task_uuid);
CREATE TABLE tasker_archive.workflow_step_edges (LIKE tasker.workflow_step_edges);
CREATE INDEX workflow_step_edges_task_idx ON tasker_archive.workflow_step_edges USING btree (task_uuid);
CREATE TABLE tasker_archive.step_blueprints (LIKE tasker.step_blueprints);
CREATE INDEX step_blueprints_task_idx ON tasker_archive.step_blueprints USING btree (task_uuid);
CREATE TABLE tasker_archive.task_transitions (LIKE tasker.task_transitions);
CREATE INDEX task_transitions_task_idx ON tasker_archive.task_transitions USING btree (task_uuid);
CREATE TABLE tasker_archive.workflow_step_transition_log (LIKE tasker.workflow_step_transition_log);
CREATE INDEX workflow_step_transition_log_task_idx ON tasker_archive.workflow_step_transition_log USING btree (task_uuid);
CREATE TABLE tasker_archive.step_result_audits (LIKE tasker.step_result_audits);
CREATE INDEX step_result_audits_task_idx ON tasker_archive.step_result_audits USING btree (task_uuid);

-- An archived task with its template's namespace, name and version, as tasker.task_rows.
CREATE VIEW tasker_archive.task_rows AS
 SELECT t.task_uuid,
    n.name AS namespace,
    nt.name,
    nt.version,
    t.state,
    t.context,
    t.correlation_id,
    t.idempotency_key,
    t.initiator,
    t.created_at,
    t.updated_at,
    t.completed_at,
    t.run_at
   FROM ((tasker_archive.tasks t
     JOIN tasker.named_tasks nt ON ((nt.named_task_uuid = t.named_task_uuid)))
     JOIN tasker.namespaces n ON ((n.namespace_uuid = nt.namespace_uuid)));

SET LOCAL check_function_bodies = off;

-- Retention: removes up to p_limit tasks in the final state p_state that finished more than
-- p_age ago, oldest first, with every row that is theirs (steps, edges, blueprints,
-- transitions, results: the foreign keys' cascades and workflow_steps_deleted), and leaves
-- a tombstone for each in removed_tasks. With p_archive the rows are copied to
-- tasker_archive first. Tasks another transaction holds are skipped rather than waited
-- for; a task that is not in p_state, such as an open one, is never touched. Returns how
-- many it removed; the caller repeats while that is p_limit.
CREATE OR REPLACE FUNCTION tasker.remove_finished_tasks(p_state text, p_age interval, p_limit integer, p_archive boolean)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_tasks uuid[];
  v_steps uuid[];
BEGIN
  IF p_state IS NULL OR p_state NOT IN ('complete', 'error', 'cancelled', 'resolved_manually') THEN
    RAISE EXCEPTION 'retention removes tasks in a final state, not %', coalesce(p_state, 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- tasks_finished_idx: a range from its oldest entry, as long as what is removed.
  SELECT array_agg(f.task_uuid ORDER BY f.task_uuid) INTO v_tasks
    FROM (SELECT t.task_uuid FROM tasker.tasks t
           WHERE t.state = p_state AND t.completed_at < now() - p_age
           ORDER BY t.completed_at
           LIMIT p_limit
           FOR UPDATE SKIP LOCKED) AS f;
  IF v_tasks IS NULL THEN
    RETURN 0;
  END IF;
  -- Steps locked in key order, as every other writer locks them (tasks before steps).
  SELECT array_agg(s.step_uuid ORDER BY s.step_uuid) INTO v_steps
    FROM (SELECT w.step_uuid FROM tasker.workflow_steps w
           WHERE w.task_uuid = ANY (v_tasks)
           ORDER BY w.step_uuid
           FOR UPDATE) AS s;
  IF p_archive THEN
    INSERT INTO tasker_archive.tasks
      SELECT t.* FROM tasker.tasks t WHERE t.task_uuid = ANY (v_tasks);
    INSERT INTO tasker_archive.workflow_steps
      SELECT w.* FROM tasker.workflow_steps w WHERE w.task_uuid = ANY (v_tasks);
    INSERT INTO tasker_archive.workflow_step_edges
      SELECT e.* FROM tasker.workflow_step_edges e WHERE e.task_uuid = ANY (v_tasks);
    INSERT INTO tasker_archive.step_blueprints
      SELECT b.* FROM tasker.step_blueprints b WHERE b.task_uuid = ANY (v_tasks);
    INSERT INTO tasker_archive.task_transitions
      SELECT x.* FROM tasker.task_transitions x WHERE x.task_uuid = ANY (v_tasks);
    -- By step: the log's key; it has no index on task_uuid.
    INSERT INTO tasker_archive.workflow_step_transition_log
      SELECT l.* FROM tasker.workflow_step_transition_log l
       WHERE l.step_uuid = ANY (coalesce(v_steps, ARRAY[]::uuid[]));
    INSERT INTO tasker_archive.step_result_audits
      SELECT a.* FROM tasker.step_result_audits a
       WHERE a.step_uuid = ANY (coalesce(v_steps, ARRAY[]::uuid[]));
  END IF;
  WITH gone AS (
    DELETE FROM tasker.tasks t WHERE t.task_uuid = ANY (v_tasks)
    RETURNING t.task_uuid, t.state, t.completed_at
  )
  INSERT INTO tasker.removed_tasks (task_uuid, state, completed_at, archived)
    SELECT g.task_uuid, g.state, g.completed_at, p_archive FROM gone g;
  RETURN cardinality(v_tasks);
END;
$function$;

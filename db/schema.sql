-- Tasker's tables, types and indexes as they are now. Everything lives in the `tasker`
-- schema; PGMQ installs into `pgmq`. The functions are in db/functions/, one file each.
-- This file is the readable source, not what runs: databases are built by migrations/
-- (a baseline and deltas), and the test `sql_source` checks that a migrated database equals
-- this file plus db/functions/. docs/sql.md says how to make a change.

CREATE SCHEMA tasker;

-- Time-ordered UUIDs (version 7): a 48-bit millisecond timestamp, then random bits, so new
-- rows land at the end of primary-key indexes. Here rather than in db/functions because the
-- column defaults below call it. One SQL expression, so it is inlined into those defaults:
-- a random (version 4) UUID's hex digits after the timestamp's, its version digit made 7 and
-- its variant bits kept; built as text, which costs about half of building it as bytes.
CREATE FUNCTION tasker.uuid_v7()
 RETURNS uuid
 LANGUAGE sql
AS $function$
  SELECT (lpad(to_hex(floor(date_part('epoch', clock_timestamp()) * 1000)::bigint), 12, '0')
          || '7' || substr(replace(gen_random_uuid()::text, '-', ''), 14))::uuid
$function$;

-- The allowed state transitions, mirrored from the Rust tables (a test checks they agree).
CREATE TABLE tasker.task_state_transitions (
    from_state text NOT NULL,
    to_state text NOT NULL,
    PRIMARY KEY (from_state, to_state)
);

CREATE TABLE tasker.step_state_transitions (
    from_state text NOT NULL,
    to_state text NOT NULL,
    PRIMARY KEY (from_state, to_state)
);

INSERT INTO tasker.task_state_transitions (from_state, to_state) VALUES
  ('pending', 'initializing'), ('pending', 'cancelled'),
  ('initializing', 'enqueuing_steps'), ('initializing', 'error'), ('initializing', 'cancelled'),
  ('enqueuing_steps', 'steps_in_process'), ('enqueuing_steps', 'waiting_for_dependencies'),
  ('enqueuing_steps', 'complete'), ('enqueuing_steps', 'error'), ('enqueuing_steps', 'cancelled'),
  ('steps_in_process', 'evaluating_results'), ('steps_in_process', 'waiting_for_dependencies'),
  ('steps_in_process', 'waiting_for_retry'), ('steps_in_process', 'blocked_by_failures'),
  ('steps_in_process', 'complete'), ('steps_in_process', 'cancelled'),
  ('evaluating_results', 'steps_in_process'), ('evaluating_results', 'waiting_for_dependencies'),
  ('evaluating_results', 'waiting_for_retry'), ('evaluating_results', 'blocked_by_failures'),
  ('evaluating_results', 'complete'), ('evaluating_results', 'cancelled'),
  ('waiting_for_dependencies', 'steps_in_process'), ('waiting_for_dependencies', 'waiting_for_retry'),
  ('waiting_for_dependencies', 'blocked_by_failures'), ('waiting_for_dependencies', 'complete'),
  ('waiting_for_dependencies', 'cancelled'),
  ('waiting_for_retry', 'steps_in_process'), ('waiting_for_retry', 'waiting_for_dependencies'),
  ('waiting_for_retry', 'blocked_by_failures'), ('waiting_for_retry', 'complete'),
  ('waiting_for_retry', 'cancelled'),
  ('blocked_by_failures', 'error'), ('blocked_by_failures', 'evaluating_results'),
  ('blocked_by_failures', 'cancelled'),
  ('error', 'evaluating_results'), ('error', 'resolved_manually');

INSERT INTO tasker.step_state_transitions (from_state, to_state) VALUES
  ('pending', 'enqueued'), ('pending', 'cancelled'), ('pending', 'resolved_manually'),
  ('pending', 'complete'),
  ('enqueued', 'in_progress'), ('enqueued', 'cancelled'), ('enqueued', 'error'),
  ('in_progress', 'enqueued_for_orchestration'), ('in_progress', 'enqueued_as_error_for_orchestration'),
  ('in_progress', 'enqueued'), ('in_progress', 'complete'), ('in_progress', 'error'),
  ('enqueued_for_orchestration', 'complete'),
  ('enqueued_as_error_for_orchestration', 'waiting_for_retry'),
  ('enqueued_as_error_for_orchestration', 'error'),
  ('waiting_for_retry', 'enqueued'), ('waiting_for_retry', 'cancelled'),
  ('waiting_for_retry', 'resolved_manually'), ('waiting_for_retry', 'complete'),
  ('waiting_for_retry', 'error'),
  ('error', 'pending'), ('error', 'resolved_manually'), ('error', 'complete');

-- One transition of a task or a step, as their rows keep them (tasks.transitions,
-- workflow_steps.transitions): a typed array element is about half the size of the same
-- entry as a JSON object. metadata NULL: none.
CREATE TYPE tasker.transition AS (
	from_state text,
	to_state text,
	actor text,
	metadata jsonb,
	created_at timestamp with time zone
);

CREATE TABLE tasker.namespaces (
    namespace_uuid uuid DEFAULT tasker.uuid_v7() NOT NULL PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

-- A registered template. Orchestration reads templates only from here.
CREATE TABLE tasker.named_tasks (
    named_task_uuid uuid DEFAULT tasker.uuid_v7() NOT NULL PRIMARY KEY,
    namespace_uuid uuid NOT NULL REFERENCES tasker.namespaces (namespace_uuid),
    name text NOT NULL,
    version text NOT NULL,
    description text,
    template jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    UNIQUE (namespace_uuid, name, version)
);

CREATE TABLE tasker.tasks (
    task_uuid uuid DEFAULT tasker.uuid_v7() NOT NULL PRIMARY KEY,
    named_task_uuid uuid NOT NULL REFERENCES tasker.named_tasks (named_task_uuid),
    state text DEFAULT 'pending'::text NOT NULL,
    context jsonb DEFAULT '{}'::jsonb NOT NULL,
    correlation_id uuid DEFAULT tasker.uuid_v7() NOT NULL,
    idempotency_key text,
    initiator text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    completed_at timestamp with time zone,
    -- The step ceiling a dynamic task was created with ([orchestration] max_steps_per_task).
    max_steps integer,
    -- A scheduled task: no step of it is claimed before this time (claim_steps), and its
    -- roots' messages stay hidden until then. NULL: as soon as possible.
    run_at timestamp with time zone,
    -- Every transition of the task, oldest first, as workflow_steps.transitions: appended
    -- by the statement that moves the task. Read as rows through tasker.task_transitions.
    transitions tasker.transition[] DEFAULT '{}'::tasker.transition[] NOT NULL,
    UNIQUE (named_task_uuid, idempotency_key)
);

CREATE INDEX tasks_active_idx ON tasker.tasks USING btree (state)
  WHERE (state <> ALL (ARRAY['complete'::text, 'error'::text, 'cancelled'::text, 'resolved_manually'::text]));
CREATE INDEX tasks_created_idx ON tasker.tasks USING btree (created_at DESC);
-- The dashboard's task list, filtered by state or by template, newest first.
CREATE INDEX tasks_state_uuid_idx ON tasker.tasks USING btree (state, task_uuid DESC);
CREATE INDEX tasks_named_task_uuid_idx ON tasker.tasks USING btree (named_task_uuid, task_uuid DESC);

-- No foreign keys here or on workflow_step_edges: Postgres checks one per inserted row, an
-- executor started for each (a twentieth of the server's CPU in a no-op run), and their rows
-- are only written by the functions that create their task in the same statement or hold
-- its lock. A task's steps and edges go with it by tasker.tasks_deleted.
CREATE TABLE tasker.workflow_steps (
    step_uuid uuid DEFAULT tasker.uuid_v7() NOT NULL PRIMARY KEY,
    task_uuid uuid NOT NULL,
    name text NOT NULL,
    "position" integer NOT NULL,
    handler_callable text NOT NULL,
    handler_initialization jsonb DEFAULT '{}'::jsonb NOT NULL,
    state text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL CHECK ((attempts >= 0)),
    max_attempts integer NOT NULL CHECK ((max_attempts >= 1)),
    retryable boolean NOT NULL,
    backoff text NOT NULL CHECK ((backoff = ANY (ARRAY['none'::text, 'linear'::text, 'exponential'::text]))),
    backoff_base_ms bigint NOT NULL,
    max_backoff_ms bigint NOT NULL,
    timeout_seconds integer,
    publishes_events jsonb DEFAULT '[]'::jsonb NOT NULL,
    inputs jsonb DEFAULT '{}'::jsonb NOT NULL,
    results jsonb,
    last_error jsonb,
    next_retry_at timestamp with time zone,
    claim_owner text,
    lease_expires_at timestamp with time zone,
    queue_msg_id bigint,
    enqueued_at timestamp with time zone,
    started_at timestamp with time zone,
    completed_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    step_type text DEFAULT 'standard'::text NOT NULL
      CHECK ((step_type = ANY (ARRAY['standard'::text, 'decision'::text, 'batchable'::text, 'batch_worker'::text, 'deferred_convergence'::text]))),
    -- A batch copy's batch_worker step (process_batch for process_batch_007).
    template_step text,
    -- The applied outcome of a decision ({"next_steps": [...]}) or batchable ({"batches": [...]}).
    outcome jsonb,
    -- Parents (edges in) and parents not yet complete or resolved, kept as edges are added
    -- and parents finish: a convergence step over a thousand batch workers is checked for
    -- readiness without reading its thousand parents each time a result lands. NULL (steps
    -- created before the counters existed) means readiness counts the edges.
    parent_count integer,
    pending_parents integer,
    -- Every transition of the step, oldest first (tasker.transition_entry builds one),
    -- appended by the same UPDATE that moves the step: keeping them here rather than a row
    -- each in a log table saves a step's four log rows and their index entries. Read as
    -- rows through the view tasker.workflow_step_transitions.
    transitions tasker.transition[] DEFAULT '{}'::tasker.transition[] NOT NULL,
    -- The audit of the attempt that completed the step (worker, execution time, the
    -- result's metadata; its result is `results`, its time `completed_at`), set by the
    -- recording that completes it. Every other recorded attempt has a row in
    -- step_result_audit_log; the view tasker.step_result_audits shows both.
    recorded_by text,
    execution_time_ms bigint,
    result_metadata jsonb,
    UNIQUE (task_uuid, name)
);

-- A step's updates are HOT (heap-only: the new version on the same page, no new index
-- entries) when no index names a column they change, in its key or its predicate. A
-- claim, a recording and a readying change the state, the claim and the audit columns, so
-- the only indexes on steps are on columns those leave alone: the key, (task, name), and
-- the two below, on columns only a failure sets. What used an index on the state reads
-- elsewhere: claims from tasker.step_claims, waiting steps from the queues, recent
-- recordings from tasker.step_recordings. fillfactor leaves each page room for the
-- versions of its steps' updates: at 60, about five steps a page and 60% of the updates
-- heap-only; at 40, four and 77%, but a removal moves a third more pages a task.
ALTER TABLE tasker.workflow_steps SET (fillfactor = 60);
-- A retry's time is set only while the step waits for it, so this index holds the
-- waiting steps alone (the retry sweep, its next wake).
ALTER TABLE tasker.workflow_steps ADD CONSTRAINT workflow_steps_retry_only_waiting
  CHECK ((next_retry_at IS NULL) OR (state = 'waiting_for_retry'::text));
CREATE INDEX workflow_steps_retry_idx ON tasker.workflow_steps USING btree (next_retry_at)
  WHERE (next_retry_at IS NOT NULL);
-- The dashboard's failures by handler: every failed or retrying step has its last error
-- (a later success clears it).
ALTER TABLE tasker.workflow_steps ADD CONSTRAINT workflow_steps_failure_has_error
  CHECK ((last_error IS NOT NULL) OR (state <> ALL (ARRAY['error'::text, 'waiting_for_retry'::text])));
CREATE INDEX workflow_steps_failed_idx ON tasker.workflow_steps USING btree (handler_callable)
  WHERE (last_error IS NOT NULL);

-- Who holds which steps: one row per claiming statement (a claim, a recording that claimed
-- children, a creation that claimed roots), written with the claim, where an index on the
-- steps' owner would have cost every claim and recording their HOT update.
-- tasker.release_expired_claims reads the rows whose check_at has passed (a few seconds
-- after the claim, by when most steps are recorded), deletes those whose steps are no
-- longer held (recorded, released), releases held steps whose lease ran out, and sets
-- check_at of the rest to the earliest lease of their steps still held. So the table holds
-- the claims of the last seconds and those of steps still running. A dead worker's steps
-- are found by worker_id.
CREATE TABLE tasker.step_claims (
    claim_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker_id text NOT NULL,
    steps uuid[] NOT NULL,
    claimed_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    check_at timestamp with time zone NOT NULL
);

CREATE INDEX step_claims_check_idx ON tasker.step_claims USING btree (check_at);
CREATE INDEX step_claims_worker_idx ON tasker.step_claims USING btree (worker_id);

-- The steps each worker holds now, from its claims' rows (the dashboard's workers page).
CREATE VIEW tasker.held_steps AS
 SELECT h.worker_id,
    s.step_uuid,
    s.task_uuid,
    s.name,
    s.started_at,
    s.lease_expires_at
   FROM (( SELECT DISTINCT c.worker_id,
            u.step
           FROM (tasker.step_claims c
             CROSS JOIN LATERAL unnest(c.steps) u(step))) h
     JOIN tasker.workflow_steps s ON ((s.step_uuid = h.step)))
  WHERE ((s.state = 'in_progress'::text) AND (s.claim_owner = h.worker_id));


-- How many steps each recording completed, and when: the dashboard's recent counts. One
-- row per recording statement, not per step; a failed attempt is counted from
-- step_result_audit_log. Rows older than an hour go with retention's run.
CREATE TABLE tasker.step_recordings (
    recorded_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    worker_id text NOT NULL,
    completed integer NOT NULL
);

CREATE INDEX step_recordings_recorded_idx ON tasker.step_recordings USING btree (recorded_at);

-- A step's columns as the API and the dashboard read them. Its row type is read whole too
-- (tasker.create_task with p_read, the task reads in models/task.rs), into StepRow field by
-- field in this order: a column goes at the end, in the struct as here, and in the row
-- tasker.create_task builds from the steps it inserted.
CREATE VIEW tasker.step_rows AS
 SELECT s.step_uuid,
    s.task_uuid,
    s.name,
    s."position",
    s.step_type,
    s.handler_callable,
    s.state,
    s.attempts,
    s.max_attempts,
    s.retryable,
    s.backoff,
    s.backoff_base_ms,
    s.max_backoff_ms,
    s.timeout_seconds,
    s.inputs,
    s.results,
    s.last_error,
    s.next_retry_at,
    s.claim_owner,
    s.lease_expires_at,
    s.enqueued_at,
    s.started_at,
    s.completed_at
   FROM tasker.workflow_steps s;

-- A task with its template's namespace, name and version. Read whole as its row type too,
-- into TaskRow in this column order (see tasker.step_rows).
CREATE VIEW tasker.task_rows AS
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
   FROM ((tasker.tasks t
     JOIN tasker.named_tasks nt ON ((nt.named_task_uuid = t.named_task_uuid)))
     JOIN tasker.namespaces n ON ((n.namespace_uuid = nt.namespace_uuid)));

-- gate: the edge makes a convergence step wait for a decision or batchable step whose
-- outcome may still create some of its dependencies; it carries no result to the child.
CREATE TABLE tasker.workflow_step_edges (
    task_uuid uuid NOT NULL,
    from_step_uuid uuid NOT NULL,
    to_step_uuid uuid NOT NULL,
    gate boolean DEFAULT false NOT NULL,
    PRIMARY KEY (from_step_uuid, to_step_uuid),
    CHECK ((from_step_uuid <> to_step_uuid))
);

CREATE INDEX workflow_step_edges_to_idx ON tasker.workflow_step_edges USING btree (to_step_uuid);

-- A dynamic task's template steps, resolved (retry defaults, environment overrides), from
-- which its steps are created as outcomes arrive. gate: the decision or batchable step whose
-- outcome decides whether this step is created (TaskTemplate::gate_of).
CREATE TABLE tasker.step_blueprints (
    task_uuid uuid NOT NULL REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE,
    name text NOT NULL,
    "position" integer NOT NULL,
    step_type text NOT NULL,
    handler_callable text NOT NULL,
    handler_initialization jsonb NOT NULL,
    max_attempts integer NOT NULL,
    retryable boolean NOT NULL,
    backoff text NOT NULL,
    backoff_base_ms bigint NOT NULL,
    max_backoff_ms bigint NOT NULL,
    timeout_seconds integer,
    publishes_events jsonb NOT NULL,
    dependencies text[] NOT NULL,
    gate text,
    batch_worker text,
    max_workers integer,
    PRIMARY KEY (task_uuid, name)
);

-- A task's transitions as rows: sort_key is the place in its list, the last is most_recent.
CREATE VIEW tasker.task_transitions AS
 SELECT tk.task_uuid,
    j.from_state,
    j.to_state,
    ((j.n - 1))::integer AS sort_key,
    (j.n = cardinality(tk.transitions)) AS most_recent,
    j.actor,
    COALESCE(j.metadata, '{}'::jsonb) AS metadata,
    j.created_at
   FROM (tasker.tasks tk
     CROSS JOIN LATERAL unnest(tk.transitions) WITH ORDINALITY j(from_state, to_state, actor, metadata, created_at, n));

-- A step's transitions as rows: sort_key is the place in its list, the last is most_recent.
CREATE VIEW tasker.workflow_step_transitions AS
 SELECT s.step_uuid,
    s.task_uuid,
    j.from_state,
    j.to_state,
    ((j.n - 1))::integer AS sort_key,
    (j.n = cardinality(s.transitions)) AS most_recent,
    j.actor,
    COALESCE(j.metadata, '{}'::jsonb) AS metadata,
    j.created_at
   FROM (tasker.workflow_steps s
     CROSS JOIN LATERAL unnest(s.transitions) WITH ORDINALITY j(from_state, to_state, actor, metadata, created_at, n));

-- One row per recorded handler result that did not complete its step (failures, and
-- successes passed to the orchestrator); (step, attempt) is the key: a result is recorded
-- once. The attempt that completes a step is audited in the step's own row. No foreign
-- keys: the step's row is written in the same statements, and each check cost every
-- recording an index probe; rows of a deleted task go with it (tasks_deleted, by task).
CREATE TABLE tasker.step_result_audit_log (
    step_uuid uuid NOT NULL,
    task_uuid uuid NOT NULL,
    attempt integer NOT NULL,
    worker_id text NOT NULL,
    success boolean NOT NULL,
    result jsonb,
    error jsonb,
    execution_time_ms bigint NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    recorded_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    PRIMARY KEY (step_uuid, attempt)
);

CREATE INDEX step_result_audit_log_task_idx ON tasker.step_result_audit_log USING btree (task_uuid);
CREATE INDEX step_result_audit_log_recorded_idx ON tasker.step_result_audit_log USING btree (recorded_at);

-- Every recorded attempt: the log's rows and each completed step's last attempt.
CREATE VIEW tasker.step_result_audits AS
 SELECT l.step_uuid,
    l.task_uuid,
    l.attempt,
    l.worker_id,
    l.success,
    l.result,
    l.error,
    l.execution_time_ms,
    l.metadata,
    l.recorded_at
   FROM tasker.step_result_audit_log l
UNION ALL
 SELECT s.step_uuid,
    s.task_uuid,
    s.attempts AS attempt,
    s.recorded_by AS worker_id,
    true AS success,
    s.results AS result,
    NULL::jsonb AS error,
    s.execution_time_ms,
    COALESCE(s.result_metadata, '{}'::jsonb) AS metadata,
    s.completed_at AS recorded_at
   FROM tasker.workflow_steps s
  WHERE (s.recorded_by IS NOT NULL);

-- Recorded attempts over time, for the dashboard's recent counts: a recording's completed
-- steps (tasker.step_recordings) and every attempt in step_result_audit_log.
CREATE VIEW tasker.recording_counts AS
 SELECT r.recorded_at,
    r.worker_id,
    r.completed AS succeeded,
    0 AS failed
   FROM tasker.step_recordings r
UNION ALL
 SELECT l.recorded_at,
    l.worker_id,
    (l.success)::integer AS succeeded,
    (NOT l.success)::integer AS failed
   FROM tasker.step_result_audit_log l;

-- Worker registry: every worker process lists itself here while it runs. A worker holds a
-- session-level advisory lock on its lock_key on a dedicated connection for as long as it
-- lives. When the process dies (SIGKILL, lost connection) Postgres ends that session and
-- the lock goes with it, so a dead worker is detected exactly: anyone who can take the lock
-- knows its owner is gone and releases its claims. last_seen_at is renewed by the worker's
-- heartbeat and covers a worker whose session lingers while it cannot reach the database (a
-- partition): it is treated as dead once its row is stale, and its late results are refused
-- by the claim check at recording.
CREATE SEQUENCE tasker.worker_lock_keys;

CREATE TABLE tasker.workers (
    worker_id text NOT NULL PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    namespaces text[] NOT NULL,
    lock_key bigint DEFAULT nextval('tasker.worker_lock_keys'::regclass) NOT NULL UNIQUE,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    last_seen_at timestamp with time zone DEFAULT now() NOT NULL
);

-- The claim of a step, the one shape every claiming function returns: the outcome
-- (claimed, busy, scheduled, finished, missing), lease_expires_at (a claimed or busy step's
-- lease, a scheduled task's run_at) and, when claimed, what the handler needs. Built for
-- claimed steps by tasker.claimed_steps alone.
CREATE TYPE tasker.step_claim AS (
	step_uuid uuid,
	outcome text,
	lease_expires_at timestamp with time zone,
	task_uuid uuid,
	step_name text,
	namespace text,
	task_name text,
	task_version text,
	attempt integer,
	max_attempts integer,
	handler_callable text,
	handler_initialization jsonb,
	timeout_seconds integer,
	publishes_events jsonb,
	inputs jsonb,
	task_context jsonb,
	dependency_results jsonb
);

-- A message read from a worker queue and the claim of the step it names (NULL when it
-- names none: a malformed message). claim_messages returns these.
CREATE TYPE tasker.message_claim AS (
	msg_id bigint,
	message jsonb,
	step_uuid uuid,
	claim tasker.step_claim
);

-- A step of a fixed DAG as the creating functions (create_task, create_tasks) take it: the
-- template's step with its retry settings resolved and its parents by name. Its position is
-- its place in the task's array.
CREATE TYPE tasker.step_spec AS (
	name text,
	handler_callable text,
	handler_initialization jsonb,
	max_attempts integer,
	retryable boolean,
	backoff text,
	backoff_base_ms bigint,
	max_backoff_ms bigint,
	timeout_seconds integer,
	publishes_events jsonb,
	dependencies text[]
);

-- A task to create: what it runs (its named task and fixed steps; none for a dynamic
-- template) and with what (context, idempotency key, initiator).
CREATE TYPE tasker.task_spec AS (
	named_task_uuid uuid,
	context jsonb,
	idempotency_key text,
	initiator text,
	steps tasker.step_spec[]
);

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
CREATE TABLE tasker_archive.step_result_audit_log (LIKE tasker.step_result_audit_log);
CREATE INDEX step_result_audit_log_task_idx ON tasker_archive.step_result_audit_log USING btree (task_uuid);

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

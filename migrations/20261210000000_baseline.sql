-- Baseline: the schema and functions built by the 21 migrations that landed from
-- 20260101000000 to 20261205000000, squashed into one file (db/schema.sql and
-- db/functions/ as they were then). A database those migrations built is recorded as having
-- run this one instead (tasker_shared::database::adopt_squashed_migrations); later changes
-- are migrations of their own after this one.

CREATE SCHEMA tasker;

-- Time-ordered UUIDs (version 7): a 48-bit millisecond timestamp, then random bits, so new
-- rows land at the end of primary-key indexes. Here rather than in db/functions because the
-- column defaults below call it. One SQL expression, so it is inlined into those defaults.
CREATE FUNCTION tasker.uuid_v7()
 RETURNS uuid
 LANGUAGE sql
AS $function$
  SELECT encode(
           set_byte(
             overlay(uuid_send(gen_random_uuid())
                     PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                     FROM 1 FOR 6),
             6, (get_byte(uuid_send(gen_random_uuid()), 6) & 15) | 112),
           'hex')::uuid
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
  ('enqueued', 'in_progress'), ('enqueued', 'cancelled'),
  ('in_progress', 'enqueued_for_orchestration'), ('in_progress', 'enqueued_as_error_for_orchestration'),
  ('in_progress', 'enqueued'), ('in_progress', 'complete'),
  ('enqueued_for_orchestration', 'complete'),
  ('enqueued_as_error_for_orchestration', 'waiting_for_retry'),
  ('enqueued_as_error_for_orchestration', 'error'),
  ('waiting_for_retry', 'enqueued'), ('waiting_for_retry', 'cancelled'),
  ('waiting_for_retry', 'resolved_manually'), ('waiting_for_retry', 'complete'),
  ('waiting_for_retry', 'error'),
  ('error', 'pending'), ('error', 'resolved_manually'), ('error', 'complete');

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
    UNIQUE (named_task_uuid, idempotency_key)
);

CREATE INDEX tasks_active_idx ON tasker.tasks USING btree (state)
  WHERE (state <> ALL (ARRAY['complete'::text, 'error'::text, 'cancelled'::text, 'resolved_manually'::text]));
CREATE INDEX tasks_created_idx ON tasker.tasks USING btree (created_at DESC);
-- The dashboard's task list, filtered by state or by template, newest first.
CREATE INDEX tasks_state_uuid_idx ON tasker.tasks USING btree (state, task_uuid DESC);
CREATE INDEX tasks_named_task_uuid_idx ON tasker.tasks USING btree (named_task_uuid, task_uuid DESC);

CREATE TABLE tasker.workflow_steps (
    step_uuid uuid DEFAULT tasker.uuid_v7() NOT NULL PRIMARY KEY,
    task_uuid uuid NOT NULL REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE,
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
    UNIQUE (task_uuid, name)
);

CREATE INDEX workflow_steps_retry_idx ON tasker.workflow_steps USING btree (next_retry_at)
  WHERE (state = 'waiting_for_retry'::text);
-- The dashboard: failures by handler, a worker's in-flight steps, the oldest waiting step.
CREATE INDEX workflow_steps_failed_idx ON tasker.workflow_steps USING btree (handler_callable)
  WHERE (state = ANY (ARRAY['error'::text, 'waiting_for_retry'::text]));
CREATE INDEX workflow_steps_claim_owner_idx ON tasker.workflow_steps USING btree (claim_owner)
  WHERE (state = 'in_progress'::text);
CREATE INDEX workflow_steps_enqueued_idx ON tasker.workflow_steps USING btree (enqueued_at)
  WHERE (state = 'enqueued'::text);

-- A step's columns as the API and the dashboard read them.
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

-- A task with its template's namespace, name and version.
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
    t.completed_at
   FROM ((tasker.tasks t
     JOIN tasker.named_tasks nt ON ((nt.named_task_uuid = t.named_task_uuid)))
     JOIN tasker.namespaces n ON ((n.namespace_uuid = nt.namespace_uuid)));

-- gate: the edge makes a convergence step wait for a decision or batchable step whose
-- outcome may still create some of its dependencies; it carries no result to the child.
CREATE TABLE tasker.workflow_step_edges (
    task_uuid uuid NOT NULL REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE,
    from_step_uuid uuid NOT NULL REFERENCES tasker.workflow_steps (step_uuid) ON DELETE CASCADE,
    to_step_uuid uuid NOT NULL REFERENCES tasker.workflow_steps (step_uuid) ON DELETE CASCADE,
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

-- Every task transition is kept; exactly one row per task is flagged most_recent.
CREATE TABLE tasker.task_transitions (
    transition_uuid uuid DEFAULT tasker.uuid_v7() NOT NULL PRIMARY KEY,
    task_uuid uuid NOT NULL REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE,
    from_state text,
    to_state text NOT NULL,
    sort_key integer NOT NULL,
    most_recent boolean NOT NULL,
    actor text NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    UNIQUE (task_uuid, sort_key)
);

CREATE UNIQUE INDEX task_transitions_most_recent ON tasker.task_transitions USING btree (task_uuid)
  WHERE most_recent;

-- Every step transition, append-only, keyed (step_uuid, sort_key): the current one is the
-- highest sort_key, so no earlier row is updated to clear a flag. No foreign keys: the
-- step's own row is written in the same statements, and each check cost every claim and
-- recording an index probe; rows of a deleted task go with it (workflow_steps_deleted).
CREATE TABLE tasker.workflow_step_transition_log (
    step_uuid uuid NOT NULL,
    task_uuid uuid NOT NULL,
    from_state text,
    to_state text NOT NULL,
    sort_key integer NOT NULL,
    actor text NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    PRIMARY KEY (step_uuid, sort_key)
);

-- The log with most_recent derived, as readers saw the table before it became a log.
-- Inserts through it land in the log (trigger workflow_step_transitions_insert).
CREATE VIEW tasker.workflow_step_transitions AS
 SELECT l.step_uuid,
    l.task_uuid,
    l.from_state,
    l.to_state,
    l.sort_key,
    (l.sort_key = ( SELECT max(m.sort_key) AS max
           FROM tasker.workflow_step_transition_log m
          WHERE (m.step_uuid = l.step_uuid))) AS most_recent,
    l.actor,
    l.metadata,
    l.created_at
   FROM tasker.workflow_step_transition_log l;

-- One row per recorded handler result; (step, attempt) is the key: a result is recorded
-- once. No foreign keys, for the reason the transition log has none.
CREATE TABLE tasker.step_result_audits (
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

CREATE INDEX step_result_audits_task_idx ON tasker.step_result_audits USING btree (task_uuid);
CREATE INDEX step_result_audits_recorded_idx ON tasker.step_result_audits USING btree (recorded_at);

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

-- A claimed step, as a worker reads it: the queue message that named it (if any), the claim
-- outcome, and what the handler needs (claim_messages returns these).
CREATE TYPE tasker.message_claim AS (
	msg_id bigint,
	message jsonb,
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

SET LOCAL check_function_bodies = off;

-- Applies stored results (steps in enqueued_for_orchestration or
-- enqueued_as_error_for_orchestration at the given attempt): complete, waiting_for_retry with
-- backoff, or error; completed steps count themselves off their children; every task
-- touched is finalized once (enqueueing what became ready). p_ids identifies each input
-- in the rows returned (a results-queue message id, or a position). The caller has locked
-- the tasks or lets this lock them: every task first, then every step, each in key order.
CREATE OR REPLACE FUNCTION tasker.apply_step_results(p_ids bigint[], p_tasks uuid[], p_steps uuid[], p_attempts integer[], p_workers text[], p_actor text, p_jitter_ratio double precision, p_max_retry_after_ms bigint)
 RETURNS TABLE(msg_id bigint, task_uuid uuid, namespace text, outcome text)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_task_ids   uuid[];
  v_step_ids   uuid[];
  v_msgs       bigint[];
  v_steps      uuid[];
  v_tasks      uuid[];
  v_from       text[];
  v_to         text[];
  v_meta       jsonb[];
  v_outcomes   jsonb := '{}'::jsonb;
  f            record;
  v_err        jsonb;
  v_delay      bigint;
BEGIN
  SELECT array_agg(DISTINCT u.t) INTO v_task_ids FROM unnest(p_tasks) AS u(t);
  SELECT array_agg(DISTINCT u.s) INTO v_step_ids FROM unnest(p_steps) AS u(s);
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid = ANY (v_task_ids) ORDER BY t.task_uuid FOR NO KEY UPDATE;
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (v_step_ids) ORDER BY s.step_uuid FOR NO KEY UPDATE;

  WITH m AS (
    SELECT DISTINCT ON (s.step_uuid) u.id, s.step_uuid, u.worker_id
      FROM unnest(p_ids, p_tasks, p_steps, p_attempts, p_workers)
             AS u(id, task_uuid, step_uuid, attempt, worker_id)
      JOIN tasker.workflow_steps s ON s.step_uuid = u.step_uuid AND s.task_uuid = u.task_uuid
     WHERE s.step_uuid = ANY (v_step_ids) AND s.attempts = u.attempt
       AND s.state = 'enqueued_for_orchestration'
     ORDER BY s.step_uuid, u.id
  ), completed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'complete', updated_at = now(), completed_at = clock_timestamp()
      FROM m
     WHERE s.step_uuid = ANY (v_step_ids) AND s.step_uuid = m.step_uuid
    RETURNING s.step_uuid, s.task_uuid, s.attempts, m.id, m.worker_id
  )
  SELECT array_agg(c.id), array_agg(c.step_uuid), array_agg(c.task_uuid),
         array_agg('enqueued_for_orchestration'::text), array_agg('complete'::text),
         array_agg(jsonb_build_object('attempt', c.attempts, 'worker_id', c.worker_id))
    INTO v_msgs, v_steps, v_tasks, v_from, v_to, v_meta
    FROM completed c;
  IF v_steps IS NOT NULL THEN
    PERFORM tasker.record_step_transitions(v_steps, v_tasks, v_from, v_to, p_actor, v_meta);
    PERFORM tasker.parents_done(v_steps);
    SELECT jsonb_object_agg(id::text, 'completed') INTO v_outcomes FROM unnest(v_msgs) AS id;
  END IF;

  FOR f IN SELECT DISTINCT ON (s.step_uuid)
                  u.id, s.step_uuid, s.task_uuid, s.state, s.attempts, s.max_attempts,
                  s.retryable, s.backoff, s.backoff_base_ms, s.max_backoff_ms,
                  coalesce(s.last_error, '{}'::jsonb) AS last_error
             FROM unnest(p_ids, p_tasks, p_steps, p_attempts)
                    AS u(id, task_uuid, step_uuid, attempt)
             JOIN tasker.workflow_steps s
               ON s.step_uuid = u.step_uuid AND s.task_uuid = u.task_uuid
            WHERE s.step_uuid = ANY (v_step_ids) AND s.attempts = u.attempt
              AND s.state = 'enqueued_as_error_for_orchestration'
            ORDER BY s.step_uuid, u.id LOOP
    v_err := f.last_error;
    IF coalesce((v_err->>'retryable')::boolean, true) AND f.retryable
       AND f.attempts < f.max_attempts THEN
      v_delay := tasker.retry_delay_ms(f.backoff, f.backoff_base_ms, f.max_backoff_ms,
                                       f.attempts, v_err, p_jitter_ratio, p_max_retry_after_ms);
      PERFORM tasker.transition_step(f.step_uuid, f.state, 'waiting_for_retry', p_actor,
        jsonb_build_object('attempt', f.attempts, 'retry_in_ms', v_delay));
      UPDATE tasker.workflow_steps
         SET next_retry_at = clock_timestamp() + make_interval(secs => v_delay / 1000.0)
       WHERE workflow_steps.step_uuid = f.step_uuid;
      v_outcomes := v_outcomes || jsonb_build_object(f.id::text, 'retry_scheduled');
    ELSE
      PERFORM tasker.transition_step(f.step_uuid, f.state, 'error', p_actor,
        jsonb_build_object('attempt', f.attempts, 'reason',
          CASE WHEN NOT coalesce((v_err->>'retryable')::boolean, true) THEN 'not retryable (handler)'
               WHEN NOT f.retryable THEN 'not retryable (template)'
               ELSE 'out of attempts' END));
      UPDATE tasker.workflow_steps SET completed_at = clock_timestamp()
       WHERE workflow_steps.step_uuid = f.step_uuid;
      v_outcomes := v_outcomes || jsonb_build_object(f.id::text, 'failed');
    END IF;
    v_tasks := v_tasks || f.task_uuid;
  END LOOP;

  PERFORM tasker.finalize_task(t, p_actor)
     FROM (SELECT DISTINCT t FROM unnest(v_tasks) AS t) AS touched ORDER BY t;

  RETURN QUERY
    SELECT u.id, u.task_uuid, tasker.task_namespace(u.task_uuid),
           coalesce(v_outcomes->>u.id::text, 'ignored')
      FROM unnest(p_ids, p_tasks) WITH ORDINALITY AS u(id, task_uuid, i)
     ORDER BY u.i;
END;
$function$;

-- Claims the steps named by messages just read (ids and bodies in one order), committing
-- without waiting for the flush as reads and claims do. One row per message, in that
-- order: the step it names (NULL when it names none: a malformed message, for the caller to
-- set aside) and that step's claim_steps row; messages naming the same step share it.
CREATE OR REPLACE FUNCTION tasker.claim_messages(p_ids bigint[], p_msgs jsonb[], p_worker text, p_lease_seconds integer)
 RETURNS SETOF tasker.message_claim
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_named uuid[];
  v_steps uuid[];
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  IF p_ids IS NULL THEN
    RETURN;
  END IF;
  SELECT array_agg(CASE WHEN jsonb_typeof(u.m) = 'object'
                         AND u.m->>'step_uuid' ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                        THEN (u.m->>'step_uuid')::uuid END ORDER BY u.i)
    INTO v_named
    FROM unnest(p_msgs) WITH ORDINALITY AS u(m, i);
  SELECT array_agg(DISTINCT x) INTO v_steps FROM unnest(v_named) AS x WHERE x IS NOT NULL;
  RETURN QUERY
    SELECT u.id, u.m, u.step, c.outcome, c.lease_expires_at, c.task_uuid, c.step_name,
           c.namespace, c.task_name, c.task_version, c.attempt, c.max_attempts,
           c.handler_callable, c.handler_initialization, c.timeout_seconds,
           c.publishes_events, c.inputs, c.task_context, c.dependency_results
      FROM unnest(p_ids, p_msgs, v_named) WITH ORDINALITY AS u(id, m, step, i)
      LEFT JOIN tasker.claim_steps(coalesce(v_steps, ARRAY[]::uuid[]), p_worker, p_lease_seconds) AS c
        ON c.step_uuid = u.step
     ORDER BY u.i;
END;
$function$;

-- Claims steps for a worker: each enqueued step (or in_progress one whose lease expired: its
-- worker died) moves to in_progress with this worker as owner, a new attempt and a lease.
-- One row per requested step with its outcome ('claimed', or why not) and, when claimed,
-- everything the handler needs (task context, parents' results). Commits without waiting
-- for the flush: a claim lost in a crash is only a step claimed again.
CREATE OR REPLACE FUNCTION tasker.claim_steps(p_steps uuid[], p_worker text, p_lease_seconds integer)
 RETURNS TABLE(step_uuid uuid, outcome text, lease_expires_at timestamp with time zone, task_uuid uuid, step_name text, namespace text, task_name text, task_version text, attempt integer, max_attempts integer, handler_callable text, handler_initialization jsonb, timeout_seconds integer, publishes_events jsonb, inputs jsonb, task_context jsonb, dependency_results jsonb)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_id      uuid;
  v_claimed uuid[];
  v_tasks   uuid[];
  v_from    text[];
  v_to      text[];
  v_meta    jsonb[];
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  -- Sorted, so concurrent claimers and cancellations lock rows in one order.
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (p_steps) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  -- A step whose worker died (lease expired) is handed back first, then claimed afresh.
  FOR v_id IN SELECT k.step_uuid
                FROM (SELECT s.step_uuid, s.state, s.lease_expires_at
                        FROM tasker.workflow_steps s
                       WHERE s.step_uuid = ANY (p_steps) OFFSET 0) AS k
               WHERE k.state = 'in_progress' AND k.lease_expires_at <= clock_timestamp()
               ORDER BY k.step_uuid LOOP
    PERFORM tasker.transition_step(v_id, 'in_progress', 'enqueued', p_worker,
                                   jsonb_build_object('reason', 'lease_expired'));
  END LOOP;
  -- The steps are reached by key alone (OFFSET 0 keeps their state out of the scan): the
  -- partial indexes on state hold an entry for every version of a step ever in that
  -- state until a vacuum, and a generic plan that scans one for the state visits them all.
  WITH due AS (
    SELECT k.step_uuid
      FROM (SELECT s.step_uuid, s.state FROM tasker.workflow_steps s
             WHERE s.step_uuid = ANY (p_steps) OFFSET 0) AS k
     WHERE k.state = 'enqueued'
  ), claimed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'in_progress', updated_at = now(), attempts = s.attempts + 1,
           claim_owner = p_worker,
           lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           started_at = clock_timestamp()
      FROM due d
     WHERE s.step_uuid = ANY (p_steps) AND s.step_uuid = d.step_uuid
    RETURNING s.step_uuid, s.task_uuid
  )
  SELECT array_agg(c.step_uuid), array_agg(c.task_uuid), array_agg('enqueued'::text),
         array_agg('in_progress'::text), array_agg('{}'::jsonb)
    INTO v_claimed, v_tasks, v_from, v_to, v_meta
    FROM claimed c;
  IF v_claimed IS NOT NULL THEN
    PERFORM tasker.record_step_transitions(v_claimed, v_tasks, v_from, v_to, p_worker, v_meta);
  END IF;
  RETURN QUERY
    SELECT u.id,
           CASE WHEN s.step_uuid IS NULL THEN 'missing'
                WHEN c.step_uuid IS NOT NULL THEN 'claimed'
                WHEN s.state = 'in_progress' THEN 'busy'
                ELSE 'finished' END,
           CASE WHEN s.state = 'in_progress' THEN s.lease_expires_at END,
           c.task_uuid, c.name, c.namespace, c.task_name, c.version, c.attempts, c.max_attempts,
           c.handler_callable, c.handler_initialization, c.timeout_seconds,
           c.publishes_events, c.inputs, c.context, c.dependency_results
      FROM (SELECT DISTINCT x AS id FROM unnest(p_steps) AS x) u
      LEFT JOIN tasker.workflow_steps s ON s.step_uuid = u.id AND s.step_uuid = ANY (p_steps)
      LEFT JOIN LATERAL (
        SELECT s.step_uuid, s.task_uuid, s.name, n.name AS namespace, nt.name AS task_name,
               nt.version, s.attempts, s.max_attempts, s.handler_callable,
               s.handler_initialization, s.timeout_seconds, s.publishes_events, s.inputs,
               t.context,
               coalesce((SELECT jsonb_object_agg(ps.name, ps.results)
                           FROM tasker.workflow_step_edges e
                           JOIN tasker.workflow_steps ps ON ps.step_uuid = e.from_step_uuid
                          WHERE e.to_step_uuid = s.step_uuid AND NOT e.gate), '{}'::jsonb)
                 AS dependency_results
          FROM tasker.tasks t
          JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
          JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
         WHERE s.step_uuid = ANY (v_claimed) AND t.task_uuid = s.task_uuid
      ) c ON true
     ORDER BY u.id;
END;
$function$;

-- A worker's batch of results, recorded and applied in one transaction: each result is
-- checked against its claim (state in_progress, this worker, this attempt; a stale one is
-- refused), the step moves to complete, waiting_for_retry (backoff) or error, children it
-- readied are enqueued (and up to p_claim_max of those in p_send_namespaces claimed for
-- this worker in the same UPDATE), and tasks it finished are finalized. A batch of plain
-- successes (no outcome, steps that take none) is recorded by one statement here; any
-- other goes through store_step_results. One row per result: its outcome, whether
-- messages were sent, and the claim of a child taken for the caller.
CREATE OR REPLACE FUNCTION tasker.complete_steps(p_worker text, p_results jsonb, p_jitter_ratio double precision, p_max_retry_after_ms bigint, p_send_namespaces text[] DEFAULT NULL::text[], p_claim_max integer DEFAULT 0, p_lease_seconds integer DEFAULT 0)
 RETURNS TABLE(step_uuid uuid, task_uuid uuid, namespace text, outcome text, enqueued boolean, message jsonb, claim jsonb)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_ids         uuid[];
  v_done        uuid[];
  v_done_tasks  uuid[];
  v_steps       uuid[];
  v_tasks       uuid[];
  v_attempts    integer[];
  v_applied     jsonb;
  v_enqueued    boolean;
  v_touched     uuid[];
  v_may_finish  uuid[];
  v_finished    uuid[];
  v_children    uuid[];
  v_parents_done integer[];
  v_ready       uuid[];
  v_ready_tasks uuid[];
  v_ready_meta  jsonb[];
  v_ready_ns    text[];
  v_ready_msgs  jsonb[];
  v_claim       uuid[];
  v_claims      jsonb;
  v_plain       boolean;
  q             record;
BEGIN
  PERFORM set_config('tasker.steps_enqueued', 'off', true);
  -- The step ids, and whether every result is a success without an outcome.
  SELECT array_agg(DISTINCT (x->>'step_uuid')::uuid),
         bool_and(jsonb_typeof(x->'success') = 'boolean' AND (x->>'success')::boolean
                  AND coalesce(jsonb_typeof(x->'outcome'), 'null') = 'null')
    INTO v_ids, v_plain
    FROM jsonb_array_elements(p_results) AS x;
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                          WHERE s.step_uuid = ANY (v_ids))
   ORDER BY t.task_uuid FOR NO KEY UPDATE;
  -- The common case, every result a success without an outcome for a step that takes
  -- none, is recorded by one statement here: what store_step_results does for such a
  -- result (the step complete with its result and its claim cleared, an audit row, a log
  -- row), without its general path's function calls and the queries it needs for failures
  -- and outcomes. Anything else goes through store_step_results, as before.
  IF v_plain THEN
    SELECT NOT coalesce(bool_or(s.step_type IN ('decision', 'batchable')), false) INTO v_plain
      FROM tasker.workflow_steps s WHERE s.step_uuid = ANY (v_ids);
  END IF;
  IF v_plain THEN
    PERFORM 1 FROM tasker.workflow_steps s
     WHERE s.step_uuid = ANY (v_ids) ORDER BY s.step_uuid FOR NO KEY UPDATE;
    WITH r AS (
      SELECT DISTINCT ON ((x->>'step_uuid')::uuid)
             (x->>'step_uuid')::uuid AS step_uuid, (x->>'attempt')::integer AS attempt,
             x->'result' AS result, (x->>'execution_ms')::bigint AS execution_ms,
             CASE WHEN jsonb_typeof(x->'metadata') = 'object' THEN x->'metadata'
                  ELSE '{}'::jsonb END AS metadata
        FROM jsonb_array_elements(p_results) AS x
       ORDER BY (x->>'step_uuid')::uuid
    ), applied AS (
      -- Only while this worker still holds the claim, for this attempt; the others are
      -- refused below.
      UPDATE tasker.workflow_steps s
         SET state = 'complete', completed_at = clock_timestamp(), updated_at = now(),
             results = r.result, last_error = NULL, claim_owner = NULL,
             lease_expires_at = NULL
        FROM r
       WHERE s.step_uuid = ANY (v_ids) AND s.step_uuid = r.step_uuid
         AND s.state = 'in_progress' AND s.claim_owner = p_worker AND s.attempts = r.attempt
      RETURNING s.step_uuid, s.task_uuid, r.attempt, r.result, r.execution_ms, r.metadata
    ), audited AS (
      INSERT INTO tasker.step_result_audits
        (step_uuid, task_uuid, attempt, worker_id, success, result, error, execution_time_ms,
         metadata)
      SELECT a.step_uuid, a.task_uuid, a.attempt, p_worker, true, a.result, NULL,
             a.execution_ms, a.metadata
        FROM applied a
    ), logged AS (
      -- After each step's last row: the steps are locked above.
      INSERT INTO tasker.workflow_step_transition_log
        (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
      SELECT a.step_uuid, a.task_uuid, 'in_progress', 'complete',
             coalesce((SELECT max(l.sort_key) + 1 FROM tasker.workflow_step_transition_log l
                        WHERE l.step_uuid = a.step_uuid), 0),
             p_worker,
             jsonb_build_object('attempt', a.attempt, 'execution_time_ms', a.execution_ms)
        FROM applied a
    )
    SELECT array_agg(a.step_uuid ORDER BY a.step_uuid),
           array_agg(a.task_uuid ORDER BY a.step_uuid)
      INTO v_done, v_done_tasks
      FROM applied a;
  ELSE
    SELECT array_agg(r.step_uuid ORDER BY r.step_uuid) FILTER (WHERE r.state = 'complete'),
           array_agg(r.task_uuid ORDER BY r.step_uuid) FILTER (WHERE r.state = 'complete'),
           array_agg(r.step_uuid ORDER BY r.task_uuid, r.step_uuid) FILTER (WHERE r.state <> 'complete'),
           array_agg(r.task_uuid ORDER BY r.task_uuid, r.step_uuid) FILTER (WHERE r.state <> 'complete'),
           array_agg(r.attempt ORDER BY r.task_uuid, r.step_uuid) FILTER (WHERE r.state <> 'complete')
      INTO v_done, v_done_tasks, v_steps, v_tasks, v_attempts
      FROM tasker.store_step_results(p_worker, p_results, false) r;
  END IF;
  IF v_done IS NOT NULL THEN
    SELECT array_agg(k.step_uuid ORDER BY k.step_uuid), array_agg(k.n ORDER BY k.step_uuid)
      INTO v_children, v_parents_done
      FROM (SELECT e.to_step_uuid AS step_uuid, count(*)::integer AS n
              FROM tasker.workflow_step_edges e
             WHERE e.from_step_uuid = ANY (v_done)
             GROUP BY 1) AS k;
  END IF;
  IF v_children IS NOT NULL THEN
    -- Each child's count of parents left goes down by its parents completed here (counted
    -- above, in one read of the edges); those left with none whose task is running are
    -- enqueued by the same UPDATE, and the first p_claim_max of them in the caller's
    -- namespaces are claimed by it for this worker (in_progress, attempt, owner, lease),
    -- as claim_steps would have claimed them in a second update of the same rows.
    -- Children are locked in step order, as parents_done locks them. They are reached
    -- through their key array, as everywhere on this path: joined to the counts alone, the
    -- generic plan may merge-join the step table's whole primary key.
    WITH locked AS (
      SELECT c.step_uuid, k.n, ns.name AS ns, nt.name AS task_name, nt.version,
             t.context, c.attempts,
             c.state = 'pending' AND c.pending_parents = k.n AND t.state = 'steps_in_process'
               AND c.attempts < c.max_attempts AND (c.retryable OR c.attempts = 0)
               AND (c.next_retry_at IS NULL OR c.next_retry_at <= clock_timestamp()) AS ready
        FROM unnest(v_children, v_parents_done) AS k(step_uuid, n)
        JOIN tasker.workflow_steps c ON c.step_uuid = k.step_uuid
        JOIN tasker.tasks t ON t.task_uuid = c.task_uuid
        JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
        JOIN tasker.namespaces ns ON ns.namespace_uuid = nt.namespace_uuid
       WHERE c.step_uuid = ANY (v_children) AND c.pending_parents IS NOT NULL
       ORDER BY c.step_uuid
         FOR NO KEY UPDATE OF c
    ), picked AS (
      SELECT l.*,
             coalesce(l.ready AND l.ns = ANY (p_send_namespaces)
                        AND count(*) FILTER (WHERE l.ready AND l.ns = ANY (p_send_namespaces))
                              OVER (ORDER BY l.step_uuid) <= p_claim_max, false) AS claimed
        FROM locked l
    ), moved AS (
      UPDATE tasker.workflow_steps c
         SET pending_parents = c.pending_parents - l.n,
             state = CASE WHEN l.claimed THEN 'in_progress'
                          WHEN l.ready THEN 'enqueued' ELSE c.state END,
             enqueued_at = CASE WHEN l.ready THEN clock_timestamp() ELSE c.enqueued_at END,
             next_retry_at = CASE WHEN l.ready THEN NULL ELSE c.next_retry_at END,
             updated_at = CASE WHEN l.ready THEN now() ELSE c.updated_at END,
             attempts = CASE WHEN l.claimed THEN c.attempts + 1 ELSE c.attempts END,
             claim_owner = CASE WHEN l.claimed THEN p_worker ELSE c.claim_owner END,
             lease_expires_at = CASE WHEN l.claimed
                                     THEN clock_timestamp() + make_interval(secs => p_lease_seconds)
                                     ELSE c.lease_expires_at END,
             started_at = CASE WHEN l.claimed THEN clock_timestamp() ELSE c.started_at END
        FROM picked l
       WHERE c.step_uuid = ANY (v_children) AND c.step_uuid = l.step_uuid
      RETURNING c.step_uuid, c.task_uuid, c.name, l.attempts + 1 AS attempt, l.ns, l.ready,
                l.claimed, l.task_name, l.version, l.context, c.max_attempts,
                c.handler_callable, c.handler_initialization, c.timeout_seconds,
                c.publishes_events, c.inputs, c.lease_expires_at
    )
    SELECT array_agg(m.step_uuid ORDER BY m.step_uuid),
           array_agg(m.task_uuid ORDER BY m.step_uuid),
           array_agg(jsonb_build_object('attempt', m.attempt) ORDER BY m.step_uuid),
           array_agg(m.ns ORDER BY m.step_uuid),
           array_agg(jsonb_build_object('task_uuid', m.task_uuid, 'step_uuid', m.step_uuid,
                                        'step_name', m.name, 'namespace', m.ns,
                                        'attempt', m.attempt) ORDER BY m.step_uuid),
           array_agg(m.step_uuid ORDER BY m.step_uuid) FILTER (WHERE m.claimed),
           -- What claim_steps returns for a claimed step, as the worker hands it over.
           jsonb_object_agg(m.step_uuid, jsonb_build_object(
             'step_uuid', m.step_uuid, 'outcome', 'claimed',
             'lease_expires_at', m.lease_expires_at, 'task_uuid', m.task_uuid,
             'step_name', m.name, 'namespace', m.ns, 'task_name', m.task_name,
             'task_version', m.version, 'attempt', m.attempt,
             'max_attempts', m.max_attempts, 'handler_callable', m.handler_callable,
             'handler_initialization', m.handler_initialization,
             'timeout_seconds', m.timeout_seconds, 'publishes_events', m.publishes_events,
             'inputs', m.inputs, 'task_context', m.context,
             'dependency_results',
             coalesce((SELECT jsonb_object_agg(ps.name, ps.results)
                         FROM tasker.workflow_step_edges e
                         JOIN tasker.workflow_steps ps ON ps.step_uuid = e.from_step_uuid
                        WHERE e.to_step_uuid = m.step_uuid AND NOT e.gate), '{}'::jsonb)))
             FILTER (WHERE m.claimed)
      INTO v_ready, v_ready_tasks, v_ready_meta, v_ready_ns, v_ready_msgs, v_claim, v_claims
      FROM moved m WHERE m.ready;
    IF v_ready IS NOT NULL THEN
      -- pending -> enqueued for each, and enqueued -> in_progress after it for a claimed
      -- one: allowed transitions both, appended after the step's last row (the UPDATE
      -- above holds the rows locked).
      INSERT INTO tasker.workflow_step_transition_log
        (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
      SELECT u.step, u.task, x.f, x.t, k.next + x.i, p_worker,
             CASE WHEN x.i = 0 THEN u.meta ELSE '{}'::jsonb END
        FROM unnest(v_ready, v_ready_tasks, v_ready_meta) AS u(step, task, meta)
        CROSS JOIN LATERAL (SELECT coalesce(max(l.sort_key) + 1, 0) AS next
                              FROM tasker.workflow_step_transition_log l
                             WHERE l.step_uuid = u.step) AS k
        JOIN (VALUES (0, 'pending', 'enqueued'), (1, 'enqueued', 'in_progress')) AS x(i, f, t)
          ON x.i = 0 OR u.step = ANY (coalesce(v_claim, ARRAY[]::uuid[]));
      FOR q IN SELECT u.ns, array_agg(u.msg) AS msgs
                 FROM unnest(v_ready_ns, v_ready_msgs) AS u(ns, msg)
                WHERE NOT (u.ns = ANY (coalesce(p_send_namespaces, ARRAY[]::text[])))
                GROUP BY 1 LOOP
        PERFORM tasker.send_step_messages(q.ns, q.msgs);
      END LOOP;
    END IF;
  END IF;
  IF v_steps IS NOT NULL THEN
    SELECT jsonb_agg(jsonb_build_object('step', v_steps[a.msg_id], 'task', a.task_uuid,
                                        'ns', a.namespace, 'outcome', a.outcome))
      INTO v_applied
      FROM tasker.apply_step_results(
             (SELECT array_agg(g) FROM generate_series(1, cardinality(v_steps)) AS g),
             v_tasks, v_steps, v_attempts, array_fill(p_worker, ARRAY[cardinality(v_steps)]),
             p_worker, p_jitter_ratio, p_max_retry_after_ms) a;
  END IF;
  IF v_done IS NOT NULL THEN
    -- Tasks the failures above touched are finalized already. A task that got a ready
    -- step from this recording cannot have finished: only the others are looked at.
    SELECT array_agg(DISTINCT u.t ORDER BY u.t),
           array_agg(DISTINCT u.t ORDER BY u.t)
             FILTER (WHERE NOT (u.t = ANY (coalesce(v_ready_tasks, ARRAY[]::uuid[]))))
      INTO v_touched, v_may_finish
      FROM unnest(v_done_tasks) AS u(t)
     WHERE NOT (u.t = ANY (coalesce(v_tasks, ARRAY[]::uuid[])));
  END IF;
  IF v_may_finish IS NOT NULL THEN
    -- Those whose every step is now complete (or resolved manually) complete together:
    -- what finalize_task would do for each (its execution context says all_complete), in
    -- three statements for all of them.
    -- The tasks are reached by key alone (OFFSET 0 keeps their state out of the scan):
    -- tasks_active_idx holds an entry for every version of a task that was ever
    -- steps_in_process until a vacuum, so a scan of it for the state visits them all.
    WITH finished AS (
      SELECT k.task_uuid
        FROM (SELECT t.task_uuid, t.state FROM tasker.tasks t
               WHERE t.task_uuid = ANY (v_may_finish) OFFSET 0) AS k
       WHERE k.state = 'steps_in_process'
         AND NOT EXISTS (SELECT 1 FROM tasker.workflow_steps s
                          WHERE s.task_uuid = k.task_uuid
                            AND s.state NOT IN ('complete', 'resolved_manually'))
    ), moved AS (
      UPDATE tasker.tasks t
         SET state = 'complete', updated_at = now(), completed_at = clock_timestamp()
        FROM finished f
       WHERE t.task_uuid = f.task_uuid AND t.state = 'steps_in_process'
      RETURNING t.task_uuid
    ), previous AS (
      UPDATE tasker.task_transitions x SET most_recent = false
        FROM moved m
       WHERE x.task_uuid = m.task_uuid AND x.most_recent
      RETURNING x.task_uuid, x.sort_key
    ), logged AS (
      INSERT INTO tasker.task_transitions AS n
        (task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
      SELECT p.task_uuid, 'steps_in_process', 'complete', p.sort_key + 1, true, p_worker,
             '{"execution_status": "all_complete"}'::jsonb
        FROM previous p
      RETURNING n.task_uuid
    )
    SELECT array_agg(l.task_uuid) INTO v_finished FROM logged l;
  END IF;
  IF v_touched IS NOT NULL THEN
    -- The rest one by one, where finalizing could change something. Materialized, so each
    -- task is checked once rather than once per step.
    PERFORM tasker.finalize_task(d.t, p_worker)
       FROM (SELECT u.t FROM unnest(v_touched) AS u(t)
              WHERE NOT (u.t = ANY (coalesce(v_finished, ARRAY[]::uuid[])))
             OFFSET 0) AS d
      WHERE tasker.task_needs_finalizing(d.t)
      ORDER BY d.t;
  END IF;
  v_enqueued := current_setting('tasker.steps_enqueued') = 'on';
  RETURN QUERY
    SELECT (a->>'step')::uuid, (a->>'task')::uuid, a->>'ns', a->>'outcome', v_enqueued,
           NULL::jsonb, NULL::jsonb
      FROM jsonb_array_elements(coalesce(v_applied, '[]'::jsonb)) AS a;
  IF v_done IS NOT NULL THEN
    RETURN QUERY
      SELECT d.s, d.t, n.ns, 'completed'::text, v_enqueued, NULL::jsonb, NULL::jsonb
        FROM unnest(v_done, v_done_tasks) AS d(s, t)
        JOIN (SELECT u.t, ns.name AS ns
                FROM (SELECT DISTINCT x AS t FROM unnest(v_done_tasks) AS x) AS u
                JOIN tasker.tasks tk ON tk.task_uuid = u.t
                JOIN tasker.named_tasks nt ON nt.named_task_uuid = tk.named_task_uuid
                JOIN tasker.namespaces ns ON ns.namespace_uuid = nt.namespace_uuid) AS n
          ON n.t = d.t;
  END IF;
  RETURN QUERY
    SELECT id, NULL::uuid, NULL::text, 'refused'::text, v_enqueued, NULL::jsonb, NULL::jsonb
      FROM unnest(v_ids) AS id
     WHERE NOT (id = ANY (coalesce(v_steps, ARRAY[]::uuid[]) || coalesce(v_done, ARRAY[]::uuid[])));
  RETURN QUERY
    SELECT u.step, u.task, u.ns, 'enqueued'::text, v_enqueued, u.msg, v_claims -> u.step::text
      FROM unnest(v_ready, v_ready_tasks, v_ready_ns, v_ready_msgs) AS u(step, task, ns, msg)
     WHERE u.ns = ANY (p_send_namespaces);
END;
$function$;

-- Counts edges just added (p_from[i] -> p_to[i]) into their children's parent counters.
-- Returns how many edges it counted.
CREATE OR REPLACE FUNCTION tasker.count_new_parents(p_from uuid[], p_to uuid[])
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  IF p_from IS NULL THEN
    RETURN 0;
  END IF;
  PERFORM 1 FROM tasker.workflow_steps c
   WHERE c.step_uuid = ANY (p_to) ORDER BY c.step_uuid FOR NO KEY UPDATE;
  UPDATE tasker.workflow_steps c
     SET parent_count = c.parent_count + n.total, pending_parents = c.pending_parents + n.pending
    FROM (SELECT e.t, count(*) AS total,
                 count(*) FILTER (WHERE p.state NOT IN ('complete', 'resolved_manually')) AS pending
            FROM unnest(p_from, p_to) AS e(f, t)
            JOIN tasker.workflow_steps p ON p.step_uuid = e.f
           WHERE p.step_uuid = ANY (p_from)
           GROUP BY e.t) n
   WHERE c.step_uuid = ANY (p_to) AND c.step_uuid = n.t AND c.pending_parents IS NOT NULL;
  RETURN cardinality(p_from);
END;
$function$;

-- Creates one copy of the batch_worker step per batch of each given batchable step (their
-- outcomes already stored), in one statement however many batches: named <worker>_000,
-- _001, ... in batch order, each with its batch as inputs.batch, an edge from the batchable
-- step and a first transition.
CREATE OR REPLACE FUNCTION tasker.create_batch_workers(p_steps uuid[], p_actor text)
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_n integer;
BEGIN
  WITH copies AS (
    INSERT INTO tasker.workflow_steps
      (task_uuid, name, position, step_type, template_step, handler_callable,
       handler_initialization, max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms,
       timeout_seconds, publishes_events, inputs, parent_count, pending_parents)
    SELECT s.task_uuid,
           w.name || '_' || lpad((o.i - 1)::text, greatest(3, length((o.i - 1)::text)), '0'),
           w.position, 'batch_worker', w.name, w.handler_callable, w.handler_initialization,
           w.max_attempts, w.retryable, w.backoff, w.backoff_base_ms, w.max_backoff_ms,
           w.timeout_seconds, w.publishes_events, jsonb_build_object('batch', o.batch),
           -- The batchable step, being recorded now, is the one parent.
           1, 1
      FROM tasker.workflow_steps s
      JOIN tasker.step_blueprints pb ON pb.task_uuid = s.task_uuid AND pb.name = s.name
      JOIN tasker.step_blueprints w ON w.task_uuid = s.task_uuid AND w.name = pb.batch_worker
     CROSS JOIN LATERAL jsonb_array_elements(s.outcome->'batches') WITH ORDINALITY AS o(batch, i)
     WHERE s.step_uuid = ANY (p_steps) AND s.step_type = 'batchable'
     ORDER BY s.step_uuid, o.i
    ON CONFLICT (task_uuid, name) DO NOTHING
    RETURNING step_uuid, task_uuid, template_step
  ), edges AS (
    INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
    SELECT c.task_uuid, s.step_uuid, c.step_uuid
      FROM copies c
      JOIN tasker.step_blueprints pb ON pb.task_uuid = c.task_uuid AND pb.batch_worker = c.template_step
      JOIN tasker.workflow_steps s ON s.task_uuid = c.task_uuid AND s.name = pb.name
     WHERE s.step_uuid = ANY (p_steps)
  ), logged AS (
    INSERT INTO tasker.workflow_step_transitions
      (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
    SELECT c.step_uuid, c.task_uuid, NULL, 'pending', 0, true, p_actor,
           '{"created_by": "batch"}'::jsonb
      FROM copies c
  )
  SELECT count(*) INTO v_n FROM copies;
  RETURN v_n;
END;
$function$;

-- Stores a new dynamic task's blueprints (p_blueprints: [{name, position, step_type,
-- handler_callable, handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
-- max_backoff_ms, timeout_seconds, publishes_events, dependencies, gate, batch_worker,
-- max_workers}]) and creates the steps that are certain. Returns the number created.
CREATE OR REPLACE FUNCTION tasker.create_dynamic_steps(p_task uuid, p_blueprints jsonb, p_max_steps integer, p_actor text)
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  UPDATE tasker.tasks SET max_steps = p_max_steps WHERE task_uuid = p_task;
  INSERT INTO tasker.step_blueprints
    (task_uuid, name, position, step_type, handler_callable, handler_initialization,
     max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, timeout_seconds,
     publishes_events, dependencies, gate, batch_worker, max_workers)
  SELECT p_task, b.name, b.position, b.step_type, b.handler_callable,
         coalesce(b.handler_initialization, '{}'::jsonb), b.max_attempts, b.retryable, b.backoff,
         b.backoff_base_ms, b.max_backoff_ms, b.timeout_seconds,
         coalesce(b.publishes_events, '[]'::jsonb),
         ARRAY(SELECT jsonb_array_elements_text(coalesce(b.dependencies, '[]'::jsonb))),
         b.gate, b.batch_worker, b.max_workers
    FROM jsonb_to_recordset(p_blueprints) AS b(
      name text, position integer, step_type text, handler_callable text,
      handler_initialization jsonb, max_attempts integer, retryable boolean, backoff text,
      backoff_base_ms bigint, max_backoff_ms bigint, timeout_seconds integer,
      publishes_events jsonb, dependencies jsonb, gate text, batch_worker text,
      max_workers integer);
  RETURN tasker.expand_steps(p_task, p_actor);
END;
$function$;

-- Creates one task with its steps, edges, parent counters and first transitions, and starts
-- it: roots enqueued (their messages inserted into the namespace queue unless p_hold_roots,
-- when the caller sends them), or, for a dynamic task, its blueprints stored and the
-- certain steps created. p_claim_worker with p_claims: the roots marked there are claimed
-- for that worker (a worker in the creating process) in this transaction instead of being
-- queued. An idempotency key already taken returns the existing task (created false).
CREATE OR REPLACE FUNCTION tasker.create_task(p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text, p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[], p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[], p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[], p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean DEFAULT false, p_claim_worker text DEFAULT NULL::text, p_claims boolean[] DEFAULT NULL::boolean[], p_lease_seconds integer DEFAULT 0)
 RETURNS TABLE(task_uuid uuid, created boolean, state text, messages jsonb, claimed uuid[], lease_expires_at timestamp with time zone)
 LANGUAGE plpgsql
 ROWS 1
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_task    uuid;
  v_started boolean := p_blueprints IS NULL AND 0 = ANY (p_parents);
  v_ns      text;
  v_roots   uuid[];
  v_names   text[];
  v_claimed uuid[];
  v_lease   timestamptz := clock_timestamp() + make_interval(secs => p_lease_seconds);
BEGIN
  INSERT INTO tasker.tasks (named_task_uuid, context, idempotency_key, initiator, state)
  VALUES (p_named_task, p_context, p_idempotency_key, p_initiator,
          CASE WHEN v_started THEN 'steps_in_process' ELSE 'pending' END)
  ON CONFLICT (named_task_uuid, idempotency_key) DO NOTHING
  RETURNING tasks.task_uuid INTO v_task;
  IF v_task IS NULL THEN
    -- The key was taken (possibly by a concurrent identical request, which this insert
    -- waited for): hand back that task.
    RETURN QUERY
      SELECT t.task_uuid, false, t.state, NULL::jsonb, NULL::uuid[], NULL::timestamptz
        FROM tasker.tasks t
       WHERE t.named_task_uuid = p_named_task AND t.idempotency_key = p_idempotency_key;
    RETURN;
  END IF;
  IF p_blueprints IS NOT NULL THEN
    -- Only what is certain is created now; the rest waits for outcomes.
    PERFORM tasker.create_dynamic_steps(v_task, p_blueprints, p_max_steps, p_actor);
    RETURN QUERY SELECT v_task, true, tasker.start_task(v_task, p_actor), NULL::jsonb,
                        NULL::uuid[], NULL::timestamptz;
    RETURN;
  END IF;
  WITH made AS (
    INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
      handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
      max_backoff_ms, timeout_seconds, publishes_events, parent_count, pending_parents,
      state, enqueued_at, attempts, claim_owner, lease_expires_at, started_at)
    SELECT v_task, u.name, u.position, u.callable, u.init, u.max_attempts, u.retryable,
           u.backoff, u.base_ms, u.max_ms, u.timeout, u.events, u.parents, u.parents,
           CASE WHEN u.parents > 0 THEN 'pending'
                WHEN u.claimed THEN 'in_progress' ELSE 'enqueued' END,
           CASE WHEN u.parents = 0 THEN clock_timestamp() END,
           CASE WHEN u.claimed THEN 1 ELSE 0 END,
           CASE WHEN u.claimed THEN p_claim_worker END,
           CASE WHEN u.claimed THEN v_lease END,
           CASE WHEN u.claimed THEN clock_timestamp() END
      FROM (SELECT x.*, x.parents = 0 AND coalesce(x.claim, false)
                        AND p_claim_worker IS NOT NULL AS claimed
              FROM unnest(p_names, p_positions, p_callables, p_inits, p_max_attempts,
                          p_retryable, p_backoff, p_base_ms, p_max_ms, p_timeouts, p_events,
                          p_parents, p_claims)
                   AS x(name, position, callable, init, max_attempts, retryable, backoff,
                        base_ms, max_ms, timeout, events, parents, claim)) AS u
    RETURNING workflow_steps.step_uuid, workflow_steps.name, workflow_steps.state
  ), logged AS (
    INSERT INTO tasker.workflow_step_transition_log
      (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
    SELECT m.step_uuid, v_task, NULL, 'pending', 0, p_actor, '{}'::jsonb FROM made m
    UNION ALL
    SELECT m.step_uuid, v_task, 'pending', 'enqueued', 1, p_actor, '{"attempt": 1}'::jsonb
      FROM made m WHERE m.state IN ('enqueued', 'in_progress')
    UNION ALL
    SELECT m.step_uuid, v_task, 'enqueued', 'in_progress', 2, p_claim_worker, '{}'::jsonb
      FROM made m WHERE m.state = 'in_progress'
  ), linked AS (
    INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
    SELECT v_task, f.step_uuid, t.step_uuid
      FROM unnest(p_edge_from, p_edge_to) AS e(from_name, to_name)
      JOIN made f ON f.name = e.from_name
      JOIN made t ON t.name = e.to_name
  )
  SELECT array_agg(m.step_uuid), array_agg(m.name),
         array_agg(m.step_uuid) FILTER (WHERE m.state = 'in_progress')
    INTO v_roots, v_names, v_claimed
    FROM made m WHERE m.state IN ('enqueued', 'in_progress');
  IF NOT v_started THEN
    RETURN QUERY SELECT v_task, true, tasker.start_task(v_task, p_actor), NULL::jsonb,
                        NULL::uuid[], NULL::timestamptz;
    RETURN;
  END IF;
  SELECT n.name INTO v_ns
    FROM tasker.named_tasks nt JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
   WHERE nt.named_task_uuid = p_named_task;
  -- Claimed roots are only claimed by a caller that sends their messages (as read).
  IF v_claimed IS NOT NULL AND NOT p_hold_roots THEN
    RAISE EXCEPTION 'task %: roots claimed at creation need p_hold_roots', v_task
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM tasker.task_started(v_task, v_ns, v_roots, v_names, p_actor, NOT p_hold_roots);
  -- The roots' messages built here rather than by tasker.root_messages: a SQL function's
  -- body is planned on every call, this statement once per connection.
  RETURN QUERY SELECT v_task, true, 'steps_in_process'::text,
    CASE WHEN p_hold_roots THEN
      (SELECT jsonb_agg(jsonb_build_object('task_uuid', v_task, 'step_uuid', u.step,
                                           'step_name', u.name, 'namespace', v_ns,
                                           'attempt', 1))
         FROM unnest(v_roots, v_names) AS u(step, name))
    END,
    v_claimed, CASE WHEN v_claimed IS NOT NULL THEN v_lease END;
END;
$function$;

-- create_task, then the task and its steps read back as JSON in the same call (one round
-- trip for a creating client).
CREATE OR REPLACE FUNCTION tasker.create_task_read(p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text, p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[], p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[], p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[], p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean DEFAULT false, p_claim_worker text DEFAULT NULL::text, p_claims boolean[] DEFAULT NULL::boolean[], p_lease_seconds integer DEFAULT 0)
 RETURNS TABLE(task_uuid uuid, created boolean, state text, task json, steps json, messages jsonb, claimed uuid[], lease_expires_at timestamp with time zone)
 LANGUAGE plpgsql
 ROWS 1
AS $function$
DECLARE
  v_task     uuid;
  v_created  boolean;
  v_state    text;
  v_messages jsonb;
  v_claimed  uuid[];
  v_lease    timestamptz;
BEGIN
  SELECT c.task_uuid, c.created, c.state, c.messages, c.claimed, c.lease_expires_at
    INTO v_task, v_created, v_state, v_messages, v_claimed, v_lease
    FROM tasker.create_task(p_named_task, p_context, p_idempotency_key, p_initiator, p_actor,
           p_names, p_positions, p_callables, p_inits, p_max_attempts, p_retryable, p_backoff,
           p_base_ms, p_max_ms, p_timeouts, p_events, p_parents, p_edge_from, p_edge_to,
           p_blueprints, p_max_steps, p_hold_roots, p_claim_worker, p_claims,
           p_lease_seconds) AS c;
  RETURN QUERY SELECT v_task, v_created, v_state,
    (SELECT to_json(r) FROM tasker.task_rows r WHERE r.task_uuid = v_task),
    (SELECT coalesce(json_agg(to_json(s) ORDER BY s.position, s.name), '[]'::json)
       FROM tasker.step_rows s WHERE s.task_uuid = v_task),
    v_messages, v_claimed, v_lease;
END;
$function$;

-- Creates a batch of fixed-DAG tasks of one namespace in one statement per table (the
-- creation batcher's path): tasks, steps, edges, transitions and root messages. Requests are
-- numbered 1..n; p_step_task and p_edge_task say which request each step and edge belongs
-- to. One row per request: its task, whether it was created (an idempotency key already
-- taken returns the existing task) and its state.
CREATE OR REPLACE FUNCTION tasker.create_tasks(p_ns text, p_actor text, p_named_tasks uuid[], p_contexts jsonb[], p_keys text[], p_initiators text[], p_step_task integer[], p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[], p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[], p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[], p_edge_task integer[], p_edge_from text[], p_edge_to text[])
 RETURNS TABLE(idx integer, task_uuid uuid, created boolean, state text)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_idx   integer[];
  v_tasks uuid[];
  v_msgs  jsonb[];
BEGIN
  -- Materialized (it is read twice), so each task's generated key is drawn once.
  WITH req AS (
    SELECT u.i::integer AS i, tasker.uuid_v7() AS id, u.nt, u.ctx, u.k, u.ini
      FROM unnest(p_named_tasks, p_contexts, p_keys, p_initiators)
           WITH ORDINALITY AS u(nt, ctx, k, ini, i)
  ), made AS (
    INSERT INTO tasker.tasks AS t (task_uuid, named_task_uuid, context, idempotency_key,
                                   initiator, state)
    SELECT r.id, r.nt, r.ctx, r.k, r.ini, 'steps_in_process' FROM req r ORDER BY r.i
    ON CONFLICT (named_task_uuid, idempotency_key) DO NOTHING
    RETURNING t.task_uuid
  )
  SELECT array_agg(r.i ORDER BY r.i), array_agg(r.id ORDER BY r.i) INTO v_idx, v_tasks
    FROM req r JOIN made m ON m.task_uuid = r.id;
  IF v_tasks IS NOT NULL THEN
    WITH made AS (
      INSERT INTO tasker.workflow_steps AS s (task_uuid, name, position, handler_callable,
        handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
        max_backoff_ms, timeout_seconds, publishes_events, parent_count, pending_parents,
        state, enqueued_at)
      SELECT c.id, u.name, u.position, u.callable, u.init, u.max_attempts, u.retryable,
             u.backoff, u.base_ms, u.max_ms, u.timeout, u.events, u.parents, u.parents,
             CASE WHEN u.parents = 0 THEN 'enqueued' ELSE 'pending' END,
             CASE WHEN u.parents = 0 THEN clock_timestamp() END
        FROM unnest(p_step_task, p_names, p_positions, p_callables, p_inits, p_max_attempts,
                    p_retryable, p_backoff, p_base_ms, p_max_ms, p_timeouts, p_events,
                    p_parents)
             AS u(ti, name, position, callable, init, max_attempts, retryable, backoff,
                  base_ms, max_ms, timeout, events, parents)
        JOIN unnest(v_idx, v_tasks) AS c(i, id) ON c.i = u.ti
      RETURNING s.step_uuid, s.task_uuid, s.name, s.state
    ), logged AS (
      INSERT INTO tasker.workflow_step_transition_log
        (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
      SELECT m.step_uuid, m.task_uuid, NULL, 'pending', 0, p_actor, '{}'::jsonb FROM made m
      UNION ALL
      SELECT m.step_uuid, m.task_uuid, 'pending', 'enqueued', 1, p_actor,
             '{"attempt": 1}'::jsonb
        FROM made m WHERE m.state = 'enqueued'
    ), linked AS (
      INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
      SELECT c.id, f.step_uuid, t.step_uuid
        FROM unnest(p_edge_task, p_edge_from, p_edge_to) AS e(ti, from_name, to_name)
        JOIN unnest(v_idx, v_tasks) AS c(i, id) ON c.i = e.ti
        JOIN made f ON f.task_uuid = c.id AND f.name = e.from_name
        JOIN made t ON t.task_uuid = c.id AND t.name = e.to_name
    )
    SELECT array_agg(jsonb_build_object('task_uuid', m.task_uuid, 'step_uuid', m.step_uuid,
                                        'step_name', m.name, 'namespace', p_ns,
                                        'attempt', 1))
      INTO v_msgs
      FROM made m WHERE m.state = 'enqueued';
    IF v_msgs IS NOT NULL THEN
      PERFORM tasker.send_step_messages(p_ns, v_msgs);
    END IF;
    INSERT INTO tasker.task_transitions
      (task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
    SELECT c.id, f.from_state, f.to_state, f.sort_key, f.most_recent, p_actor, f.metadata
      FROM unnest(v_tasks) AS c(id)
     CROSS JOIN (VALUES (NULL, 'pending', 0, false, '{}'::jsonb),
                        ('pending', 'initializing', 1, false, '{}'::jsonb),
                        ('initializing', 'enqueuing_steps', 2, false, '{}'::jsonb),
                        ('enqueuing_steps', 'steps_in_process', 3, true,
                         '{"execution_status": "processing"}'::jsonb))
           AS f(from_state, to_state, sort_key, most_recent, metadata);
  END IF;
  RETURN QUERY
    SELECT c.i, c.id, true, 'steps_in_process'::text
      FROM unnest(v_idx, v_tasks) AS c(i, id)
    UNION ALL
    -- The key was taken (by an earlier request of this batch, or a concurrent one whose
    -- insert this one waited for): that task.
    SELECT r.i::integer, t.task_uuid, false, t.state
      FROM unnest(p_named_tasks, p_keys) WITH ORDINALITY AS r(nt, k, i)
      JOIN tasker.tasks t ON t.named_task_uuid = r.nt AND t.idempotency_key = r.k
     WHERE NOT (r.i::integer = ANY (coalesce(v_idx, ARRAY[]::integer[])));
END;
$function$;

-- Enqueues a task's ready steps unless one of its steps failed for good.
CREATE OR REPLACE FUNCTION tasker.enqueue_ready_steps(p_task uuid, p_actor text)
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_state text;
BEGIN
  SELECT t.state INTO v_state FROM tasker.tasks t WHERE t.task_uuid = p_task;
  IF v_state IS NULL
     OR v_state NOT IN ('enqueuing_steps', 'steps_in_process', 'evaluating_results',
                        'waiting_for_dependencies', 'waiting_for_retry')
     OR tasker.task_has_permanent_failure(p_task) THEN
    RETURN 0;
  END IF;
  RETURN tasker.enqueue_steps_of(p_task, p_actor);
END;
$function$;

-- Enqueues a task's ready steps (get_step_readiness_status): state enqueued, transition
-- logged, one message each in the namespace's queue. Returns how many.
CREATE OR REPLACE FUNCTION tasker.enqueue_steps_of(p_task uuid, p_actor text)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_ns    text;
  v_steps uuid[];
  v_tasks uuid[];
  v_from  text[];
  v_to    text[];
  v_meta  jsonb[];
  v_msgs  jsonb[];
BEGIN
  v_ns := tasker.task_namespace(p_task);
  WITH ready AS (
    SELECT rs.step_uuid, rs.current_state, rs.name
      FROM tasker.get_step_readiness_status(p_task) rs
     WHERE rs.ready_for_execution
  ), moved AS (
    UPDATE tasker.workflow_steps s
       SET state = 'enqueued', updated_at = now(), enqueued_at = clock_timestamp(),
           next_retry_at = NULL
      FROM ready
     WHERE s.task_uuid = p_task AND s.step_uuid = ready.step_uuid
       AND s.state = ready.current_state
    RETURNING s.step_uuid, ready.current_state AS from_state, s.attempts, ready.name
  )
  SELECT array_agg(step_uuid), array_agg(p_task), array_agg(from_state),
         array_agg('enqueued'::text), array_agg(jsonb_build_object('attempt', attempts + 1)),
         array_agg(jsonb_build_object('task_uuid', p_task, 'step_uuid', step_uuid,
                                      'step_name', name, 'namespace', v_ns,
                                      'attempt', attempts + 1))
    INTO v_steps, v_tasks, v_from, v_to, v_meta, v_msgs
    FROM moved;
  IF v_steps IS NULL THEN
    RETURN 0;
  END IF;
  PERFORM tasker.record_step_transitions(v_steps, v_tasks, v_from, v_to, p_actor, v_meta);
  PERFORM tasker.send_step_messages(v_ns, v_msgs);
  RETURN cardinality(v_steps);
END;
$function$;

-- Creates every step of a dynamic task that should exist now and is missing, with its
-- edges and first transition: steps whose dependencies all exist (and whose decision
-- parents chose them), and convergence steps with an edge from each created dependency (a
-- batch worker's copies) and a gate edge from the nearest created decision or batchable step
-- whose outcome may still create a missing one. Repeated until nothing more is created (a
-- chosen branch's own descendants, steps after a convergence). Idempotent. Loops run over
-- the template's steps, never over batch copies. Returns the number of steps created.
CREATE OR REPLACE FUNCTION tasker.expand_steps(p_task uuid, p_actor text)
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_all   uuid[] := ARRAY[]::uuid[];
  v_round uuid[];
  v_ids   uuid[];
  v_deps  uuid[];
  v_gates uuid[];
  v_conv  uuid;
  v_edges integer;
  c       record;
  d       text;
  g       text;
  gs      record;
BEGIN
  -- The task row first, as result processing and operator actions take it: parents cannot
  -- finish (and be counted down) between reading their states and counting the edges added.
  PERFORM 1 FROM tasker.tasks WHERE task_uuid = p_task FOR NO KEY UPDATE;
  LOOP
    v_round := ARRAY[]::uuid[];
    LOOP
      WITH created AS (
        INSERT INTO tasker.workflow_steps
          (task_uuid, name, position, step_type, handler_callable, handler_initialization,
           max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, timeout_seconds,
           publishes_events, parent_count, pending_parents)
        SELECT p_task, b.name, b.position, b.step_type, b.handler_callable,
               b.handler_initialization, b.max_attempts, b.retryable, b.backoff,
               b.backoff_base_ms, b.max_backoff_ms, b.timeout_seconds, b.publishes_events, 0, 0
          FROM tasker.step_blueprints b
         WHERE b.task_uuid = p_task
           AND b.step_type NOT IN ('batch_worker', 'deferred_convergence')
           AND NOT EXISTS (SELECT 1 FROM tasker.workflow_steps s
                            WHERE s.task_uuid = p_task AND s.name = b.name)
           AND NOT EXISTS (
             SELECT 1 FROM unnest(b.dependencies) AS dep(name)
               LEFT JOIN tasker.workflow_steps ps ON ps.task_uuid = p_task AND ps.name = dep.name
              WHERE ps.step_uuid IS NULL
                 OR (ps.step_type = 'decision'
                     AND NOT coalesce(ps.outcome->'next_steps' ? b.name, false)))
         ORDER BY b.position
        ON CONFLICT (task_uuid, name) DO NOTHING
        RETURNING step_uuid
      )
      SELECT array_agg(step_uuid) INTO v_ids FROM created;
      EXIT WHEN v_ids IS NULL;
      v_round := v_round || v_ids;
    END LOOP;
    IF cardinality(v_round) > 0 THEN
      WITH added AS (
        INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
        SELECT p_task, ps.step_uuid, s.step_uuid
          FROM tasker.workflow_steps s
          JOIN tasker.step_blueprints b ON b.task_uuid = p_task AND b.name = s.name
          CROSS JOIN unnest(b.dependencies) AS dep(name)
          JOIN tasker.workflow_steps ps ON ps.task_uuid = p_task AND ps.name = dep.name
         WHERE s.step_uuid = ANY (v_round)
        ON CONFLICT DO NOTHING
        RETURNING from_step_uuid, to_step_uuid
      )
      SELECT tasker.count_new_parents(array_agg(from_step_uuid), array_agg(to_step_uuid))
        INTO v_edges FROM added;
    END IF;

    FOR c IN SELECT b.* FROM tasker.step_blueprints b
              WHERE b.task_uuid = p_task AND b.step_type = 'deferred_convergence'
              ORDER BY b.position LOOP
      v_deps := ARRAY[]::uuid[];
      v_gates := ARRAY[]::uuid[];
      FOREACH d IN ARRAY c.dependencies LOOP
        SELECT array_agg(s.step_uuid) INTO v_ids FROM tasker.workflow_steps s
         WHERE s.task_uuid = p_task AND (s.name = d OR s.template_step = d);
        IF v_ids IS NOT NULL THEN
          v_deps := v_deps || v_ids;
          CONTINUE;
        END IF;
        -- Not created: wait for the nearest created gate that has not decided yet. A gate
        -- that has decided without creating it means it never will be.
        g := d;
        LOOP
          SELECT b.gate INTO g FROM tasker.step_blueprints b
           WHERE b.task_uuid = p_task AND b.name = g;
          EXIT WHEN g IS NULL;
          SELECT s.step_uuid, s.outcome INTO gs FROM tasker.workflow_steps s
           WHERE s.task_uuid = p_task AND s.name = g;
          IF FOUND THEN
            IF gs.outcome IS NULL THEN
              v_gates := v_gates || gs.step_uuid;
            END IF;
            EXIT;
          END IF;
        END LOOP;
      END LOOP;
      SELECT s.step_uuid INTO v_conv FROM tasker.workflow_steps s
       WHERE s.task_uuid = p_task AND s.name = c.name;
      IF v_conv IS NULL THEN
        -- Created once anything it waits for exists.
        CONTINUE WHEN cardinality(v_deps) = 0 AND cardinality(v_gates) = 0;
        INSERT INTO tasker.workflow_steps
          (task_uuid, name, position, step_type, handler_callable, handler_initialization,
           max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, timeout_seconds,
           publishes_events, parent_count, pending_parents)
        VALUES (p_task, c.name, c.position, c.step_type, c.handler_callable,
                c.handler_initialization, c.max_attempts, c.retryable, c.backoff,
                c.backoff_base_ms, c.max_backoff_ms, c.timeout_seconds, c.publishes_events, 0, 0)
        ON CONFLICT (task_uuid, name) DO NOTHING
        RETURNING step_uuid INTO v_conv;
        CONTINUE WHEN v_conv IS NULL;
        v_round := v_round || v_conv;
      END IF;
      WITH added AS (
        INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid, gate)
        SELECT p_task, f, v_conv, false FROM unnest(v_deps) AS f
        UNION ALL
        SELECT p_task, f, v_conv, true FROM unnest(v_gates) AS f
         WHERE NOT (f = ANY (v_deps))
        ON CONFLICT DO NOTHING
        RETURNING from_step_uuid, to_step_uuid
      )
      SELECT tasker.count_new_parents(array_agg(from_step_uuid), array_agg(to_step_uuid))
        INTO v_edges FROM added;
    END LOOP;

    EXIT WHEN cardinality(v_round) = 0;
    v_all := v_all || v_round;
  END LOOP;

  IF cardinality(v_all) > 0 THEN
    INSERT INTO tasker.workflow_step_transitions
      (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
    SELECT id, p_task, NULL, 'pending', 0, true, p_actor, '{"created_by": "expand_steps"}'::jsonb
      FROM unnest(v_all) AS id;
  END IF;
  RETURN cardinality(v_all);
END;
$function$;

-- Decides what a task does next from its execution context: complete, blocked (then error),
-- enqueue the steps that became ready, or wait. The context is computed once, after
-- enqueueing: with no permanent failure (checked first) and steps just enqueued the task is
-- processing.
CREATE OR REPLACE FUNCTION tasker.finalize_task(p_task uuid, p_actor text)
 RETURNS text
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_state  text;
  v_ctx    record;
  v_status text;
  v_target text;
  v_failed jsonb;
BEGIN
  SELECT state INTO v_state FROM tasker.tasks WHERE task_uuid = p_task FOR NO KEY UPDATE;
  IF v_state IS NULL OR v_state NOT IN ('enqueuing_steps', 'steps_in_process', 'evaluating_results',
                                        'waiting_for_dependencies', 'waiting_for_retry') THEN
    RETURN v_state;
  END IF;
  SELECT * INTO v_ctx FROM tasker.get_task_execution_context(p_task);
  v_status := v_ctx.execution_status;
  IF v_status = 'has_ready_steps' THEN
    IF tasker.enqueue_steps_of(p_task, p_actor) > 0 THEN
      v_status := 'processing';
    ELSE
      SELECT * INTO v_ctx FROM tasker.get_task_execution_context(p_task);
      v_status := v_ctx.execution_status;
    END IF;
  END IF;
  v_target := CASE v_status
    WHEN 'blocked_by_failures' THEN 'blocked_by_failures'
    WHEN 'all_complete' THEN 'complete'
    WHEN 'processing' THEN 'steps_in_process'
    WHEN 'has_ready_steps' THEN 'steps_in_process'
    ELSE CASE WHEN EXISTS (SELECT 1 FROM tasker.workflow_steps
                            WHERE task_uuid = p_task AND state = 'waiting_for_retry')
              THEN 'waiting_for_retry' ELSE 'waiting_for_dependencies' END
  END;
  IF v_target = 'blocked_by_failures' THEN
    SELECT coalesce(jsonb_agg(jsonb_build_object('step', name, 'attempts', attempts,
                                                 'error', last_error) ORDER BY position), '[]')
      INTO v_failed
      FROM tasker.workflow_steps
     WHERE task_uuid = p_task
       AND (state = 'error'
            OR (state = 'waiting_for_retry'
                AND NOT (attempts < max_attempts AND (retryable OR attempts = 0))));
    PERFORM tasker.transition_task(p_task, v_state, 'blocked_by_failures', p_actor,
                                   jsonb_build_object('failed_steps', v_failed));
    PERFORM tasker.transition_task(p_task, 'blocked_by_failures', 'error', p_actor,
                                   jsonb_build_object('failed_steps', v_failed));
    RETURN 'error';
  END IF;
  IF v_target <> v_state THEN
    PERFORM tasker.transition_task(p_task, v_state, v_target, p_actor,
                                   jsonb_build_object('execution_status', v_status));
  END IF;
  RETURN v_target;
END;
$function$;

-- Each step of a task with whether it can run now: pending or waiting_for_retry, every
-- parent done (from the step's pending_parents counter when it has one, else by counting
-- its edges), attempts left and backoff passed.
CREATE OR REPLACE FUNCTION tasker.get_step_readiness_status(p_task uuid)
 RETURNS TABLE(step_uuid uuid, task_uuid uuid, name text, current_state text, dependencies_satisfied boolean, retry_eligible boolean, ready_for_execution boolean, attempts integer, max_attempts integer, retryable boolean, next_retry_at timestamp with time zone, total_parents integer, completed_parents integer)
 LANGUAGE sql
 STABLE
AS $function$
  SELECT s.step_uuid,
         s.task_uuid,
         s.name,
         s.state,
         p.total = p.done,
         s.attempts < s.max_attempts AND (s.retryable OR s.attempts = 0),
         s.state IN ('pending', 'waiting_for_retry')
           AND p.total = p.done
           AND s.attempts < s.max_attempts
           AND (s.retryable OR s.attempts = 0)
           AND (s.next_retry_at IS NULL OR s.next_retry_at <= clock_timestamp()),
         s.attempts,
         s.max_attempts,
         s.retryable,
         s.next_retry_at,
         p.total::integer,
         p.done::integer
    FROM tasker.workflow_steps s
    CROSS JOIN LATERAL (
      SELECT coalesce(s.parent_count, count(*)) AS total,
             coalesce(s.parent_count - s.pending_parents,
                      count(*) FILTER (WHERE ps.state IN ('complete', 'resolved_manually'))) AS done
        FROM tasker.workflow_step_edges e
        JOIN tasker.workflow_steps ps ON ps.step_uuid = e.from_step_uuid
       WHERE e.to_step_uuid = s.step_uuid AND s.pending_parents IS NULL
    ) p
   WHERE s.task_uuid = p_task
   ORDER BY s.position
$function$;

-- The task-level view the finalizer decides on. The precedence of execution_status matters:
-- with parallel execution a task can have a permanently failed step and ready steps at
-- once, and it must be reported blocked, not handed more work.
CREATE OR REPLACE FUNCTION tasker.get_task_execution_context(p_task uuid)
 RETURNS TABLE(task_uuid uuid, total_steps bigint, pending_steps bigint, in_progress_steps bigint, completed_steps bigint, failed_steps bigint, ready_steps bigint, permanently_blocked_steps bigint, execution_status text, recommended_action text, health_status text)
 LANGUAGE sql
 STABLE
AS $function$
  WITH r AS (SELECT * FROM tasker.get_step_readiness_status(p_task)),
  c AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE current_state IN ('pending', 'waiting_for_retry')) AS pending,
           count(*) FILTER (WHERE current_state IN ('enqueued', 'in_progress',
                     'enqueued_for_orchestration', 'enqueued_as_error_for_orchestration')) AS in_progress,
           count(*) FILTER (WHERE current_state IN ('complete', 'resolved_manually')) AS completed,
           count(*) FILTER (WHERE current_state IN ('error', 'waiting_for_retry')) AS failed,
           count(*) FILTER (WHERE ready_for_execution) AS ready,
           count(*) FILTER (WHERE current_state = 'error'
                              OR (current_state = 'waiting_for_retry' AND NOT retry_eligible)) AS blocked
      FROM r
  )
  SELECT p_task, total, pending, in_progress, completed, failed, ready, blocked,
         CASE
           WHEN blocked > 0 THEN 'blocked_by_failures'
           WHEN ready > 0 THEN 'has_ready_steps'
           WHEN in_progress > 0 THEN 'processing'
           WHEN total > 0 AND completed = total THEN 'all_complete'
           ELSE 'waiting_for_dependencies'
         END,
         CASE
           WHEN blocked > 0 THEN 'handle_failures'
           WHEN ready > 0 THEN 'execute_ready_steps'
           WHEN in_progress > 0 THEN 'wait_for_completion'
           WHEN total > 0 AND completed = total THEN 'finalize_task'
           ELSE 'wait_for_dependencies'
         END,
         CASE
           WHEN blocked > 0 THEN 'blocked'
           WHEN failed > 0 THEN 'recovering'
           ELSE 'healthy'
         END
    FROM c
$function$;

-- Wakes the waiters of the given tasks that are in one of p_states (their terminal states).
-- A function so its statement is planned once per connection (force_generic_plan).
CREATE OR REPLACE FUNCTION tasker.notify_tasks_finished(p_channel text, p_tasks uuid[], p_states text[])
 RETURNS void
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  PERFORM pg_notify(p_channel, t.task_uuid::text)
     FROM tasker.tasks t
    WHERE t.task_uuid = ANY (p_tasks) AND t.state = ANY (p_states);
END;
$function$;

-- What is wrong with a successful step's outcome, as the error recorded in its place, or
-- NULL when it may be applied. Permanent failures: the same handler would say it again.
CREATE OR REPLACE FUNCTION tasker.outcome_error(p_task uuid, p_step text, p_type text, p_outcome jsonb)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_outcome jsonb := CASE WHEN jsonb_typeof(p_outcome) = 'object' THEN p_outcome END;
  v_kind    text;
  v_list    jsonb;
  v_bad     jsonb;
  v_index   bigint;
  v_bp      record;
  v_choices text;
  v_room    bigint;
BEGIN
  v_kind := CASE WHEN v_outcome ? 'batches' OR (v_outcome IS NULL AND p_type = 'batchable')
                 THEN 'invalid_batch' ELSE 'invalid_decision' END;
  IF v_outcome IS NULL THEN
    IF p_type = 'decision' THEN
      RETURN tasker.outcome_failure(v_kind, format(
        'decision step ''%s'' returned no next_steps (return [] to choose none)', p_step));
    ELSIF p_type = 'batchable' THEN
      RETURN tasker.outcome_failure(v_kind, format(
        'batchable step ''%s'' returned no batches (return [] for none)', p_step));
    ELSIF p_outcome IS NULL OR jsonb_typeof(p_outcome) = 'null' THEN
      RETURN NULL;
    END IF;
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'': malformed outcome %s', p_step, left(p_outcome::text, 200)));
  END IF;
  IF (SELECT count(*) FROM jsonb_object_keys(v_outcome)) <> 1
     OR NOT (v_outcome ? 'next_steps' OR v_outcome ? 'batches') THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'': malformed outcome %s (expected next_steps or batches)', p_step,
      left(v_outcome::text, 200)));
  END IF;
  IF v_outcome ? 'next_steps' AND p_type <> 'decision' THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'' is %s: only a decision step may return next_steps (got %s)', p_step, p_type,
      left((v_outcome->'next_steps')::text, 200)));
  END IF;
  IF v_outcome ? 'batches' AND p_type <> 'batchable' THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'' is %s: only a batchable step may return batches', p_step, p_type));
  END IF;

  IF p_type = 'decision' THEN
    v_list := v_outcome->'next_steps';
    IF jsonb_typeof(v_list) <> 'array' THEN
      RETURN tasker.outcome_failure(v_kind, format(
        'decision step ''%s'': next_steps must be an array of step names, got %s', p_step,
        left(v_list::text, 200)));
    END IF;
    SELECT e INTO v_bad FROM jsonb_array_elements(v_list) AS e
     WHERE jsonb_typeof(e) <> 'string'
        OR NOT EXISTS (SELECT 1 FROM tasker.step_blueprints b
                        WHERE b.task_uuid = p_task AND b.name = e #>> '{}'
                          AND p_step = ANY (b.dependencies))
     LIMIT 1;
    IF FOUND THEN
      SELECT string_agg(b.name, ', ' ORDER BY b.position) INTO v_choices
        FROM tasker.step_blueprints b
       WHERE b.task_uuid = p_task AND p_step = ANY (b.dependencies);
      RETURN tasker.outcome_failure(v_kind, format(
        'decision step ''%s'' chose %s, which is not one of its direct dependents (%s)',
        p_step, left(v_bad::text, 200), v_choices));
    END IF;
    RETURN NULL;
  END IF;

  v_list := v_outcome->'batches';
  IF jsonb_typeof(v_list) <> 'array' THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'': batches must be an array of objects, got %s', p_step,
      left(v_list::text, 200)));
  END IF;
  SELECT b.max_workers, b.batch_worker INTO v_bp FROM tasker.step_blueprints b
   WHERE b.task_uuid = p_task AND b.name = p_step;
  IF jsonb_array_length(v_list) > v_bp.max_workers THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'' returned %s batches, more than batch.max_workers (%s)', p_step,
      jsonb_array_length(v_list), v_bp.max_workers));
  END IF;
  SELECT e.value, e.i - 1 INTO v_bad, v_index
    FROM jsonb_array_elements(v_list) WITH ORDINALITY AS e(value, i)
   WHERE jsonb_typeof(e.value) <> 'object' LIMIT 1;
  IF FOUND THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'': batches[%s] is %s, not an object', p_step, v_index,
      left(v_bad::text, 200)));
  END IF;
  -- Room left under the task's ceiling, keeping enough for every template step still to
  -- come, so a later decision can never be the one that passes it.
  SELECT t.max_steps
         - (SELECT count(*) FROM tasker.workflow_steps s WHERE s.task_uuid = p_task)
         - (SELECT count(*) FROM tasker.step_blueprints b
             WHERE b.task_uuid = p_task AND b.step_type <> 'batch_worker'
               AND NOT EXISTS (SELECT 1 FROM tasker.workflow_steps s
                                WHERE s.task_uuid = p_task AND s.name = b.name))
    INTO v_room
    FROM tasker.tasks t WHERE t.task_uuid = p_task;
  IF v_room IS NOT NULL AND jsonb_array_length(v_list) > v_room THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'' returned %s batches, but the task has room for %s more steps (orchestration.max_steps_per_task)',
      p_step, jsonb_array_length(v_list), greatest(v_room, 0)));
  END IF;
  RETURN NULL;
END;
$function$;

-- The error recorded for a step whose decision or batch outcome is refused: permanent.
CREATE OR REPLACE FUNCTION tasker.outcome_failure(p_type text, p_message text)
 RETURNS jsonb
 LANGUAGE sql
 IMMUTABLE
AS $function$
  SELECT jsonb_build_object('message', p_message, 'error_type', p_type, 'retryable', false)
$function$;

-- Steps that just became complete or resolved: each of their children has one parent fewer
-- to wait for. One statement for the batch; children locked in key order.
CREATE OR REPLACE FUNCTION tasker.parents_done(p_steps uuid[])
 RETURNS void
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_children uuid[];
BEGIN
  SELECT array_agg(DISTINCT e.to_step_uuid) INTO v_children
    FROM tasker.workflow_step_edges e WHERE e.from_step_uuid = ANY (p_steps);
  IF v_children IS NULL THEN
    RETURN;
  END IF;
  PERFORM 1 FROM tasker.workflow_steps c
   WHERE c.step_uuid = ANY (v_children) AND c.pending_parents IS NOT NULL
   ORDER BY c.step_uuid FOR NO KEY UPDATE;
  UPDATE tasker.workflow_steps c
     SET pending_parents = c.pending_parents - d.n
    FROM (SELECT e.to_step_uuid, count(*) AS n FROM tasker.workflow_step_edges e
           WHERE e.from_step_uuid = ANY (p_steps) GROUP BY 1) d
   WHERE c.step_uuid = ANY (v_children) AND c.step_uuid = d.to_step_uuid
     AND c.pending_parents IS NOT NULL;
END;
$function$;

-- Tunes a PGMQ queue table for this engine's access pattern: no visibility-time index (reads
-- go by message id order) and fillfactor 50, so the update a read makes stays on its page.
CREATE OR REPLACE FUNCTION tasker.prepare_queue_table(p_queue text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_table text := 'q_' || p_queue;
BEGIN
  IF to_regclass(format('pgmq.%I', v_table)) IS NULL THEN
    RAISE EXCEPTION 'queue %: no table pgmq.%', p_queue, v_table
      USING ERRCODE = 'undefined_table';
  END IF;
  -- Both changes lock the table, so each runs only when it would change something.
  IF to_regclass(format('pgmq.%I', v_table || '_vt_idx')) IS NOT NULL THEN
    EXECUTE format('DROP INDEX IF EXISTS pgmq.%I', v_table || '_vt_idx');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_class c
                  WHERE c.oid = format('pgmq.%I', v_table)::regclass
                    AND 'fillfactor=50' = ANY (coalesce(c.reloptions, ARRAY[]::text[]))) THEN
    EXECUTE format('ALTER TABLE pgmq.%I SET (fillfactor = 50)', v_table);
  END IF;
END;
$function$;

-- The orchestrator's side of the results queue: decodes a batch of messages, applies them
-- and deletes them.
CREATE OR REPLACE FUNCTION tasker.process_step_results(p_messages jsonb, p_actor text, p_jitter_ratio double precision, p_max_retry_after_ms bigint)
 RETURNS TABLE(msg_id bigint, task_uuid uuid, namespace text, outcome text)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_msgs     bigint[];
  v_tasks    uuid[];
  v_steps    uuid[];
  v_attempts integer[];
  v_workers  text[];
BEGIN
  SELECT array_agg(m.msg_id ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.task_uuid ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.step_uuid ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.attempt ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.worker_id ORDER BY m.task_uuid, m.step_uuid, m.msg_id)
    INTO v_msgs, v_tasks, v_steps, v_attempts, v_workers
    FROM (SELECT (x->>'msg_id')::bigint AS msg_id, (x->>'task_uuid')::uuid AS task_uuid,
                 (x->>'step_uuid')::uuid AS step_uuid, (x->>'attempt')::integer AS attempt,
                 x->>'worker_id' AS worker_id
            FROM jsonb_array_elements(p_messages) AS x) AS m;
  RETURN QUERY
    SELECT * FROM tasker.apply_step_results(v_msgs, v_tasks, v_steps, v_attempts, v_workers,
                                            p_actor, p_jitter_ratio, p_max_retry_after_ms);
  DELETE FROM pgmq.q_orchestration_step_results q WHERE q.msg_id = ANY (v_msgs);
END;
$function$;

-- Queue reads: pgmq.read, committed without waiting for the flush (a read lost in a crash
-- only makes the message visible again).
CREATE OR REPLACE FUNCTION tasker.read_messages(p_queue text, p_vt integer, p_qty integer)
 RETURNS TABLE(msg_id bigint, read_ct integer, enqueued_at timestamp with time zone, message jsonb)
 LANGUAGE plpgsql
AS $function$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  RETURN QUERY SELECT r.msg_id, r.read_ct, r.enqueued_at, r.message
                 FROM pgmq.read(p_queue, p_vt, p_qty) AS r;
END;
$function$;

-- Finds dead workers and releases what they held: a worker is dead when nobody holds its
-- advisory lock any more (its session ended) and it has not been seen for p_grace_ms (a
-- worker that only lost its connection for a moment takes its lock again within that), or
-- when it has not been seen for p_timeout_ms whatever its lock says (its session lingers but
-- the process cannot reach the database). Its in-progress steps go back to enqueued (the
-- attempt counts: the handler may be what killed it) and the hidden messages of enqueued
-- steps in its queues become visible at once; its row is deleted. Rows another reaper is
-- handling are skipped. Returns one row per dead worker: how many steps it held and the queues to wake.
CREATE OR REPLACE FUNCTION tasker.reap_dead_workers(p_grace_ms bigint, p_timeout_ms bigint, p_actor text)
 RETURNS TABLE(worker_id text, released integer, queues text[])
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  w       record;
  v_steps uuid[];
  v_tasks uuid[];
  v_n     integer;
  v_queues text[];
  v_ns    text;
  v_queue text;
  v_shown integer;
BEGIN
  FOR w IN SELECT ww.worker_id, ww.lock_key, ww.last_seen_at, ww.namespaces FROM tasker.workers ww
            WHERE ww.last_seen_at < clock_timestamp() - make_interval(secs => p_grace_ms / 1000.0)
            ORDER BY ww.worker_id
            FOR UPDATE SKIP LOCKED LOOP
    -- The transaction-level lock is released at commit; a live worker holds its session
    -- lock, so taking it proves the worker's session is gone.
    CONTINUE WHEN NOT (pg_try_advisory_xact_lock(w.lock_key)
                       OR w.last_seen_at < clock_timestamp() - make_interval(secs => p_timeout_ms / 1000.0));
    -- Key order, as every other locker of step rows.
    PERFORM 1 FROM tasker.workflow_steps s
     WHERE s.state = 'in_progress' AND s.lease_expires_at IS NOT NULL
       AND s.claim_owner = w.worker_id
     ORDER BY s.step_uuid FOR NO KEY UPDATE;
    WITH freed AS (
      UPDATE tasker.workflow_steps s
         SET state = 'enqueued', updated_at = now(), claim_owner = NULL,
             lease_expires_at = NULL, enqueued_at = clock_timestamp()
       WHERE s.state = 'in_progress' AND s.lease_expires_at IS NOT NULL
         AND s.claim_owner = w.worker_id
      RETURNING s.step_uuid, s.task_uuid
    )
    SELECT array_agg(r.step_uuid ORDER BY r.step_uuid), array_agg(r.task_uuid ORDER BY r.step_uuid)
      INTO v_steps, v_tasks
      FROM freed r;
    v_n := coalesce(cardinality(v_steps), 0);
    v_queues := '{}';
    IF v_n > 0 THEN
      PERFORM tasker.record_step_transitions(
        v_steps, v_tasks, array_fill('in_progress'::text, ARRAY[v_n]),
        array_fill('enqueued'::text, ARRAY[v_n]), p_actor,
        array_fill(jsonb_build_object('reason', 'worker_lost', 'worker_id', w.worker_id), ARRAY[v_n]));
    END IF;
    -- Messages of enqueued steps that are hidden now: the released steps' own messages, and
    -- any the dead worker had read but not yet claimed. Visible again at once (a live
    -- worker that read one of those too finds the step claimed and defers it). Steps do not
    -- keep their message id; the message names its step, and queue tables hold only
    -- unfinished messages, so these scans are short.
    FOREACH v_ns IN ARRAY w.namespaces LOOP
      v_queue := 'worker_' || v_ns || '_queue';
      CONTINUE WHEN to_regclass(format('pgmq.%I', 'q_' || v_queue)) IS NULL;
      EXECUTE format(
        'UPDATE pgmq.%1$I SET vt = clock_timestamp()
          WHERE msg_id IN (
            SELECT q.msg_id FROM pgmq.%1$I q
             WHERE q.vt > clock_timestamp()
               AND EXISTS (SELECT 1 FROM tasker.workflow_steps s
                            WHERE s.step_uuid = (q.message->>''step_uuid'')::uuid
                              AND s.state = ''enqueued'')
               FOR UPDATE SKIP LOCKED)', 'q_' || v_queue);
      GET DIAGNOSTICS v_shown = ROW_COUNT;
      IF v_shown > 0 THEN
        v_queues := v_queues || v_queue;
      END IF;
    END LOOP;
    DELETE FROM tasker.workers ww WHERE ww.worker_id = w.worker_id;
    worker_id := w.worker_id;
    released := v_n;
    queues := v_queues;
    RETURN NEXT;
  END LOOP;
END;
$function$;

-- One result in one transaction: a batch of one for record_step_results, with an optional
-- outcome (a decision's next_steps or a batch list).
CREATE OR REPLACE FUNCTION tasker.record_step_result(p_step uuid, p_attempt integer, p_worker text, p_success boolean, p_result jsonb, p_error jsonb, p_execution_ms bigint, p_metadata jsonb, p_worker_queue text, p_msg_id bigint)
 RETURNS boolean
 LANGUAGE sql
AS $function$
  SELECT NOT EXISTS (
    SELECT 1 FROM tasker.record_step_results(p_worker, jsonb_build_array(jsonb_build_object(
      'step_uuid', p_step, 'attempt', p_attempt, 'success', p_success, 'result', p_result,
      'error', p_error, 'execution_ms', p_execution_ms, 'metadata', p_metadata,
      'queue', p_worker_queue, 'msg_id', p_msg_id))))
$function$;

CREATE OR REPLACE FUNCTION tasker.record_step_result(p_step uuid, p_attempt integer, p_worker text, p_success boolean, p_result jsonb, p_error jsonb, p_execution_ms bigint, p_metadata jsonb, p_worker_queue text, p_msg_id bigint, p_outcome jsonb)
 RETURNS boolean
 LANGUAGE sql
AS $function$
  SELECT NOT EXISTS (
    SELECT 1 FROM tasker.record_step_results(p_worker, jsonb_build_array(jsonb_build_object(
      'step_uuid', p_step, 'attempt', p_attempt, 'success', p_success, 'result', p_result,
      'error', p_error, 'execution_ms', p_execution_ms, 'metadata', p_metadata,
      'queue', p_worker_queue, 'msg_id', p_msg_id, 'outcome', p_outcome))))
$function$;

-- The results-queue path: stores the results and sends each to the orchestration results
-- queue. Returns the results refused (the claim had moved on).
CREATE OR REPLACE FUNCTION tasker.record_step_results(p_worker text, p_results jsonb)
 RETURNS SETOF uuid
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_ids    uuid[];
  v_stored uuid[];
BEGIN
  SELECT array_agg(DISTINCT (x->>'step_uuid')::uuid) INTO v_ids
    FROM jsonb_array_elements(p_results) AS x;
  SELECT array_agg(r.step_uuid) INTO v_stored
    FROM tasker.store_step_results(p_worker, p_results, true) r;
  RETURN QUERY
    SELECT id FROM unnest(v_ids) AS id WHERE NOT (id = ANY (coalesce(v_stored, ARRAY[]::uuid[])));
END;
$function$;

-- Appends one transition to a step's log, after its last.
CREATE OR REPLACE FUNCTION tasker.record_step_transition(p_step uuid, p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb)
 RETURNS void
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  INSERT INTO tasker.workflow_step_transition_log
    (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
  VALUES (p_step, p_task, p_from, p_to,
          coalesce((SELECT max(l.sort_key) + 1 FROM tasker.workflow_step_transition_log l
                     WHERE l.step_uuid = p_step), 0),
          p_actor, coalesce(p_metadata, '{}'::jsonb));
END;
$function$;

-- Appends one transition per step. The callers hold the steps' rows locked (their UPDATE of
-- the state), so each step's next sort_key cannot be taken concurrently; the primary key
-- would refuse it if it were.
CREATE OR REPLACE FUNCTION tasker.record_step_transitions(p_steps uuid[], p_tasks uuid[], p_from text[], p_to text[], p_actor text, p_metadata jsonb[])
 RETURNS void
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_bad record;
BEGIN
  SELECT u.step, u.f, u.t INTO v_bad
    FROM unnest(p_steps, p_from, p_to) AS u(step, f, t)
   WHERE NOT EXISTS (SELECT 1 FROM tasker.step_state_transitions a
                      WHERE a.from_state = u.f AND a.to_state = u.t)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'step %: transition % -> % is not allowed', v_bad.step, v_bad.f, v_bad.t
      USING ERRCODE = 'check_violation';
  END IF;
  INSERT INTO tasker.workflow_step_transition_log
    (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
  SELECT u.step, u.task, u.f, u.t,
         coalesce((SELECT max(l.sort_key) + 1 FROM tasker.workflow_step_transition_log l
                    WHERE l.step_uuid = u.step), 0),
         p_actor, coalesce(u.meta, '{}'::jsonb)
    FROM unnest(p_steps, p_tasks, p_from, p_to, p_metadata) AS u(step, task, f, t, meta);
END;
$function$;

-- Appends a task transition row and moves the most_recent flag to it.
CREATE OR REPLACE FUNCTION tasker.record_task_transition(p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_prev integer;
BEGIN
  UPDATE tasker.task_transitions SET most_recent = false
   WHERE task_uuid = p_task AND most_recent
  RETURNING sort_key INTO v_prev;
  INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
  VALUES (p_task, p_from, p_to, coalesce(v_prev + 1, 0), true, p_actor, coalesce(p_metadata, '{}'::jsonb));
END;
$function$;

-- Graceful shutdown: a worker hands back steps it claimed but will not finish. The attempt
-- is not counted (no result was recorded), and the step's queue message is made visible
-- again at once so another worker picks it up.
CREATE OR REPLACE FUNCTION tasker.release_steps(p_steps uuid[], p_worker text)
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_id uuid;
  v_n  integer := 0;
BEGIN
  FOR v_id IN SELECT DISTINCT x FROM unnest(p_steps) AS x ORDER BY x LOOP
    IF EXISTS (SELECT 1 FROM tasker.workflow_steps
                WHERE step_uuid = v_id AND state = 'in_progress' AND claim_owner = p_worker
                FOR NO KEY UPDATE) THEN
      PERFORM tasker.transition_step(v_id, 'in_progress', 'enqueued', p_worker,
                                     jsonb_build_object('reason', 'worker_shutdown'));
      UPDATE tasker.workflow_steps
         SET attempts = greatest(attempts - 1, 0), claim_owner = NULL, lease_expires_at = NULL
       WHERE step_uuid = v_id;
      v_n := v_n + 1;
    END IF;
  END LOOP;
  RETURN v_n;
END;
$function$;

-- The heartbeat's renewal. Rows another transaction is changing right now are skipped, not
-- waited for: most often that is this worker recording the step's result, and waiting would
-- both report a step as lost that was just recorded and, since the renewal locked rows in no
-- particular order, deadlock with the sorted lockers (recording, claims, result processing).
-- A skipped renewal is made at the next beat. Returns the steps this worker no longer holds
-- and did not record a result for.
CREATE OR REPLACE FUNCTION tasker.renew_leases(p_steps uuid[], p_worker text, p_lease_seconds integer)
 RETURNS SETOF uuid
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  RETURN QUERY
    WITH free AS (
      SELECT s.step_uuid, s.state, s.claim_owner, s.attempts
        FROM tasker.workflow_steps s
       WHERE s.step_uuid = ANY (p_steps)
       FOR NO KEY UPDATE SKIP LOCKED
    ), renewed AS (
      UPDATE tasker.workflow_steps s
         SET lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds)
        FROM free
       WHERE s.step_uuid = ANY (p_steps) AND s.step_uuid = free.step_uuid
         AND free.state = 'in_progress' AND free.claim_owner = p_worker
      RETURNING s.step_uuid
    )
    SELECT f.step_uuid FROM free f
     WHERE f.step_uuid NOT IN (SELECT r.step_uuid FROM renewed r)
       AND NOT EXISTS (SELECT 1 FROM tasker.step_result_audits a
                        WHERE a.step_uuid = f.step_uuid AND a.attempt = f.attempts
                          AND a.worker_id = p_worker);
END;
$function$;

-- The delay before a failed step's next attempt: the handler's retry_after hint (capped) wins,
-- else the step's backoff (none / linear / exponential, capped) plus random jitter.
CREATE OR REPLACE FUNCTION tasker.retry_delay_ms(p_backoff text, p_base_ms bigint, p_max_ms bigint, p_attempts integer, p_error jsonb, p_jitter_ratio double precision, p_max_retry_after_ms bigint)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_delay bigint;
BEGIN
  IF p_error ? 'retry_after_ms' AND jsonb_typeof(p_error->'retry_after_ms') = 'number' THEN
    RETURN least((p_error->>'retry_after_ms')::bigint, p_max_retry_after_ms);
  END IF;
  v_delay := CASE p_backoff
    WHEN 'none' THEN 0
    WHEN 'linear' THEN p_base_ms * greatest(p_attempts, 1)
    ELSE p_base_ms * power(2::numeric, least(greatest(p_attempts, 1) - 1, 40))::bigint
  END;
  v_delay := least(v_delay, p_max_ms);
  RETURN v_delay + floor(random() * v_delay * p_jitter_ratio)::bigint;
END;
$function$;

-- A started task's root messages, as its workers read them.
CREATE OR REPLACE FUNCTION tasker.root_messages(p_task uuid, p_ns text, p_steps uuid[], p_names text[])
 RETURNS jsonb[]
 LANGUAGE sql
 STABLE
AS $function$
  SELECT array_agg(jsonb_build_object('task_uuid', p_task, 'step_uuid', u.step,
                                      'step_name', u.name, 'namespace', p_ns, 'attempt', 1))
    FROM unnest(p_steps, p_names) AS u(step, name)
$function$;

-- Writes a batch of worker messages into a namespace's queue table in one dynamic statement
-- (the row pgmq.send_batch writes: visible now, no headers), and marks the transaction as
-- having enqueued work so the caller knows to wake that namespace's workers.
CREATE OR REPLACE FUNCTION tasker.send_step_messages(p_ns text, p_msgs jsonb[])
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
  EXECUTE format('INSERT INTO pgmq.%I (vt, message) SELECT clock_timestamp(), m FROM unnest($1) AS m',
                 'q_worker_' || p_ns || '_queue')
    USING p_msgs;
  PERFORM set_config('tasker.steps_enqueued', 'on', true);
END;
$function$;

-- Starts a new task whose steps exist as pending (a dynamic task's, or none), without
-- computing its execution context: every pending step with no parent left to wait for (its
-- counter, set when it was created) is enqueued, and the task goes straight to
-- steps_in_process. A task with no such step (no steps, or steps created without counters)
-- takes the general path: its first finalization decides.
CREATE OR REPLACE FUNCTION tasker.start_task(p_task uuid, p_actor text)
 RETURNS text
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_state text;
  v_steps uuid[];
  v_names text[];
  v_n     integer;
BEGIN
  SELECT t.state INTO v_state FROM tasker.tasks t WHERE t.task_uuid = p_task;
  IF v_state IS DISTINCT FROM 'pending' THEN
    RAISE EXCEPTION 'task %: cannot start, it is not a new pending task', p_task
      USING ERRCODE = 'check_violation';
  END IF;
  WITH moved AS (
    UPDATE tasker.workflow_steps s
       SET state = 'enqueued', updated_at = now(), enqueued_at = clock_timestamp()
     WHERE s.task_uuid = p_task AND s.state = 'pending' AND s.pending_parents = 0
    RETURNING s.step_uuid, s.name
  )
  SELECT array_agg(m.step_uuid), array_agg(m.name) INTO v_steps, v_names FROM moved m;
  IF v_steps IS NULL THEN
    UPDATE tasker.tasks SET state = 'enqueuing_steps', updated_at = now()
     WHERE task_uuid = p_task;
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, actor)
    VALUES (p_task, NULL, 'pending', 0, false, p_actor),
           (p_task, 'pending', 'initializing', 1, false, p_actor),
           (p_task, 'initializing', 'enqueuing_steps', 2, true, p_actor);
    RETURN tasker.finalize_task(p_task, p_actor);
  END IF;
  v_n := cardinality(v_steps);
  PERFORM tasker.record_step_transitions(
    v_steps, array_fill(p_task, ARRAY[v_n]), array_fill('pending'::text, ARRAY[v_n]),
    array_fill('enqueued'::text, ARRAY[v_n]), p_actor,
    array_fill('{"attempt": 1}'::jsonb, ARRAY[v_n]));
  UPDATE tasker.tasks SET state = 'steps_in_process', updated_at = now()
   WHERE task_uuid = p_task;
  PERFORM tasker.task_started(p_task, tasker.task_namespace(p_task), v_steps, v_names, p_actor);
  RETURN 'steps_in_process';
END;
$function$;

-- Stores a batch of results: checks each against the step's claim (state in_progress, this
-- worker, this attempt), stores it (step state, result or error, audit row, transition, a
-- decision's or batch's outcome applied) and deletes the worker messages of the recorded
-- results. p_send: send each recorded result to the orchestration results queue (steps
-- wait in enqueued_for_orchestration / enqueued_as_error_for_orchestration). Without it the
-- caller applies the results in the same transaction, and a success of a step without an
-- outcome goes straight to complete; decision and batchable steps still pass through
-- enqueued_for_orchestration, because their outcome's new steps count the step as a
-- pending parent until it completes. Returns the recorded results with the state each
-- moved to.
CREATE OR REPLACE FUNCTION tasker.store_step_results(p_worker text, p_results jsonb, p_send boolean)
 RETURNS TABLE(step_uuid uuid, task_uuid uuid, attempt integer, state text)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_ids       uuid[];
  v_steps     uuid[];
  v_tasks     uuid[];
  v_attempts  integer[];
  v_from      text[];
  v_to        text[];
  v_meta      jsonb[];
  v_decided   uuid[];
  v_dyn_tasks uuid[];
  t           uuid;
  q           record;
BEGIN
  SELECT array_agg(DISTINCT (x->>'step_uuid')::uuid) INTO v_ids
    FROM jsonb_array_elements(p_results) AS x;
  -- An outcome changes its task (expand_steps locks the task row), so the tasks of decision
  -- and batchable steps are locked first, in order, as everything else locks a task before
  -- its steps. A step's type never changes, so reading it unlocked is safe.
  PERFORM 1 FROM tasker.tasks tt
   WHERE tt.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                           WHERE s.step_uuid = ANY (v_ids)
                             AND s.step_type IN ('decision', 'batchable'))
   ORDER BY tt.task_uuid FOR NO KEY UPDATE;
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (v_ids) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  WITH r AS (
    SELECT DISTINCT ON ((x->>'step_uuid')::uuid)
           (x->>'step_uuid')::uuid AS step_uuid, (x->>'attempt')::integer AS attempt,
           (x->>'success')::boolean AS success, x->'result' AS result,
           CASE WHEN jsonb_typeof(x->'error') = 'object' THEN x->'error' END AS error,
           (x->>'execution_ms')::bigint AS execution_ms,
           CASE WHEN jsonb_typeof(x->'metadata') = 'object' THEN x->'metadata' ELSE '{}'::jsonb END AS metadata,
           CASE WHEN jsonb_typeof(x->'outcome') <> 'null' THEN x->'outcome' END AS outcome
      FROM jsonb_array_elements(p_results) AS x
     ORDER BY (x->>'step_uuid')::uuid
  ), checked AS (
    SELECT r.*,
           CASE WHEN r.success AND (r.outcome IS NOT NULL
                                    OR s.step_type IN ('decision', 'batchable'))
                THEN tasker.outcome_error(s.task_uuid, s.name, s.step_type, r.outcome) END AS bad
      FROM r JOIN tasker.workflow_steps s ON s.step_uuid = r.step_uuid
     WHERE s.step_uuid = ANY (v_ids)
  ), applied AS (
    UPDATE tasker.workflow_steps s
       SET state = CASE WHEN NOT (r.success AND r.bad IS NULL)
                          THEN 'enqueued_as_error_for_orchestration'
                        WHEN p_send OR s.step_type IN ('decision', 'batchable')
                          THEN 'enqueued_for_orchestration'
                        ELSE 'complete' END,
           completed_at = CASE WHEN r.success AND r.bad IS NULL AND NOT p_send
                                AND s.step_type NOT IN ('decision', 'batchable')
                               THEN clock_timestamp() ELSE s.completed_at END,
           updated_at = now(),
           results = CASE WHEN r.success AND r.bad IS NULL THEN r.result ELSE s.results END,
           last_error = CASE WHEN r.success AND r.bad IS NULL THEN NULL
                             ELSE coalesce(r.bad, r.error) END,
           outcome = CASE WHEN r.success AND r.bad IS NULL
                           AND s.step_type IN ('decision', 'batchable')
                          THEN r.outcome ELSE s.outcome END,
           claim_owner = NULL, lease_expires_at = NULL
      FROM checked r
     WHERE s.step_uuid = ANY (v_ids) AND s.step_uuid = r.step_uuid AND s.state = 'in_progress'
       AND s.claim_owner = p_worker AND s.attempts = r.attempt
    RETURNING s.step_uuid, s.task_uuid, s.state, r.attempt, r.success AND r.bad IS NULL AS ok,
              r.result, coalesce(r.bad, r.error) AS error, r.execution_ms, r.metadata,
              r.success AND r.bad IS NULL AND s.step_type IN ('decision', 'batchable') AS decided
  ), audited AS (
    INSERT INTO tasker.step_result_audits
      (step_uuid, task_uuid, attempt, worker_id, success, result, error, execution_time_ms, metadata)
    SELECT a.step_uuid, a.task_uuid, a.attempt, p_worker, a.ok,
           CASE WHEN a.ok THEN a.result END, CASE WHEN NOT a.ok THEN a.error END,
           a.execution_ms, a.metadata
      FROM applied a
  ), sent AS (
    INSERT INTO pgmq.q_orchestration_step_results (vt, message)
    SELECT clock_timestamp(), jsonb_build_object(
             'task_uuid', a.task_uuid, 'step_uuid', a.step_uuid, 'attempt', a.attempt,
             'success', a.ok, 'worker_id', p_worker)
      FROM applied a
     WHERE p_send
  )
  SELECT array_agg(a.step_uuid), array_agg(a.task_uuid), array_agg(a.attempt),
         array_agg('in_progress'::text), array_agg(a.state),
         array_agg(jsonb_build_object('attempt', a.attempt, 'execution_time_ms', a.execution_ms)),
         array_agg(a.step_uuid) FILTER (WHERE a.decided),
         array_agg(DISTINCT a.task_uuid) FILTER (WHERE a.decided)
    INTO v_steps, v_tasks, v_attempts, v_from, v_to, v_meta, v_decided, v_dyn_tasks
    FROM applied a;
  IF v_steps IS NULL THEN
    RETURN;
  END IF;
  PERFORM tasker.record_step_transitions(v_steps, v_tasks, v_from, v_to, p_worker, v_meta);
  -- A cancelled task gets no new steps: its in-flight results still land, nothing more.
  IF v_decided IS NOT NULL THEN
    SELECT array_agg(s.step_uuid ORDER BY s.step_uuid), array_agg(DISTINCT s.task_uuid)
      INTO v_decided, v_dyn_tasks
      FROM tasker.workflow_steps s JOIN tasker.tasks tt ON tt.task_uuid = s.task_uuid
     WHERE s.step_uuid = ANY (v_decided) AND tt.task_uuid = ANY (v_dyn_tasks)
       AND tt.state <> 'cancelled';
  END IF;
  IF v_decided IS NOT NULL THEN
    PERFORM tasker.create_batch_workers(v_decided, p_worker);
    FOREACH t IN ARRAY v_dyn_tasks LOOP
      PERFORM tasker.expand_steps(t, p_worker);
    END LOOP;
  END IF;
  -- Worker messages of recorded results only: a refused result's message belongs to
  -- whoever holds the step now.
  FOR q IN SELECT x->>'queue' AS queue, array_agg((x->>'msg_id')::bigint) AS ids
             FROM jsonb_array_elements(p_results) AS x
            WHERE x->>'queue' IS NOT NULL AND x->>'msg_id' IS NOT NULL
              AND (x->>'step_uuid')::uuid = ANY (v_steps)
            GROUP BY 1 LOOP
    PERFORM pgmq.delete(q.queue, q.ids);
  END LOOP;
  RETURN QUERY SELECT * FROM unnest(v_steps, v_tasks, v_attempts, v_to);
END;
$function$;

-- A step that failed for good: error, or waiting for a retry it can no longer have.
CREATE OR REPLACE FUNCTION tasker.task_has_permanent_failure(p_task uuid)
 RETURNS boolean
 LANGUAGE sql
 STABLE
AS $function$
  SELECT EXISTS (
    SELECT 1 FROM tasker.workflow_steps
     WHERE task_uuid = p_task
       AND (state = 'error'
            OR (state = 'waiting_for_retry'
                AND NOT (attempts < max_attempts AND (retryable OR attempts = 0))))
  )
$function$;

-- The namespace a task's steps are queued under. plpgsql, not sql: a SQL function with a
-- FROM clause is not inlined and would be planned again in every statement that calls it.
CREATE OR REPLACE FUNCTION tasker.task_namespace(p_task uuid)
 RETURNS text
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
  RETURN (SELECT n.name
            FROM tasker.tasks t
            JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
            JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
           WHERE t.task_uuid = p_task);
END;
$function$;

-- Whether finalizing this task could change anything: true unless it is steps_in_process
-- with a step still enqueued or running and none ready, due for a retry, or failed. The
-- caller holds the task row, so no other transaction changes its steps' states meanwhile.
CREATE OR REPLACE FUNCTION tasker.task_needs_finalizing(p_task uuid)
 RETURNS boolean
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
  v_busy   boolean;
  v_decide boolean;
BEGIN
  IF (SELECT t.state FROM tasker.tasks t WHERE t.task_uuid = p_task)
     IS DISTINCT FROM 'steps_in_process' THEN
    RETURN true;
  END IF;
  SELECT coalesce(bool_or(s.state IN ('enqueued', 'in_progress')), false),
         coalesce(bool_or((s.state = 'pending' AND coalesce(s.pending_parents, 0) = 0)
                          OR (s.state = 'waiting_for_retry'
                              AND (s.next_retry_at IS NULL OR s.next_retry_at <= clock_timestamp()))
                          OR s.state NOT IN ('pending', 'waiting_for_retry', 'enqueued',
                                             'in_progress', 'complete', 'resolved_manually')),
                  false)
    INTO v_busy, v_decide
    FROM tasker.workflow_steps s
   WHERE s.task_uuid = p_task;
  RETURN v_decide OR NOT v_busy;
END;
$function$;

-- The transitions of a task that starts with its roots enqueued (pending -> initializing ->
-- enqueuing_steps -> steps_in_process); with p_send, the roots' messages too (false: the
-- caller sends them).
CREATE OR REPLACE FUNCTION tasker.task_started(p_task uuid, p_ns text, p_steps uuid[], p_names text[], p_actor text, p_send boolean DEFAULT true)
 RETURNS void
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  IF p_send THEN
    PERFORM tasker.send_step_messages(p_ns,
                                      tasker.root_messages(p_task, p_ns, p_steps, p_names));
  END IF;
  INSERT INTO tasker.task_transitions
    (task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
  VALUES (p_task, NULL, 'pending', 0, false, p_actor, '{}'),
         (p_task, 'pending', 'initializing', 1, false, p_actor, '{}'),
         (p_task, 'initializing', 'enqueuing_steps', 2, false, p_actor, '{}'),
         (p_task, 'enqueuing_steps', 'steps_in_process', 3, true, p_actor,
          '{"execution_status": "processing"}');
END;
$function$;

-- Moves a step from p_from to p_to only if it is still in p_from, logging the transition.
-- Returns false when the state moved underneath; raises for a transition the table forbids.
CREATE OR REPLACE FUNCTION tasker.transition_step(p_step uuid, p_from text, p_to text, p_actor text, p_metadata jsonb DEFAULT '{}'::jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_task uuid;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tasker.step_state_transitions
                  WHERE from_state = p_from AND to_state = p_to) THEN
    RAISE EXCEPTION 'step %: transition % -> % is not allowed', p_step, p_from, p_to
      USING ERRCODE = 'check_violation';
  END IF;
  UPDATE tasker.workflow_steps
     SET state = p_to, updated_at = now()
   WHERE step_uuid = p_step AND state = p_from
  RETURNING task_uuid INTO v_task;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM tasker.record_step_transition(p_step, v_task, p_from, p_to, p_actor, p_metadata);
  RETURN true;
END;
$function$;

-- Moves a task from p_from to p_to only if it is still in p_from. Returns false when the
-- state moved underneath (another process won); raises for a transition the table forbids.
CREATE OR REPLACE FUNCTION tasker.transition_task(p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb DEFAULT '{}'::jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tasker.task_state_transitions
                  WHERE from_state = p_from AND to_state = p_to) THEN
    RAISE EXCEPTION 'task %: transition % -> % is not allowed', p_task, p_from, p_to
      USING ERRCODE = 'check_violation';
  END IF;
  UPDATE tasker.tasks
     SET state = p_to,
         updated_at = now(),
         completed_at = CASE WHEN p_to IN ('complete', 'error', 'cancelled', 'resolved_manually')
                             THEN clock_timestamp() ELSE NULL END
   WHERE task_uuid = p_task AND state = p_from;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM tasker.record_task_transition(p_task, p_from, p_to, p_actor, p_metadata);
  RETURN true;
END;
$function$;

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

-- Steps deleted (their task removed): their log rows and audit rows go with them, as a
-- foreign key's cascade would (the tables have none: see db/schema.sql).
CREATE OR REPLACE FUNCTION tasker.workflow_steps_deleted()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
  DELETE FROM tasker.workflow_step_transition_log l
   WHERE l.step_uuid IN (SELECT g.step_uuid FROM gone g);
  DELETE FROM tasker.step_result_audits a
   WHERE a.step_uuid IN (SELECT g.step_uuid FROM gone g);
  RETURN NULL;
END;
$function$;

CREATE OR REPLACE TRIGGER workflow_steps_deleted
  AFTER DELETE ON tasker.workflow_steps REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION tasker.workflow_steps_deleted();

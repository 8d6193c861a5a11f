-- Hot path v2: what a step costs Postgres.
--
-- Profiling the benchmark (pg_stat_statements, track = all) put the largest share of the
-- database's time in the step transition log: every transition updated the previous row to
-- clear its most_recent flag (a new row version and index entries that can never be HOT,
-- since the flag is in a partial index's predicate) before inserting the new row, whose
-- primary key came from a plpgsql UUID function. Next came readiness counting edges, and
-- the second hop of every result through the orchestration results queue.
--
-- 1. The log is append-only: one row per transition, keyed (step_uuid, sort_key). The
--    current row is the one with the highest sort_key; the view workflow_step_transitions
--    derives most_recent from that, so readers see the same columns as before.
-- 2. tasker.uuid_v7 is one SQL expression (inlined into the defaults that call it).
-- 3. tasker.complete_steps records a worker's results and applies them in one transaction:
--    step complete / waiting_for_retry / error, children counted off and enqueued, tasks
--    finalized. The results queue stays for results sent through record_step_results.
-- 4. Steps of fixed DAGs carry parent counters too (set by the initializer), so readiness
--    never counts edges for new tasks.

CREATE OR REPLACE FUNCTION tasker.uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
  SELECT encode(
           set_byte(
             overlay(uuid_send(gen_random_uuid())
                     PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                     FROM 1 FOR 6),
             6, (get_byte(uuid_send(gen_random_uuid()), 6) & 15) | 112),
           'hex')::uuid
$$;

ALTER TABLE tasker.workflow_step_transitions RENAME TO workflow_step_transition_log;
DROP INDEX tasker.workflow_step_transitions_most_recent;
ALTER TABLE tasker.workflow_step_transition_log DROP COLUMN most_recent;
ALTER TABLE tasker.workflow_step_transition_log DROP CONSTRAINT workflow_step_transitions_pkey;
ALTER TABLE tasker.workflow_step_transition_log DROP COLUMN transition_uuid;
ALTER TABLE tasker.workflow_step_transition_log
  DROP CONSTRAINT workflow_step_transitions_step_uuid_sort_key_key;
ALTER TABLE tasker.workflow_step_transition_log
  ADD CONSTRAINT workflow_step_transition_log_pkey PRIMARY KEY (step_uuid, sort_key);

-- Every step transition, as before: most_recent marks each step's last row. Filtering by
-- step or by task (through a join with workflow_steps) reads only that step's rows.
CREATE VIEW tasker.workflow_step_transitions AS
SELECT l.step_uuid, l.task_uuid, l.from_state, l.to_state, l.sort_key,
       l.sort_key = (SELECT max(m.sort_key) FROM tasker.workflow_step_transition_log m
                      WHERE m.step_uuid = l.step_uuid) AS most_recent,
       l.actor, l.metadata, l.created_at
  FROM tasker.workflow_step_transition_log l;

-- Rows written to the view land in the log (most_recent follows from sort_key). Only the
-- rarely-run step creators of dynamic workflows write through it.
CREATE FUNCTION tasker.workflow_step_transitions_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO tasker.workflow_step_transition_log
    (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata, created_at)
  VALUES (NEW.step_uuid, NEW.task_uuid, NEW.from_state, NEW.to_state, NEW.sort_key, NEW.actor,
          coalesce(NEW.metadata, '{}'::jsonb), coalesce(NEW.created_at, clock_timestamp()));
  RETURN NEW;
END;
$$;

CREATE TRIGGER workflow_step_transitions_insert
  INSTEAD OF INSERT ON tasker.workflow_step_transitions
  FOR EACH ROW EXECUTE FUNCTION tasker.workflow_step_transitions_insert();

CREATE OR REPLACE FUNCTION tasker.record_step_transition(
  p_step uuid, p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO tasker.workflow_step_transition_log
    (step_uuid, task_uuid, from_state, to_state, sort_key, actor, metadata)
  VALUES (p_step, p_task, p_from, p_to,
          coalesce((SELECT max(l.sort_key) + 1 FROM tasker.workflow_step_transition_log l
                     WHERE l.step_uuid = p_step), 0),
          p_actor, coalesce(p_metadata, '{}'::jsonb));
END;
$$;

-- Appends one transition per step. The callers hold the steps' rows locked (their UPDATE of
-- the state), so each step's next sort_key cannot be taken concurrently; the primary key
-- would refuse it if it were.
CREATE OR REPLACE FUNCTION tasker.record_step_transitions(
  p_steps uuid[], p_tasks uuid[], p_from text[], p_to text[], p_actor text, p_metadata jsonb[]
) RETURNS void LANGUAGE plpgsql AS $$
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
$$;

-- What record_step_results did, for either path: checks each result against the step's
-- claim (state in_progress, this worker, this attempt), stores it (step state, result or
-- error, audit row, transition, a decision's or batch's outcome applied) and deletes the
-- worker messages of the recorded results. p_send: send each recorded result to the
-- orchestration results queue (steps wait in enqueued_for_orchestration /
-- enqueued_as_error_for_orchestration). Without it the caller applies the results in the
-- same transaction, and a success of a step without an outcome goes straight to complete;
-- decision and batchable steps still pass through enqueued_for_orchestration, because
-- their outcome's new steps count the step as a pending parent until it completes. Returns
-- the recorded results with the state each moved to.
CREATE FUNCTION tasker.store_step_results(p_worker text, p_results jsonb, p_send boolean)
RETURNS TABLE (step_uuid uuid, task_uuid uuid, attempt integer, state text)
LANGUAGE plpgsql AS $$
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
$$;

-- The results-queue path: stores the results and sends each to the orchestration results
-- queue. Returns the results refused (the claim had moved on).
CREATE OR REPLACE FUNCTION tasker.record_step_results(p_worker text, p_results jsonb)
RETURNS SETOF uuid LANGUAGE plpgsql AS $$
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
$$;

-- Applies stored results (steps in enqueued_for_orchestration or
-- enqueued_as_error_for_orchestration at the given attempt): complete, waiting_for_retry with
-- backoff, or error; completed steps count themselves off their children; every task
-- touched is finalized once (enqueueing what became ready). p_ids identifies each input
-- in the rows returned (a results-queue message id, or a position). The caller has locked
-- the tasks or lets this lock them: every task first, then every step, each in key order.
CREATE FUNCTION tasker.apply_step_results(
  p_ids bigint[], p_tasks uuid[], p_steps uuid[], p_attempts integer[], p_workers text[],
  p_actor text, p_jitter_ratio float8, p_max_retry_after_ms bigint
) RETURNS TABLE (msg_id bigint, task_uuid uuid, namespace text, outcome text)
LANGUAGE plpgsql AS $$
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
$$;

-- The orchestrator's side of the results queue: decodes a batch of messages, applies them
-- and deletes them.
CREATE OR REPLACE FUNCTION tasker.process_step_results(
  p_messages jsonb, p_actor text, p_jitter_ratio float8, p_max_retry_after_ms bigint
) RETURNS TABLE (msg_id bigint, task_uuid uuid, namespace text, outcome text)
LANGUAGE plpgsql AS $$
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
$$;

-- The worker's path: records its results and applies them in one transaction, with no
-- message to the orchestrator in between. The tasks of the batch are locked first (key
-- order), then the steps, as on every other path. Successes that went straight to complete
-- count themselves off their children and their tasks are finalized (enqueueing what became
-- ready); failures and outcome steps are applied as the results queue's are. Returns one
-- row per distinct step: completed / retry_scheduled / failed / ignored, or refused when
-- the claim had moved on.
CREATE FUNCTION tasker.complete_steps(
  p_worker text, p_results jsonb, p_jitter_ratio float8, p_max_retry_after_ms bigint
) RETURNS TABLE (step_uuid uuid, task_uuid uuid, namespace text, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
  v_ids         uuid[];
  v_done        uuid[];
  v_done_tasks  uuid[];
  v_steps       uuid[];
  v_tasks       uuid[];
  v_attempts    integer[];
BEGIN
  SELECT array_agg(DISTINCT (x->>'step_uuid')::uuid) INTO v_ids
    FROM jsonb_array_elements(p_results) AS x;
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                          WHERE s.step_uuid = ANY (v_ids))
   ORDER BY t.task_uuid FOR NO KEY UPDATE;
  SELECT array_agg(r.step_uuid ORDER BY r.step_uuid) FILTER (WHERE r.state = 'complete'),
         array_agg(r.task_uuid ORDER BY r.step_uuid) FILTER (WHERE r.state = 'complete'),
         array_agg(r.step_uuid ORDER BY r.task_uuid, r.step_uuid) FILTER (WHERE r.state <> 'complete'),
         array_agg(r.task_uuid ORDER BY r.task_uuid, r.step_uuid) FILTER (WHERE r.state <> 'complete'),
         array_agg(r.attempt ORDER BY r.task_uuid, r.step_uuid) FILTER (WHERE r.state <> 'complete')
    INTO v_done, v_done_tasks, v_steps, v_tasks, v_attempts
    FROM tasker.store_step_results(p_worker, p_results, false) r;
  IF v_done IS NOT NULL THEN
    PERFORM tasker.parents_done(v_done);
  END IF;
  IF v_steps IS NOT NULL THEN
    RETURN QUERY
      SELECT v_steps[a.msg_id], a.task_uuid, a.namespace, a.outcome
        FROM tasker.apply_step_results(
               (SELECT array_agg(g) FROM generate_series(1, cardinality(v_steps)) AS g),
               v_tasks, v_steps, v_attempts, array_fill(p_worker, ARRAY[cardinality(v_steps)]),
               p_worker, p_jitter_ratio, p_max_retry_after_ms) a;
  END IF;
  IF v_done IS NOT NULL THEN
    -- Tasks the failures above touched are finalized already.
    PERFORM tasker.finalize_task(d.t, p_worker)
       FROM (SELECT DISTINCT u.t FROM unnest(v_done_tasks) AS u(t)
              WHERE NOT (u.t = ANY (coalesce(v_tasks, ARRAY[]::uuid[])))) AS d
      ORDER BY d.t;
    RETURN QUERY
      SELECT d.s, d.t, n.ns, 'completed'::text
        FROM unnest(v_done, v_done_tasks) AS d(s, t)
        JOIN (SELECT u.t, tasker.task_namespace(u.t) AS ns
                FROM (SELECT DISTINCT x AS t FROM unnest(v_done_tasks) AS x) AS u) AS n
          ON n.t = d.t;
  END IF;
  RETURN QUERY
    SELECT id, NULL::uuid, NULL::text, 'refused'::text
      FROM unnest(v_ids) AS id
     WHERE NOT (id = ANY (coalesce(v_steps, ARRAY[]::uuid[]) || coalesce(v_done, ARRAY[]::uuid[])));
END;
$$;

-- A step that succeeds on the worker's path goes straight from in_progress to complete.
INSERT INTO tasker.step_state_transitions (from_state, to_state) VALUES ('in_progress', 'complete');

-- A result is identified by its step and attempt; the surrogate key only cost each audit row
-- a UUID and one more index entry.
ALTER TABLE tasker.step_result_audits DROP CONSTRAINT step_result_audits_pkey;
ALTER TABLE tasker.step_result_audits DROP COLUMN audit_uuid;
ALTER TABLE tasker.step_result_audits DROP CONSTRAINT step_result_audits_step_uuid_attempt_key;
ALTER TABLE tasker.step_result_audits ADD PRIMARY KEY (step_uuid, attempt);

ALTER FUNCTION tasker.store_step_results(text, jsonb, boolean) SET enable_seqscan = off;
ALTER FUNCTION tasker.record_step_results(text, jsonb) SET enable_seqscan = off;
ALTER FUNCTION tasker.apply_step_results(bigint[], uuid[], uuid[], integer[], text[], text, float8, bigint)
  SET enable_seqscan = off;
ALTER FUNCTION tasker.process_step_results(jsonb, text, float8, bigint) SET enable_seqscan = off;
ALTER FUNCTION tasker.complete_steps(text, jsonb, float8, bigint) SET enable_seqscan = off;
ALTER FUNCTION tasker.record_step_transitions(uuid[], uuid[], text[], text[], text, jsonb[])
  SET enable_seqscan = off;
ALTER FUNCTION tasker.record_step_transition(uuid, uuid, text, text, text, jsonb)
  SET enable_seqscan = off;

-- plpgsql keeps a plan per statement, but with the default plan_cache_mode it builds a new
-- custom plan on every call for any statement whose generic plan it estimates as dearer:
-- with key arrays as parameters that was most of them, and planning was about 40% of the
-- database's CPU in complete_steps (pg_stat_statements.track_planning: plans = calls). The
-- hot-path functions reach rows only by key (enable_seqscan = off), so one generic plan per
-- statement is right for every call.
DO $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'tasker' AND 'enable_seqscan=off' = ANY (p.proconfig) LOOP
    EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_generic_plan', f);
  END LOOP;
END;
$$;

-- UNIQUE (task_uuid, name) serves every lookup by task; this second index on task_uuid only
-- cost each new row version of a step (five per step) one more index entry.
DROP INDEX tasker.workflow_steps_task_idx;

-- The hot path, set-based. Each function now moves all the steps of its batch with one
-- statement per kind of change and writes their transition log in one statement, instead
-- of looping over steps with four or five statements each. Profiling the end-to-end
-- benchmark (pg_stat_statements, track = all) showed most of the engine's database time in
-- that per-statement overhead: four transitions per step, each a check, an update of the
-- step, an update of the previous log row and an insert.

-- The task id on step transitions and audit rows is copied from the step row, which
-- references the task already (and deleting a task cascades through its steps). The second
-- foreign key only made each of those inserts take a KEY SHARE lock on the task row next to
-- the orchestrator's lock on it (a multixact whenever the two overlap).
ALTER TABLE tasker.workflow_step_transitions DROP CONSTRAINT workflow_step_transitions_task_uuid_fkey;
ALTER TABLE tasker.step_result_audits DROP CONSTRAINT step_result_audits_task_uuid_fkey;

-- A step's history is read by step, a task's through its steps; indexing the log by task
-- only cost every transition (and every flag flip) one more index entry.
DROP INDEX tasker.workflow_step_transitions_task_idx;

-- One most_recent row per step and per task, now checked as each row is written instead of
-- by a deferred exclusion constraint's per-row recheck at commit. Every writer clears the old
-- row's flag before inserting the new row (record_step_transitions in one statement, whose
-- insert of a step's row needs that step's flip first), so nothing needed the deferral.
ALTER TABLE tasker.workflow_step_transitions DROP CONSTRAINT workflow_step_transitions_step_uuid_excl;
CREATE UNIQUE INDEX workflow_step_transitions_most_recent
  ON tasker.workflow_step_transitions (step_uuid) WHERE most_recent;
ALTER TABLE tasker.task_transitions DROP CONSTRAINT task_transitions_task_uuid_excl;
CREATE UNIQUE INDEX task_transitions_most_recent
  ON tasker.task_transitions (task_uuid) WHERE most_recent;

-- Appends one transition per step and moves each step's most_recent flag to it. The step
-- rows themselves are the caller's UPDATE (one statement that also sets the columns that go
-- with the new state); this writes the log. Raises for a pair the transition table forbids,
-- as transition_step does. The steps must be distinct.
CREATE FUNCTION tasker.record_step_transitions(
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
  WITH prev AS (
    UPDATE tasker.workflow_step_transitions t SET most_recent = false
     WHERE t.step_uuid = ANY (p_steps) AND t.most_recent
    RETURNING t.step_uuid, t.sort_key
  )
  INSERT INTO tasker.workflow_step_transitions
    (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
  SELECT u.step, u.task, u.f, u.t, coalesce(prev.sort_key + 1, 0), true, p_actor,
         coalesce(u.meta, '{}'::jsonb)
    FROM unnest(p_steps, p_tasks, p_from, p_to, p_metadata) AS u(step, task, f, t, meta)
    LEFT JOIN prev ON prev.step_uuid = u.step;
END;
$$;

-- The namespace a task's steps are queued under. plpgsql, not sql: a SQL function with a
-- FROM clause is not inlined and would be planned again in every statement that calls it.
CREATE FUNCTION tasker.task_namespace(p_task uuid) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN (SELECT n.name
            FROM tasker.tasks t
            JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
            JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
           WHERE t.task_uuid = p_task);
END;
$$;

-- Moves every ready step of a task to enqueued and sends their worker messages in the
-- caller's transaction, which holds the task row and has already decided the task may
-- move on. Returns the number of steps enqueued.
CREATE FUNCTION tasker.enqueue_steps_of(p_task uuid, p_actor text)
RETURNS integer LANGUAGE plpgsql AS $$
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
  PERFORM pgmq.send_batch('worker_' || v_ns || '_queue', v_msgs);
  RETURN cardinality(v_steps);
END;
$$;

CREATE OR REPLACE FUNCTION tasker.enqueue_ready_steps(p_task uuid, p_actor text) RETURNS integer
LANGUAGE plpgsql AS $$
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
$$;

-- As before, with the execution context computed once when steps were enqueued: right after
-- enqueueing, with no permanent failure (checked first), the task is processing.
CREATE OR REPLACE FUNCTION tasker.finalize_task(p_task uuid, p_actor text) RETURNS text
LANGUAGE plpgsql AS $$
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
$$;

-- A new task's first three transitions written at once (they are fixed), then its first
-- finalization, which enqueues the root steps.
CREATE OR REPLACE FUNCTION tasker.start_task(p_task uuid, p_actor text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE tasker.tasks SET state = 'enqueuing_steps', updated_at = now()
   WHERE task_uuid = p_task AND state = 'pending';
  IF NOT FOUND THEN
    RAISE EXCEPTION 'task %: cannot start, it is not a new pending task', p_task
      USING ERRCODE = 'check_violation';
  END IF;
  INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, actor)
  VALUES (p_task, NULL, 'pending', 0, false, p_actor),
         (p_task, 'pending', 'initializing', 1, false, p_actor),
         (p_task, 'initializing', 'enqueuing_steps', 2, true, p_actor);
  RETURN tasker.finalize_task(p_task, p_actor);
END;
$$;

-- Claims a batch: one UPDATE for every enqueued step, one log write, one query for what the
-- handlers need. Outcomes and the lease-expiry hand-back are as before.
CREATE OR REPLACE FUNCTION tasker.claim_steps(p_steps uuid[], p_worker text, p_lease_seconds integer)
RETURNS TABLE (
  step_uuid uuid,
  outcome text,
  lease_expires_at timestamptz,
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
) LANGUAGE plpgsql AS $$
DECLARE
  v_id      uuid;
  v_claimed uuid[];
  v_tasks   uuid[];
  v_from    text[];
  v_to      text[];
  v_meta    jsonb[];
BEGIN
  -- Sorted, so concurrent claimers and cancellations lock rows in one order.
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (p_steps) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  -- A step whose worker died (lease expired) is handed back first, then claimed afresh.
  FOR v_id IN SELECT s.step_uuid FROM tasker.workflow_steps s
               WHERE s.step_uuid = ANY (p_steps) AND s.state = 'in_progress'
                 AND s.lease_expires_at <= clock_timestamp()
               ORDER BY s.step_uuid LOOP
    PERFORM tasker.transition_step(v_id, 'in_progress', 'enqueued', p_worker,
                                   jsonb_build_object('reason', 'lease_expired'));
  END LOOP;
  WITH claimed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'in_progress', updated_at = now(), attempts = s.attempts + 1,
           claim_owner = p_worker,
           lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           started_at = clock_timestamp()
     WHERE s.step_uuid = ANY (p_steps) AND s.state = 'enqueued'
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
                          WHERE e.to_step_uuid = s.step_uuid), '{}'::jsonb) AS dependency_results
          FROM tasker.tasks t
          JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
          JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
         WHERE s.step_uuid = ANY (v_claimed) AND t.task_uuid = s.task_uuid
      ) c ON true
     ORDER BY u.id;
END;
$$;

-- Records a batch of results (the completion processor's) in one transaction: results of
-- steps this worker still holds for that attempt are stored, their steps moved on for
-- orchestration and audited with one statement each; one insert sends all orchestration
-- messages; the worker messages of recorded results are deleted, one call per queue.
-- p_results: [{step_uuid, attempt, success, result, error, execution_ms, metadata,
-- queue, msg_id}]. Returns the step ids whose results were refused (claim moved on).
CREATE OR REPLACE FUNCTION tasker.record_step_results(p_worker text, p_results jsonb)
RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
  v_ids   uuid[];
  v_steps uuid[];
  v_tasks uuid[];
  v_from  text[];
  v_to    text[];
  v_meta  jsonb[];
  q       record;
BEGIN
  SELECT array_agg(DISTINCT (x->>'step_uuid')::uuid) INTO v_ids
    FROM jsonb_array_elements(p_results) AS x;
  -- Sorted, so concurrent recorders, claimers and cancellations lock rows in one order.
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (v_ids) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  WITH r AS (
    SELECT DISTINCT ON ((x->>'step_uuid')::uuid)
           (x->>'step_uuid')::uuid AS step_uuid, (x->>'attempt')::integer AS attempt,
           (x->>'success')::boolean AS success, x->'result' AS result,
           CASE WHEN jsonb_typeof(x->'error') = 'object' THEN x->'error' END AS error,
           (x->>'execution_ms')::bigint AS execution_ms,
           CASE WHEN jsonb_typeof(x->'metadata') = 'object' THEN x->'metadata' ELSE '{}'::jsonb END AS metadata
      FROM jsonb_array_elements(p_results) AS x
     ORDER BY (x->>'step_uuid')::uuid
  ), applied AS (
    UPDATE tasker.workflow_steps s
       SET state = CASE WHEN r.success THEN 'enqueued_for_orchestration'
                        ELSE 'enqueued_as_error_for_orchestration' END,
           updated_at = now(),
           results = CASE WHEN r.success THEN r.result ELSE s.results END,
           last_error = CASE WHEN r.success THEN NULL ELSE r.error END,
           claim_owner = NULL, lease_expires_at = NULL
      FROM r
     WHERE s.step_uuid = ANY (v_ids) AND s.step_uuid = r.step_uuid AND s.state = 'in_progress'
       AND s.claim_owner = p_worker AND s.attempts = r.attempt
    RETURNING s.step_uuid, s.task_uuid, s.state, r.attempt, r.success, r.result, r.error,
              r.execution_ms, r.metadata
  ), audited AS (
    INSERT INTO tasker.step_result_audits
      (step_uuid, task_uuid, attempt, worker_id, success, result, error, execution_time_ms, metadata)
    SELECT a.step_uuid, a.task_uuid, a.attempt, p_worker, a.success,
           CASE WHEN a.success THEN a.result END, a.error, a.execution_ms, a.metadata
      FROM applied a
  ), sent AS (
    INSERT INTO pgmq.q_orchestration_step_results (vt, message)
    SELECT clock_timestamp(), jsonb_build_object(
             'task_uuid', a.task_uuid, 'step_uuid', a.step_uuid, 'attempt', a.attempt,
             'success', a.success, 'worker_id', p_worker)
      FROM applied a
  )
  SELECT array_agg(a.step_uuid), array_agg(a.task_uuid), array_agg('in_progress'::text),
         array_agg(a.state),
         array_agg(jsonb_build_object('attempt', a.attempt, 'execution_time_ms', a.execution_ms))
    INTO v_steps, v_tasks, v_from, v_to, v_meta
    FROM applied a;
  IF v_steps IS NOT NULL THEN
    PERFORM tasker.record_step_transitions(v_steps, v_tasks, v_from, v_to, p_worker, v_meta);
    -- Worker messages of recorded results only: a refused result's message belongs to
    -- whoever holds the step now.
    FOR q IN SELECT x->>'queue' AS queue, array_agg((x->>'msg_id')::bigint) AS ids
               FROM jsonb_array_elements(p_results) AS x
              WHERE x->>'queue' IS NOT NULL AND x->>'msg_id' IS NOT NULL
                AND (x->>'step_uuid')::uuid = ANY (v_steps)
              GROUP BY 1 LOOP
      PERFORM pgmq.delete(q.queue, q.ids);
    END LOOP;
  END IF;
  RETURN QUERY
    SELECT id FROM unnest(v_ids) AS id WHERE NOT (id = ANY (coalesce(v_steps, ARRAY[]::uuid[])));
END;
$$;

-- One result in one transaction: a batch of one.
CREATE OR REPLACE FUNCTION tasker.record_step_result(
  p_step uuid, p_attempt integer, p_worker text, p_success boolean, p_result jsonb,
  p_error jsonb, p_execution_ms bigint, p_metadata jsonb, p_worker_queue text, p_msg_id bigint
) RETURNS boolean LANGUAGE sql AS $$
  SELECT NOT EXISTS (
    SELECT 1 FROM tasker.record_step_results(p_worker, jsonb_build_array(jsonb_build_object(
      'step_uuid', p_step, 'attempt', p_attempt, 'success', p_success, 'result', p_result,
      'error', p_error, 'execution_ms', p_execution_ms, 'metadata', p_metadata,
      'queue', p_worker_queue, 'msg_id', p_msg_id))))
$$;

DROP FUNCTION tasker.apply_step_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb);

-- Applies a batch of result messages in one transaction. Successes (nearly every message)
-- complete with one UPDATE and one log write; failures are decided one by one (retry with
-- backoff, or error). Per step, only the first message for the current attempt applies;
-- duplicates and stale attempts are ignored. Every task touched is finalized once, after all
-- its results, and the messages are deleted.
-- p_messages: [{msg_id, task_uuid, step_uuid, attempt, success, worker_id}].
-- Returns one row per message, and the namespace of its task for waking workers.
CREATE OR REPLACE FUNCTION tasker.process_step_results(
  p_messages jsonb, p_actor text, p_jitter_ratio float8, p_max_retry_after_ms bigint
) RETURNS TABLE (msg_id bigint, task_uuid uuid, namespace text, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
  v_m_msgs     bigint[];
  v_m_tasks    uuid[];
  v_m_steps    uuid[];
  v_m_attempts integer[];
  v_m_workers  text[];
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
  -- The batch decoded once, in the order its rows are returned.
  SELECT array_agg(m.msg_id ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.task_uuid ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.step_uuid ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.attempt ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.worker_id ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(DISTINCT m.task_uuid), array_agg(DISTINCT m.step_uuid)
    INTO v_m_msgs, v_m_tasks, v_m_steps, v_m_attempts, v_m_workers, v_task_ids, v_step_ids
    FROM (SELECT (x->>'msg_id')::bigint AS msg_id, (x->>'task_uuid')::uuid AS task_uuid,
                 (x->>'step_uuid')::uuid AS step_uuid, (x->>'attempt')::integer AS attempt,
                 x->>'worker_id' AS worker_id
            FROM jsonb_array_elements(p_messages) AS x) AS m;
  -- Every task of the batch first, then every step, each in one order, so concurrent
  -- batches cannot deadlock.
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid = ANY (v_task_ids) ORDER BY t.task_uuid FOR NO KEY UPDATE;
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (v_step_ids) ORDER BY s.step_uuid FOR NO KEY UPDATE;

  WITH m AS (
    SELECT DISTINCT ON (s.step_uuid) u.msg_id, s.step_uuid, u.worker_id
      FROM unnest(v_m_msgs, v_m_tasks, v_m_steps, v_m_attempts, v_m_workers)
             AS u(msg_id, task_uuid, step_uuid, attempt, worker_id)
      JOIN tasker.workflow_steps s ON s.step_uuid = u.step_uuid AND s.task_uuid = u.task_uuid
     WHERE s.step_uuid = ANY (v_step_ids) AND s.attempts = u.attempt
       AND s.state = 'enqueued_for_orchestration'
     ORDER BY s.step_uuid, u.msg_id
  ), completed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'complete', updated_at = now(), completed_at = clock_timestamp()
      FROM m
     WHERE s.step_uuid = ANY (v_step_ids) AND s.step_uuid = m.step_uuid
    RETURNING s.step_uuid, s.task_uuid, s.attempts, m.msg_id, m.worker_id
  )
  SELECT array_agg(c.msg_id), array_agg(c.step_uuid), array_agg(c.task_uuid),
         array_agg('enqueued_for_orchestration'::text), array_agg('complete'::text),
         array_agg(jsonb_build_object('attempt', c.attempts, 'worker_id', c.worker_id))
    INTO v_msgs, v_steps, v_tasks, v_from, v_to, v_meta
    FROM completed c;
  IF v_steps IS NOT NULL THEN
    PERFORM tasker.record_step_transitions(v_steps, v_tasks, v_from, v_to, p_actor, v_meta);
    SELECT jsonb_object_agg(id::text, 'completed') INTO v_outcomes FROM unnest(v_msgs) AS id;
  END IF;

  FOR f IN SELECT DISTINCT ON (s.step_uuid)
                  u.msg_id, s.step_uuid, s.task_uuid, s.state, s.attempts, s.max_attempts,
                  s.retryable, s.backoff, s.backoff_base_ms, s.max_backoff_ms,
                  coalesce(s.last_error, '{}'::jsonb) AS last_error
             FROM unnest(v_m_msgs, v_m_tasks, v_m_steps, v_m_attempts)
                    AS u(msg_id, task_uuid, step_uuid, attempt)
             JOIN tasker.workflow_steps s
               ON s.step_uuid = u.step_uuid AND s.task_uuid = u.task_uuid
            WHERE s.step_uuid = ANY (v_step_ids) AND s.attempts = u.attempt
              AND s.state = 'enqueued_as_error_for_orchestration'
            ORDER BY s.step_uuid, u.msg_id LOOP
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
      v_outcomes := v_outcomes || jsonb_build_object(f.msg_id::text, 'retry_scheduled');
    ELSE
      PERFORM tasker.transition_step(f.step_uuid, f.state, 'error', p_actor,
        jsonb_build_object('attempt', f.attempts, 'reason',
          CASE WHEN NOT coalesce((v_err->>'retryable')::boolean, true) THEN 'not retryable (handler)'
               WHEN NOT f.retryable THEN 'not retryable (template)'
               ELSE 'out of attempts' END));
      UPDATE tasker.workflow_steps SET completed_at = clock_timestamp()
       WHERE workflow_steps.step_uuid = f.step_uuid;
      v_outcomes := v_outcomes || jsonb_build_object(f.msg_id::text, 'failed');
    END IF;
    v_tasks := v_tasks || f.task_uuid;
  END LOOP;

  PERFORM tasker.finalize_task(t, p_actor)
     FROM (SELECT DISTINCT t FROM unnest(v_tasks) AS t) AS touched ORDER BY t;
  DELETE FROM pgmq.q_orchestration_step_results q WHERE q.msg_id = ANY (v_m_msgs);

  RETURN QUERY
    SELECT u.msg_id, u.task_uuid, tasker.task_namespace(u.task_uuid),
           coalesce(v_outcomes->>u.msg_id::text, 'ignored')
      FROM unnest(v_m_msgs, v_m_tasks) WITH ORDINALITY AS u(msg_id, task_uuid, i)
     ORDER BY u.i;
END;
$$;

-- The heartbeat's renewal. Rows another transaction is changing right now are skipped, not
-- waited for: most often that is this worker recording the step's result, and waiting would
-- both report a step as lost that was just recorded and, since the renewal locked rows in no
-- particular order, deadlock with the sorted lockers (recording, claims, result processing).
-- A skipped renewal is made at the next beat. Returns the steps this worker no longer holds
-- and did not record a result for.
CREATE OR REPLACE FUNCTION tasker.renew_leases(p_steps uuid[], p_worker text, p_lease_seconds integer)
RETURNS SETOF uuid LANGUAGE plpgsql AS $$
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
$$;

-- Every statement in these functions reaches rows by key (step, task, message ids). On
-- tables that have not been analyzed yet (a new database, or autovacuum off) the planner
-- would pick sequential scans while they are small, and plpgsql keeps that plan for the
-- connection's life as the tables grow: measured, twelve thousand full scans of
-- workflow_steps in one benchmark run.
ALTER FUNCTION tasker.claim_steps(uuid[], text, integer) SET enable_seqscan = off;
ALTER FUNCTION tasker.record_step_results(text, jsonb) SET enable_seqscan = off;
ALTER FUNCTION tasker.process_step_results(jsonb, text, float8, bigint) SET enable_seqscan = off;
ALTER FUNCTION tasker.finalize_task(uuid, text) SET enable_seqscan = off;
ALTER FUNCTION tasker.start_task(uuid, text) SET enable_seqscan = off;
ALTER FUNCTION tasker.enqueue_ready_steps(uuid, text) SET enable_seqscan = off;
ALTER FUNCTION tasker.renew_leases(uuid[], text, integer) SET enable_seqscan = off;
ALTER FUNCTION tasker.release_steps(uuid[], text) SET enable_seqscan = off;

-- The hot path, one function per transaction the engine spends on a step: enqueue (by
-- orchestration), claim (by a worker), record the result (by the worker), and finalize
-- (by orchestration, after each result). Each runs in one round trip.
--
-- Rows are locked FOR NO KEY UPDATE, never FOR UPDATE: the foreign-key checks of the rows
-- other transactions insert (transitions, audit rows) take KEY SHARE locks on the same task
-- and step rows, and FOR UPDATE would make every worker's result wait for the
-- orchestrator's transaction on that task.

-- A step that failed for good: error, or waiting for a retry it can no longer have.
CREATE FUNCTION tasker.task_has_permanent_failure(p_task uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (
    SELECT 1 FROM tasker.workflow_steps
     WHERE task_uuid = p_task
       AND (state = 'error'
            OR (state = 'waiting_for_retry'
                AND NOT (attempts < max_attempts AND (retryable OR attempts = 0))))
  )
$$;

-- Moves every ready step of an active task to enqueued and sends its worker message in the
-- same transaction, so no worker sees a message for a step that is not enqueued and no
-- enqueued step lacks a message. Nothing is enqueued for a task that is blocked, finished
-- or cancelled. Returns the number of steps enqueued.
CREATE FUNCTION tasker.enqueue_ready_steps(p_task uuid, p_actor text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  v_state text;
  v_ns    text;
  v_msgs  jsonb[] := ARRAY[]::jsonb[];
  r       record;
BEGIN
  SELECT t.state, n.name INTO v_state, v_ns
    FROM tasker.tasks t
    JOIN tasker.named_tasks nt USING (named_task_uuid)
    JOIN tasker.namespaces n USING (namespace_uuid)
   WHERE t.task_uuid = p_task;
  IF v_state IS NULL
     OR v_state NOT IN ('enqueuing_steps', 'steps_in_process', 'evaluating_results',
                        'waiting_for_dependencies', 'waiting_for_retry')
     OR tasker.task_has_permanent_failure(p_task) THEN
    RETURN 0;
  END IF;
  FOR r IN SELECT rs.step_uuid, rs.name, rs.current_state, rs.attempts
             FROM tasker.get_step_readiness_status(p_task) rs
            WHERE rs.ready_for_execution LOOP
    IF tasker.transition_step(r.step_uuid, r.current_state, 'enqueued', p_actor,
                              jsonb_build_object('attempt', r.attempts + 1)) THEN
      UPDATE tasker.workflow_steps
         SET enqueued_at = clock_timestamp(), next_retry_at = NULL
       WHERE step_uuid = r.step_uuid;
      v_msgs := v_msgs || jsonb_build_object(
        'task_uuid', p_task, 'step_uuid', r.step_uuid, 'step_name', r.name,
        'namespace', v_ns, 'attempt', r.attempts + 1);
    END IF;
  END LOOP;
  IF cardinality(v_msgs) > 0 THEN
    PERFORM pgmq.send_batch('worker_' || v_ns || '_queue', v_msgs);
  END IF;
  RETURN cardinality(v_msgs);
END;
$$;

-- Decides what a task's state should be from its execution context, enqueues ready steps,
-- and moves the task there. The task row is locked first, so concurrent finalizations of
-- one task (two results landing at once, two orchestrators) take turns. Returns the state
-- the task is left in.
CREATE FUNCTION tasker.finalize_task(p_task uuid, p_actor text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  v_state  text;
  v_ctx    record;
  v_target text;
  v_failed jsonb;
BEGIN
  SELECT state INTO v_state FROM tasker.tasks WHERE task_uuid = p_task FOR NO KEY UPDATE;
  IF v_state IS NULL OR v_state NOT IN ('enqueuing_steps', 'steps_in_process', 'evaluating_results',
                                        'waiting_for_dependencies', 'waiting_for_retry') THEN
    RETURN v_state;
  END IF;
  SELECT * INTO v_ctx FROM tasker.get_task_execution_context(p_task);
  IF v_ctx.execution_status = 'has_ready_steps' THEN
    PERFORM tasker.enqueue_ready_steps(p_task, p_actor);
    SELECT * INTO v_ctx FROM tasker.get_task_execution_context(p_task);
  END IF;
  v_target := CASE v_ctx.execution_status
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
                                   jsonb_build_object('execution_status', v_ctx.execution_status));
  END IF;
  RETURN v_target;
END;
$$;

-- Claims enqueued steps for a worker: enqueued -> in_progress, attempts + 1, owner and
-- lease recorded. A step still in_progress whose lease has expired (its worker died) is
-- handed back (in_progress -> enqueued) and claimed again as a new attempt. Returns one row
-- per requested step with the outcome and, for claims, everything the handler needs.
--   claimed  - the caller now owns it
--   busy     - another worker holds a live lease; the message should reappear after it
--   finished - nothing to do (done, cancelled, already past this attempt); drop the message
--   missing  - no such step
CREATE FUNCTION tasker.claim_steps(p_steps uuid[], p_worker text, p_lease_seconds integer)
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
  v_id    uuid;
  v_step  record;
  v_lease timestamptz;
BEGIN
  -- Sorted, so concurrent claimers and cancellations lock rows in one order.
  FOR v_id IN SELECT DISTINCT x FROM unnest(p_steps) AS x ORDER BY x LOOP
    SELECT s.state, s.lease_expires_at, s.task_uuid INTO v_step
      FROM tasker.workflow_steps s WHERE s.step_uuid = v_id FOR NO KEY UPDATE;
    step_uuid := v_id;
    lease_expires_at := NULL;
    IF NOT FOUND THEN
      outcome := 'missing';
      RETURN NEXT;
      CONTINUE;
    END IF;
    IF v_step.state = 'in_progress' AND v_step.lease_expires_at > clock_timestamp() THEN
      outcome := 'busy';
      lease_expires_at := v_step.lease_expires_at;
      RETURN NEXT;
      CONTINUE;
    END IF;
    IF v_step.state = 'in_progress' THEN
      PERFORM tasker.transition_step(v_id, 'in_progress', 'enqueued', p_worker,
                                     jsonb_build_object('reason', 'lease_expired'));
    ELSIF v_step.state <> 'enqueued' THEN
      outcome := 'finished';
      RETURN NEXT;
      CONTINUE;
    END IF;
    v_lease := clock_timestamp() + make_interval(secs => p_lease_seconds);
    PERFORM tasker.transition_step(v_id, 'enqueued', 'in_progress', p_worker, '{}'::jsonb);
    UPDATE tasker.workflow_steps
       SET attempts = attempts + 1, claim_owner = p_worker, lease_expires_at = v_lease,
           started_at = clock_timestamp()
     WHERE workflow_steps.step_uuid = v_id;
    RETURN QUERY
      SELECT s.step_uuid, 'claimed'::text, s.lease_expires_at, s.task_uuid, s.name, n.name,
             nt.name, nt.version, s.attempts, s.max_attempts, s.handler_callable,
             s.handler_initialization, s.timeout_seconds, s.publishes_events, s.inputs,
             t.context,
             coalesce((SELECT jsonb_object_agg(ps.name, ps.results)
                         FROM tasker.workflow_step_edges e
                         JOIN tasker.workflow_steps ps ON ps.step_uuid = e.from_step_uuid
                        WHERE e.to_step_uuid = s.step_uuid), '{}'::jsonb)
        FROM tasker.workflow_steps s
        JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
        JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
        JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
       WHERE s.step_uuid = v_id;
  END LOOP;
END;
$$;

-- Extends the leases of steps a worker still runs. Returns the steps whose lease it no
-- longer holds (their results will be refused).
CREATE FUNCTION tasker.renew_leases(p_steps uuid[], p_worker text, p_lease_seconds integer)
RETURNS SETOF uuid LANGUAGE sql AS $$
  WITH renewed AS (
    UPDATE tasker.workflow_steps
       SET lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds)
     WHERE step_uuid = ANY (p_steps) AND state = 'in_progress' AND claim_owner = p_worker
    RETURNING step_uuid
  )
  SELECT id FROM unnest(p_steps) AS id WHERE id NOT IN (SELECT step_uuid FROM renewed)
$$;

-- Records one handler result, only if the worker still holds the claim for that attempt:
-- stores result or error, moves the step on for orchestration and writes the audit row.
-- Returns false (and changes nothing) for a late result after the claim moved on. Sending
-- the orchestration message and deleting the worker's message are the callers' part, so
-- a batch can do each once.
CREATE FUNCTION tasker.apply_step_result(
  p_step uuid, p_attempt integer, p_worker text, p_success boolean, p_result jsonb,
  p_error jsonb, p_execution_ms bigint, p_metadata jsonb
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
  v_task uuid;
  v_to   text := CASE WHEN p_success THEN 'enqueued_for_orchestration'
                      ELSE 'enqueued_as_error_for_orchestration' END;
BEGIN
  SELECT task_uuid INTO v_task FROM tasker.workflow_steps
   WHERE step_uuid = p_step AND state = 'in_progress' AND claim_owner = p_worker
     AND attempts = p_attempt
   FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  PERFORM tasker.transition_step(p_step, 'in_progress', v_to, p_worker,
                                 jsonb_build_object('attempt', p_attempt,
                                                    'execution_time_ms', p_execution_ms));
  UPDATE tasker.workflow_steps
     SET results = CASE WHEN p_success THEN p_result ELSE results END,
         last_error = CASE WHEN p_success THEN NULL ELSE p_error END,
         claim_owner = NULL, lease_expires_at = NULL
   WHERE step_uuid = p_step;
  INSERT INTO tasker.step_result_audits
    (step_uuid, task_uuid, attempt, worker_id, success, result, error, execution_time_ms, metadata)
  VALUES (p_step, v_task, p_attempt, p_worker, p_success,
          CASE WHEN p_success THEN p_result END, p_error, p_execution_ms,
          coalesce(p_metadata, '{}'::jsonb));
  RETURN v_task;
END;
$$;

-- One result in one transaction: apply it, send the orchestration message, delete the
-- worker's queue message. False for a late result (nothing changes).
CREATE FUNCTION tasker.record_step_result(
  p_step uuid, p_attempt integer, p_worker text, p_success boolean, p_result jsonb,
  p_error jsonb, p_execution_ms bigint, p_metadata jsonb, p_worker_queue text, p_msg_id bigint
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_task uuid;
BEGIN
  v_task := tasker.apply_step_result(p_step, p_attempt, p_worker, p_success, p_result, p_error,
                                     p_execution_ms, p_metadata);
  IF v_task IS NULL THEN
    RETURN false;
  END IF;
  PERFORM pgmq.send('orchestration_step_results', jsonb_build_object(
    'task_uuid', v_task, 'step_uuid', p_step, 'attempt', p_attempt,
    'success', p_success, 'worker_id', p_worker));
  IF p_worker_queue IS NOT NULL AND p_msg_id IS NOT NULL THEN
    PERFORM pgmq.delete(p_worker_queue, p_msg_id);
  END IF;
  RETURN true;
END;
$$;

-- A new task's first transitions (pending -> initializing -> enqueuing_steps) and its first
-- finalization, which enqueues the root steps. Returns the state the task is left in.
CREATE FUNCTION tasker.start_task(p_task uuid, p_actor text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM tasker.record_task_transition(p_task, NULL, 'pending', p_actor, '{}'::jsonb);
  PERFORM tasker.transition_task(p_task, 'pending', 'initializing', p_actor);
  PERFORM tasker.transition_task(p_task, 'initializing', 'enqueuing_steps', p_actor);
  RETURN tasker.finalize_task(p_task, p_actor);
END;
$$;

-- Graceful shutdown: a worker hands back steps it claimed but will not finish. The attempt
-- is not counted (no result was recorded), and the step's queue message is made visible
-- again at once so another worker picks it up.
CREATE FUNCTION tasker.release_steps(p_steps uuid[], p_worker text) RETURNS integer
LANGUAGE plpgsql AS $$
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
$$;

-- Records several results in one transaction (the completion processor's batches), with one
-- send of all orchestration messages and one delete per worker queue.
-- p_results: [{step_uuid, attempt, success, result, error, execution_ms, metadata,
-- queue, msg_id}]. Returns the step ids whose results were refused (claim moved on).
CREATE FUNCTION tasker.record_step_results(p_worker text, p_results jsonb)
RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
  r      jsonb;
  v_task uuid;
  v_msgs jsonb[] := ARRAY[]::jsonb[];
  q      record;
BEGIN
  FOR r IN SELECT x FROM jsonb_array_elements(p_results) AS x ORDER BY x->>'step_uuid' LOOP
    v_task := tasker.apply_step_result(
         (r->>'step_uuid')::uuid, (r->>'attempt')::integer, p_worker, (r->>'success')::boolean,
         r->'result', CASE WHEN jsonb_typeof(r->'error') = 'object' THEN r->'error' END,
         (r->>'execution_ms')::bigint, r->'metadata');
    IF v_task IS NULL THEN
      RETURN NEXT (r->>'step_uuid')::uuid;
    ELSE
      v_msgs := v_msgs || jsonb_build_object(
        'task_uuid', v_task, 'step_uuid', r->'step_uuid', 'attempt', (r->>'attempt')::integer,
        'success', (r->>'success')::boolean, 'worker_id', p_worker);
    END IF;
  END LOOP;
  IF cardinality(v_msgs) > 0 THEN
    PERFORM pgmq.send_batch('orchestration_step_results', v_msgs);
  END IF;
  -- Worker messages of recorded results only: a refused result's message belongs to
  -- whoever holds the step now.
  FOR q IN SELECT x->>'queue' AS queue, array_agg((x->>'msg_id')::bigint) AS ids
             FROM jsonb_array_elements(p_results) AS x
            WHERE x->>'queue' IS NOT NULL AND x->>'msg_id' IS NOT NULL
              AND (x->>'step_uuid')::uuid NOT IN (
                SELECT (y->>'step_uuid')::uuid FROM jsonb_array_elements(p_results) y
                 WHERE NOT EXISTS (SELECT 1 FROM unnest(v_msgs) m WHERE m->>'step_uuid' = y->>'step_uuid'))
            GROUP BY 1 LOOP
    PERFORM pgmq.delete(q.queue, q.ids);
  END LOOP;
END;
$$;

-- The delay before a failed step's next attempt: the handler's retry_after hint (capped) wins,
-- else the step's backoff (none / linear / exponential, capped) plus random jitter.
CREATE FUNCTION tasker.retry_delay_ms(
  p_backoff text, p_base_ms bigint, p_max_ms bigint, p_attempts integer, p_error jsonb,
  p_jitter_ratio float8, p_max_retry_after_ms bigint
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
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
$$;

-- Applies a batch of result messages in one transaction: each step moves to complete,
-- waiting_for_retry (with its delay) or error; duplicates and stale attempts are ignored;
-- every task touched is finalized once, after all its results; the messages are deleted.
-- p_messages: [{msg_id, task_uuid, step_uuid, attempt, success, worker_id}].
-- Returns one row per message, and the namespace of its task for waking workers.
CREATE FUNCTION tasker.process_step_results(
  p_messages jsonb, p_actor text, p_jitter_ratio float8, p_max_retry_after_ms bigint
) RETURNS TABLE (msg_id bigint, task_uuid uuid, namespace text, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
  m        jsonb;
  v_task   uuid;
  v_step   record;
  v_err    jsonb;
  v_delay  bigint;
  v_retry  boolean;
  v_tasks  uuid[] := ARRAY[]::uuid[];
  v_ids    bigint[] := ARRAY[]::bigint[];
BEGIN
  -- Lock every task of the batch first, in one order, so concurrent batches cannot deadlock.
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid IN (SELECT (x->>'task_uuid')::uuid FROM jsonb_array_elements(p_messages) x)
   ORDER BY t.task_uuid FOR NO KEY UPDATE;
  FOR m IN SELECT x FROM jsonb_array_elements(p_messages) AS x
            ORDER BY x->>'task_uuid', x->>'step_uuid', (x->>'msg_id')::bigint LOOP
    msg_id := (m->>'msg_id')::bigint;
    task_uuid := (m->>'task_uuid')::uuid;
    v_ids := v_ids || msg_id;
    SELECT n.name INTO namespace
      FROM tasker.tasks t JOIN tasker.named_tasks nt USING (named_task_uuid)
      JOIN tasker.namespaces n USING (namespace_uuid)
     WHERE t.task_uuid = (m->>'task_uuid')::uuid;
    SELECT s.state, s.attempts, s.max_attempts, s.retryable, s.backoff, s.backoff_base_ms,
           s.max_backoff_ms, s.last_error
      INTO v_step
      FROM tasker.workflow_steps s
     WHERE s.step_uuid = (m->>'step_uuid')::uuid AND s.task_uuid = (m->>'task_uuid')::uuid
     FOR NO KEY UPDATE;
    IF NOT FOUND OR v_step.attempts <> (m->>'attempt')::integer
       OR v_step.state NOT IN ('enqueued_for_orchestration', 'enqueued_as_error_for_orchestration') THEN
      outcome := 'ignored';
      RETURN NEXT;
      CONTINUE;
    END IF;
    IF v_step.state = 'enqueued_for_orchestration' THEN
      PERFORM tasker.transition_step((m->>'step_uuid')::uuid, v_step.state, 'complete', p_actor,
        jsonb_build_object('attempt', v_step.attempts, 'worker_id', m->>'worker_id'));
      UPDATE tasker.workflow_steps SET completed_at = clock_timestamp()
       WHERE step_uuid = (m->>'step_uuid')::uuid;
      outcome := 'completed';
    ELSE
      v_err := coalesce(v_step.last_error, '{}'::jsonb);
      v_retry := coalesce((v_err->>'retryable')::boolean, true)
                 AND v_step.retryable AND v_step.attempts < v_step.max_attempts;
      IF v_retry THEN
        v_delay := tasker.retry_delay_ms(v_step.backoff, v_step.backoff_base_ms, v_step.max_backoff_ms,
                                         v_step.attempts, v_err, p_jitter_ratio, p_max_retry_after_ms);
        PERFORM tasker.transition_step((m->>'step_uuid')::uuid, v_step.state, 'waiting_for_retry', p_actor,
          jsonb_build_object('attempt', v_step.attempts, 'retry_in_ms', v_delay));
        UPDATE tasker.workflow_steps
           SET next_retry_at = clock_timestamp() + make_interval(secs => v_delay / 1000.0)
         WHERE step_uuid = (m->>'step_uuid')::uuid;
        outcome := 'retry_scheduled';
      ELSE
        PERFORM tasker.transition_step((m->>'step_uuid')::uuid, v_step.state, 'error', p_actor,
          jsonb_build_object('attempt', v_step.attempts, 'reason',
            CASE WHEN NOT coalesce((v_err->>'retryable')::boolean, true) THEN 'not retryable (handler)'
                 WHEN NOT v_step.retryable THEN 'not retryable (template)'
                 ELSE 'out of attempts' END));
        UPDATE tasker.workflow_steps SET completed_at = clock_timestamp()
         WHERE step_uuid = (m->>'step_uuid')::uuid;
        outcome := 'failed';
      END IF;
    END IF;
    IF NOT (task_uuid = ANY (v_tasks)) THEN
      v_tasks := v_tasks || task_uuid;
    END IF;
    RETURN NEXT;
  END LOOP;
  PERFORM tasker.finalize_task(t, p_actor) FROM unnest(v_tasks) AS t ORDER BY t;
  PERFORM pgmq.delete('orchestration_step_results', v_ids);
END;
$$;

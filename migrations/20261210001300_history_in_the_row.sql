-- A no-op step wrote about 12 rows (issue 28: at most 6): four transition-log rows, an audit
-- row, its row three times, its queue message three times (sent, read, deleted), and its task
-- six transition rows. Now: a task's and a step's transitions are a typed list in their own
-- row (tasks.transitions, workflow_steps.transitions, tasker.transition[]), appended by the
-- statement that moves the row and read as rows through the views task_transitions and
-- workflow_step_transitions; the attempt that completes a step is audited in the step's row
-- (recorded_by, execution_time_ms, result_metadata), other attempts in step_result_audit_log,
-- both through the view step_result_audits; and a claim deletes its step's queue message:
-- whoever releases a claim (reap_dead_workers, release_steps, the new release_expired_claims)
-- sends a new one (send_enqueued_step_messages).
-- Written by bin/sql-migration from db/ (docs/sql.md).

CREATE TYPE tasker.transition AS (
	from_state text,
	to_state text,
	actor text,
	metadata jsonb,
	created_at timestamp with time zone
);

-- Transitions, from their log rows into their rows, in order; then the log tables go.
ALTER TABLE tasker.tasks
  ADD COLUMN transitions tasker.transition[] DEFAULT '{}'::tasker.transition[] NOT NULL;
ALTER TABLE tasker_archive.tasks ADD COLUMN transitions tasker.transition[];
ALTER TABLE tasker.workflow_steps
  ADD COLUMN transitions tasker.transition[] DEFAULT '{}'::tasker.transition[] NOT NULL,
  ADD COLUMN recorded_by text,
  ADD COLUMN execution_time_ms bigint,
  ADD COLUMN result_metadata jsonb;
ALTER TABLE tasker_archive.workflow_steps
  ADD COLUMN transitions tasker.transition[],
  ADD COLUMN recorded_by text,
  ADD COLUMN execution_time_ms bigint,
  ADD COLUMN result_metadata jsonb;

UPDATE tasker.tasks t SET transitions = x.list
  FROM (SELECT task_uuid, array_agg(ROW(from_state, to_state, actor, nullif(metadata, '{}'::jsonb),
                             created_at)::tasker.transition ORDER BY sort_key) AS list
          FROM tasker.task_transitions GROUP BY task_uuid) AS x
 WHERE t.task_uuid = x.task_uuid;
UPDATE tasker_archive.tasks t SET transitions = x.list
  FROM (SELECT task_uuid, array_agg(ROW(from_state, to_state, actor, nullif(metadata, '{}'::jsonb),
                             created_at)::tasker.transition ORDER BY sort_key) AS list
          FROM tasker_archive.task_transitions GROUP BY task_uuid) AS x
 WHERE t.task_uuid = x.task_uuid;
UPDATE tasker_archive.tasks SET transitions = '{}' WHERE transitions IS NULL;
ALTER TABLE tasker_archive.tasks ALTER COLUMN transitions SET NOT NULL;
UPDATE tasker.workflow_steps s SET transitions = x.list
  FROM (SELECT step_uuid, array_agg(ROW(from_state, to_state, actor, nullif(metadata, '{}'::jsonb),
                             created_at)::tasker.transition ORDER BY sort_key) AS list
          FROM tasker.workflow_step_transition_log GROUP BY step_uuid) AS x
 WHERE s.step_uuid = x.step_uuid;
UPDATE tasker_archive.workflow_steps s SET transitions = x.list
  FROM (SELECT step_uuid, array_agg(ROW(from_state, to_state, actor, nullif(metadata, '{}'::jsonb),
                             created_at)::tasker.transition ORDER BY sort_key) AS list
          FROM tasker_archive.workflow_step_transition_log GROUP BY step_uuid) AS x
 WHERE s.step_uuid = x.step_uuid;
UPDATE tasker_archive.workflow_steps SET transitions = '{}' WHERE transitions IS NULL;
ALTER TABLE tasker_archive.workflow_steps ALTER COLUMN transitions SET NOT NULL;

-- The step view's insert trigger goes with it.
DROP VIEW tasker.workflow_step_transitions;
DROP TABLE tasker.workflow_step_transition_log;
DROP TABLE tasker_archive.workflow_step_transition_log;
DROP TABLE tasker.task_transitions;
DROP TABLE tasker_archive.task_transitions;

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

-- The audit table keeps the attempts that did not complete their step; its old rows stay.
ALTER TABLE tasker.step_result_audits RENAME TO step_result_audit_log;
ALTER INDEX tasker.step_result_audits_pkey RENAME TO step_result_audit_log_pkey;
ALTER INDEX tasker.step_result_audits_task_idx RENAME TO step_result_audit_log_task_idx;
ALTER INDEX tasker.step_result_audits_recorded_idx RENAME TO step_result_audit_log_recorded_idx;
ALTER TABLE tasker_archive.step_result_audits RENAME TO step_result_audit_log;
ALTER INDEX tasker_archive.step_result_audits_task_idx RENAME TO step_result_audit_log_task_idx;

CREATE INDEX workflow_steps_recorded_idx ON tasker.workflow_steps USING btree (completed_at)
  WHERE (recorded_by IS NOT NULL);

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

SET LOCAL check_function_bodies = off;
SET LOCAL check_function_bodies = off;
DROP FUNCTION IF EXISTS tasker.record_step_transition(p_step uuid, p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb);
DROP FUNCTION IF EXISTS tasker.record_step_transitions(p_steps uuid[], p_tasks uuid[], p_from text[], p_to text[], p_actor text, p_metadata jsonb[]);
DROP FUNCTION IF EXISTS tasker.record_task_transition(p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb);
DROP FUNCTION IF EXISTS tasker.release_steps(p_steps uuid[], p_worker text);
DROP FUNCTION IF EXISTS tasker.task_started(p_task uuid, p_ns text, p_steps uuid[], p_names text[], p_actor text, p_send boolean, p_visible_at timestamp with time zone);
DROP FUNCTION IF EXISTS tasker.workflow_step_transitions_insert();

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
    PERFORM tasker.record_step_transitions(v_steps, v_from, v_to, p_actor, v_meta);
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

-- Claims steps for a worker: each enqueued step (or in_progress one whose lease expired: its
-- worker died) moves to in_progress with this worker as owner, a new attempt and a lease.
-- One tasker.step_claim per requested step, in step order: claimed (with everything the
-- handler needs, from claimed_steps); busy (another worker's live lease, lease_expires_at
-- says until when); scheduled (its task's run_at is later: that time is in
-- lease_expires_at); finished (nothing to run); missing. Commits without
-- waiting for the flush: a claim lost in a crash is only a step claimed again.
CREATE OR REPLACE FUNCTION tasker.claim_steps(p_steps uuid[], p_worker text, p_lease_seconds integer)
 RETURNS SETOF tasker.step_claim
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_id      uuid;
  v_lost    uuid[];
  v_poisoned uuid[];
  v_claimed uuid[];
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  -- A step whose lease expired on its last attempt fails (its task finalized), so its task
  -- is locked before any step, as every locker of both does. Rare: read without locks.
  SELECT array_agg(DISTINCT k.task_uuid) INTO v_poisoned
    FROM (SELECT s.task_uuid, s.state, s.lease_expires_at, s.attempts, s.max_attempts
            FROM tasker.workflow_steps s WHERE s.step_uuid = ANY (p_steps) OFFSET 0) AS k
   WHERE k.state = 'in_progress' AND k.lease_expires_at <= clock_timestamp()
     AND k.attempts >= k.max_attempts;
  IF v_poisoned IS NOT NULL THEN
    PERFORM 1 FROM tasker.tasks t WHERE t.task_uuid = ANY (v_poisoned)
     ORDER BY t.task_uuid FOR NO KEY UPDATE;
  END IF;
  -- Sorted, so concurrent claimers and cancellations lock rows in one order.
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (p_steps) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  -- A step whose worker died (lease expired) is handed back first, then claimed afresh;
  -- on its last attempt it fails instead (worker_lost).
  FOR v_id IN SELECT k.step_uuid
                FROM (SELECT s.step_uuid, s.state, s.lease_expires_at, s.attempts, s.max_attempts
                        FROM tasker.workflow_steps s
                       WHERE s.step_uuid = ANY (p_steps) OFFSET 0) AS k
               WHERE k.state = 'in_progress' AND k.lease_expires_at <= clock_timestamp()
                 AND k.attempts < k.max_attempts
               ORDER BY k.step_uuid LOOP
    PERFORM tasker.transition_step(v_id, 'in_progress', 'enqueued', p_worker,
                                   jsonb_build_object('reason', 'lease_expired'));
  END LOOP;
  IF v_poisoned IS NOT NULL THEN
    SELECT array_agg(k.step_uuid) INTO v_lost
      FROM (SELECT s.step_uuid, s.task_uuid, s.state, s.lease_expires_at, s.attempts, s.max_attempts
              FROM tasker.workflow_steps s WHERE s.step_uuid = ANY (p_steps) OFFSET 0) AS k
     WHERE k.state = 'in_progress' AND k.lease_expires_at <= clock_timestamp()
       AND k.attempts >= k.max_attempts AND k.task_uuid = ANY (v_poisoned);
    PERFORM tasker.finalize_task(f.t, p_worker)
       FROM tasker.fail_lost_steps(v_lost, NULL, p_worker, 'lease_expired') AS f(t);
  END IF;
  -- The steps are reached by key alone (OFFSET 0 keeps their state out of the scan): the
  -- partial indexes on state hold an entry for every version of a step ever in that
  -- state until a vacuum, and a generic plan that scans one for the state visits them all.
  -- A scheduled task's steps wait for its run_at.
  WITH due AS (
    SELECT k.step_uuid
      FROM (SELECT s.step_uuid, s.state, s.task_uuid FROM tasker.workflow_steps s
             WHERE s.step_uuid = ANY (p_steps) OFFSET 0) AS k
     WHERE k.state = 'enqueued'
       AND NOT EXISTS (SELECT 1 FROM tasker.tasks t
                        WHERE t.task_uuid = k.task_uuid AND t.run_at > clock_timestamp())
  ), claimed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'in_progress', updated_at = now(), attempts = s.attempts + 1,
           claim_owner = p_worker,
           lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           started_at = clock_timestamp(),
           transitions = s.transitions || tasker.transition_entry('enqueued', 'in_progress', p_worker)
      FROM due d
     WHERE s.step_uuid = ANY (p_steps) AND s.step_uuid = d.step_uuid
    RETURNING s.step_uuid
  )
  SELECT array_agg(c.step_uuid) INTO v_claimed FROM claimed c;
  RETURN QUERY
    SELECT c.* FROM tasker.claimed_steps(coalesce(v_claimed, ARRAY[]::uuid[])) AS c
    UNION ALL
    SELECT u.id,
           CASE WHEN s.step_uuid IS NULL THEN 'missing'
                WHEN s.state = 'in_progress' THEN 'busy'
                WHEN s.state = 'enqueued' THEN 'scheduled'
                ELSE 'finished' END,
           CASE WHEN s.state = 'in_progress' THEN s.lease_expires_at
                WHEN s.state = 'enqueued'
                  THEN (SELECT t.run_at FROM tasker.tasks t WHERE t.task_uuid = s.task_uuid)
           END,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
      FROM (SELECT DISTINCT x AS id FROM unnest(p_steps) AS x) u
      LEFT JOIN tasker.workflow_steps s ON s.step_uuid = u.id AND s.step_uuid = ANY (p_steps)
     WHERE NOT (u.id = ANY (coalesce(v_claimed, ARRAY[]::uuid[])))
     ORDER BY 1;
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
 RETURNS TABLE(step_uuid uuid, task_uuid uuid, namespace text, outcome text, enqueued boolean, message jsonb, claim tasker.step_claim)
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
  v_ready_ns    text[];
  v_ready_msgs  jsonb[];
  v_claim       uuid[];
  v_claims      tasker.step_claim[];
  v_plain       boolean;
  v_events      boolean;
  q             record;
BEGIN
  PERFORM set_config('tasker.steps_enqueued', 'off', true);
  -- The step ids, whether every result is a success without an outcome, and whether any
  -- publishes durable domain events.
  SELECT array_agg(DISTINCT (x->>'step_uuid')::uuid),
         bool_and(jsonb_typeof(x->'success') = 'boolean' AND (x->>'success')::boolean
                  AND coalesce(jsonb_typeof(x->'outcome'), 'null') = 'null'),
         bool_or(jsonb_typeof(x->'events') = 'array')
    INTO v_ids, v_plain, v_events
    FROM jsonb_array_elements(p_results) AS x;
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                          WHERE s.step_uuid = ANY (v_ids))
   ORDER BY t.task_uuid FOR NO KEY UPDATE;
  -- The common case, every result a success without an outcome for a step that takes
  -- none, is recorded by one statement here: what store_step_results does for such a
  -- result (the step complete with its result, its audit and its transition, its claim
  -- cleared), without its general path's function calls and the queries it needs for
  -- failures and outcomes. Anything else goes through store_step_results, as before.
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
             lease_expires_at = NULL, recorded_by = p_worker,
             execution_time_ms = r.execution_ms, result_metadata = r.metadata,
             transitions = s.transitions
                           || tasker.transition_entry('in_progress', 'complete', p_worker,
                                                     jsonb_build_object('attempt', r.attempt,
                                                                        'execution_time_ms', r.execution_ms))
        FROM r
       WHERE s.step_uuid = ANY (v_ids) AND s.step_uuid = r.step_uuid
         AND s.state = 'in_progress' AND s.claim_owner = p_worker AND s.attempts = r.attempt
      RETURNING s.step_uuid, s.task_uuid
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
      SELECT c.step_uuid, k.n, ns.name AS ns, c.attempts,
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
             started_at = CASE WHEN l.claimed THEN clock_timestamp() ELSE c.started_at END,
             -- pending -> enqueued for each ready one, and enqueued -> in_progress after it
             -- for a claimed one (marked as claimed by this recording): allowed both.
             transitions = CASE WHEN l.claimed
                                  THEN c.transitions
                                       || tasker.transition_entry('pending', 'enqueued', p_worker,
                                                                 jsonb_build_object('attempt', l.attempts + 1))
                                       || tasker.transition_entry('enqueued', 'in_progress', p_worker,
                                                                 '{"claimed_by_recording": true}')
                                WHEN l.ready
                                  THEN c.transitions
                                       || tasker.transition_entry('pending', 'enqueued', p_worker,
                                                                 jsonb_build_object('attempt', l.attempts + 1))
                                ELSE c.transitions END
        FROM picked l
       WHERE c.step_uuid = ANY (v_children) AND c.step_uuid = l.step_uuid
      RETURNING c.step_uuid, c.task_uuid, c.name, l.attempts + 1 AS attempt, l.ns, l.ready,
                l.claimed
    )
    SELECT array_agg(m.step_uuid ORDER BY m.step_uuid),
           array_agg(m.task_uuid ORDER BY m.step_uuid),
           array_agg(m.ns ORDER BY m.step_uuid),
           array_agg(jsonb_build_object('task_uuid', m.task_uuid, 'step_uuid', m.step_uuid,
                                        'step_name', m.name, 'namespace', m.ns,
                                        'attempt', m.attempt) ORDER BY m.step_uuid),
           array_agg(m.step_uuid ORDER BY m.step_uuid) FILTER (WHERE m.claimed)
      INTO v_ready, v_ready_tasks, v_ready_ns, v_ready_msgs, v_claim
      FROM moved m WHERE m.ready;
    IF v_claim IS NOT NULL THEN
      SELECT array_agg(c) INTO v_claims FROM tasker.claimed_steps(v_claim) AS c;
    END IF;
    IF v_ready IS NOT NULL THEN
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
    -- one statement for all of them.
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
         SET state = 'complete', updated_at = now(), completed_at = clock_timestamp(),
             transitions = t.transitions
                           || tasker.transition_entry('steps_in_process', 'complete', p_worker,
                                                      '{"execution_status": "all_complete"}')
        FROM finished f
       WHERE t.task_uuid = f.task_uuid AND t.state = 'steps_in_process'
      RETURNING t.task_uuid
    )
    SELECT array_agg(m.task_uuid) INTO v_finished FROM moved m;
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
  IF v_events THEN
    PERFORM tasker.send_domain_events(
      p_results, coalesce(v_done, ARRAY[]::uuid[]) || coalesce(v_steps, ARRAY[]::uuid[]));
  END IF;
  v_enqueued := current_setting('tasker.steps_enqueued') = 'on';
  RETURN QUERY
    SELECT (a->>'step')::uuid, (a->>'task')::uuid, a->>'ns', a->>'outcome', v_enqueued,
           NULL::jsonb, NULL::tasker.step_claim
      FROM jsonb_array_elements(coalesce(v_applied, '[]'::jsonb)) AS a;
  IF v_done IS NOT NULL THEN
    RETURN QUERY
      SELECT d.s, d.t, n.ns, 'completed'::text, v_enqueued, NULL::jsonb, NULL::tasker.step_claim
        FROM unnest(v_done, v_done_tasks) AS d(s, t)
        JOIN (SELECT u.t, ns.name AS ns
                FROM (SELECT DISTINCT x AS t FROM unnest(v_done_tasks) AS x) AS u
                JOIN tasker.tasks tk ON tk.task_uuid = u.t
                JOIN tasker.named_tasks nt ON nt.named_task_uuid = tk.named_task_uuid
                JOIN tasker.namespaces ns ON ns.namespace_uuid = nt.namespace_uuid) AS n
          ON n.t = d.t;
  END IF;
  RETURN QUERY
    SELECT id, NULL::uuid, NULL::text, 'refused'::text, v_enqueued, NULL::jsonb, NULL::tasker.step_claim
      FROM unnest(v_ids) AS id
     WHERE NOT (id = ANY (coalesce(v_steps, ARRAY[]::uuid[]) || coalesce(v_done, ARRAY[]::uuid[])));
  RETURN QUERY
    SELECT u.step, u.task, u.ns, 'enqueued'::text, v_enqueued, u.msg,
           (SELECT c FROM unnest(v_claims) AS c WHERE c.step_uuid = u.step)
      FROM unnest(v_ready, v_ready_tasks, v_ready_ns, v_ready_msgs) AS u(step, task, ns, msg)
     WHERE u.ns = ANY (p_send_namespaces);
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
       timeout_seconds, publishes_events, inputs, parent_count, pending_parents, transitions)
    SELECT s.task_uuid,
           w.name || '_' || lpad((o.i - 1)::text, greatest(3, length((o.i - 1)::text)), '0'),
           w.position, 'batch_worker', w.name, w.handler_callable, w.handler_initialization,
           w.max_attempts, w.retryable, w.backoff, w.backoff_base_ms, w.max_backoff_ms,
           w.timeout_seconds, w.publishes_events, jsonb_build_object('batch', o.batch),
           -- The batchable step, being recorded now, is the one parent.
           1, 1,
           ARRAY[tasker.transition_entry(NULL, 'pending', p_actor, '{"created_by": "batch"}')]
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
  )
  SELECT count(*) INTO v_n FROM copies;
  RETURN v_n;
END;
$function$;

-- Creates one task with its steps, edges, parent counters and first transitions, and starts
-- it: roots enqueued (their messages inserted into the namespace queue unless p_hold_roots,
-- when the caller sends them), or, for a dynamic task, its blueprints stored and the
-- certain steps created. p_claim_worker with p_claim_roots: that many roots, first in
-- template order, are claimed for that worker (a worker in the creating process) in this
-- transaction instead of being queued. p_run_at in the future schedules the task: nothing
-- is claimed at creation, the roots are enqueued with their messages hidden until then,
-- and claim_steps refuses its steps until then. An idempotency key already taken returns
-- the existing task (created false).
CREATE OR REPLACE FUNCTION tasker.create_task(p_actor text, p_task tasker.task_spec, p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean DEFAULT false, p_claim_worker text DEFAULT NULL::text, p_claim_roots integer DEFAULT 0, p_lease_seconds integer DEFAULT 0, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS TABLE(task_uuid uuid, created boolean, state text, messages jsonb, claimed uuid[], lease_expires_at timestamp with time zone)
 LANGUAGE plpgsql
 ROWS 1
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_task    uuid;
  v_started boolean := p_blueprints IS NULL
                        AND EXISTS (SELECT 1 FROM unnest((p_task).steps) AS s
                                     WHERE coalesce(cardinality(s.dependencies), 0) = 0);
  v_ns      text;
  v_roots   uuid[];
  v_names   text[];
  v_claimed uuid[];
  v_lease   timestamptz := clock_timestamp() + make_interval(secs => p_lease_seconds);
  v_later   boolean := p_run_at > clock_timestamp();
BEGIN
  INSERT INTO tasker.tasks (named_task_uuid, context, idempotency_key, initiator, state, run_at,
                            transitions)
  VALUES ((p_task).named_task_uuid, (p_task).context, (p_task).idempotency_key,
          (p_task).initiator,
          CASE WHEN v_started THEN 'steps_in_process' ELSE 'pending' END, p_run_at,
          CASE WHEN v_started THEN tasker.task_start_transitions(p_actor)
               ELSE '{}'::tasker.transition[] END)
  ON CONFLICT (named_task_uuid, idempotency_key) DO NOTHING
  RETURNING tasks.task_uuid INTO v_task;
  IF v_task IS NULL THEN
    -- The key was taken (possibly by a concurrent identical request, which this insert
    -- waited for): hand back that task.
    RETURN QUERY
      SELECT t.task_uuid, false, t.state, NULL::jsonb, NULL::uuid[], NULL::timestamptz
        FROM tasker.tasks t
       WHERE t.named_task_uuid = (p_task).named_task_uuid
         AND t.idempotency_key = (p_task).idempotency_key;
    RETURN;
  END IF;
  IF p_blueprints IS NOT NULL THEN
    -- Only what is certain is created now; the rest waits for outcomes.
    PERFORM tasker.create_dynamic_steps(v_task, p_blueprints, p_max_steps, p_actor);
    RETURN QUERY SELECT v_task, true, tasker.start_task(v_task, p_actor), NULL::jsonb,
                        NULL::uuid[], NULL::timestamptz;
    RETURN;
  END IF;
  WITH spec AS (
    SELECT u.*, (u.n - 1)::integer AS position,
           coalesce(cardinality(u.dependencies), 0) AS parents
      FROM unnest((p_task).steps) WITH ORDINALITY
           AS u(name, callable, init, max_attempts, retryable, backoff, base_ms, max_ms,
                timeout, events, dependencies, n)
  ), made AS (
    INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
      handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
      max_backoff_ms, timeout_seconds, publishes_events, parent_count, pending_parents,
      state, enqueued_at, attempts, claim_owner, lease_expires_at, started_at, transitions)
    SELECT v_task, u.name, u.position, u.callable, u.init, u.max_attempts, u.retryable,
           u.backoff, u.base_ms, u.max_ms, u.timeout, u.events, u.parents, u.parents,
           CASE WHEN u.parents > 0 THEN 'pending'
                WHEN u.claimed THEN 'in_progress' ELSE 'enqueued' END,
           CASE WHEN u.parents = 0 THEN greatest(clock_timestamp(), p_run_at) END,
           CASE WHEN u.claimed THEN 1 ELSE 0 END,
           CASE WHEN u.claimed THEN p_claim_worker END,
           CASE WHEN u.claimed THEN v_lease END,
           CASE WHEN u.claimed THEN clock_timestamp() END,
           ARRAY[tasker.transition_entry(NULL, 'pending', p_actor)]
           || CASE WHEN u.parents = 0
                   THEN ARRAY[tasker.transition_entry('pending', 'enqueued', p_actor,
                                                      '{"attempt": 1}')]
                   ELSE '{}'::tasker.transition[] END
           || CASE WHEN u.claimed
                   THEN ARRAY[tasker.transition_entry('enqueued', 'in_progress', p_claim_worker)]
                   ELSE '{}'::tasker.transition[] END
      FROM (SELECT s.*, s.parents = 0 AND p_claim_worker IS NOT NULL AND v_later IS NOT TRUE
                        AND row_number() OVER (PARTITION BY s.parents = 0 ORDER BY s.position)
                            <= p_claim_roots AS claimed
              FROM spec s) AS u
    RETURNING workflow_steps.step_uuid, workflow_steps.name, workflow_steps.state
  ), linked AS (
    INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
    SELECT v_task, f.step_uuid, t.step_uuid
      FROM spec s
     CROSS JOIN LATERAL unnest(s.dependencies) AS d(parent)
      JOIN made f ON f.name = d.parent
      JOIN made t ON t.name = s.name
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
   WHERE nt.named_task_uuid = (p_task).named_task_uuid;
  -- Roots are only claimed for a caller that sends the other roots' messages (a claimed
  -- step has none).
  IF v_claimed IS NOT NULL AND NOT p_hold_roots THEN
    RAISE EXCEPTION 'task %: roots claimed at creation need p_hold_roots', v_task
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF NOT p_hold_roots THEN
    PERFORM tasker.send_step_messages(v_ns, tasker.root_messages(v_task, v_ns, v_roots, v_names),
                                      p_run_at);
  END IF;
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

-- Creates a batch of fixed-DAG tasks of one namespace in one statement per table (the
-- creation batcher's path): tasks, steps, edges, transitions and root messages. Requests are
-- numbered 1..n in p_tasks' order. One row per request: its task, whether it was created (an
-- idempotency key already taken returns the existing task) and its state.
CREATE OR REPLACE FUNCTION tasker.create_tasks(p_ns text, p_actor text, p_tasks tasker.task_spec[])
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
      FROM unnest(p_tasks) WITH ORDINALITY AS u(nt, ctx, k, ini, steps, i)
  ), made AS (
    INSERT INTO tasker.tasks AS t (task_uuid, named_task_uuid, context, idempotency_key,
                                   initiator, state, transitions)
    SELECT r.id, r.nt, r.ctx, r.k, r.ini, 'steps_in_process',
           tasker.task_start_transitions(p_actor)
      FROM req r ORDER BY r.i
    ON CONFLICT (named_task_uuid, idempotency_key) DO NOTHING
    RETURNING t.task_uuid
  )
  SELECT array_agg(r.i ORDER BY r.i), array_agg(r.id ORDER BY r.i) INTO v_idx, v_tasks
    FROM req r JOIN made m ON m.task_uuid = r.id;
  IF v_tasks IS NOT NULL THEN
    WITH spec AS (
      SELECT c.id, u.name, (u.n - 1)::integer AS position, u.callable, u.init,
             u.max_attempts, u.retryable, u.backoff, u.base_ms, u.max_ms, u.timeout,
             u.events, u.dependencies, coalesce(cardinality(u.dependencies), 0) AS parents
        FROM unnest(p_tasks) WITH ORDINALITY AS r(nt, ctx, k, ini, steps, i)
        JOIN unnest(v_idx, v_tasks) AS c(i, id) ON c.i = r.i
       CROSS JOIN LATERAL unnest(r.steps) WITH ORDINALITY
             AS u(name, callable, init, max_attempts, retryable, backoff, base_ms, max_ms,
                  timeout, events, dependencies, n)
    ), made AS (
      INSERT INTO tasker.workflow_steps AS s (task_uuid, name, position, handler_callable,
        handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
        max_backoff_ms, timeout_seconds, publishes_events, parent_count, pending_parents,
        state, enqueued_at, transitions)
      SELECT u.id, u.name, u.position, u.callable, u.init, u.max_attempts, u.retryable,
             u.backoff, u.base_ms, u.max_ms, u.timeout, u.events, u.parents, u.parents,
             CASE WHEN u.parents = 0 THEN 'enqueued' ELSE 'pending' END,
             CASE WHEN u.parents = 0 THEN clock_timestamp() END,
             ARRAY[tasker.transition_entry(NULL, 'pending', p_actor)]
             || CASE WHEN u.parents = 0
                     THEN ARRAY[tasker.transition_entry('pending', 'enqueued', p_actor,
                                                        '{"attempt": 1}')]
                     ELSE '{}'::tasker.transition[] END
        FROM spec u
      RETURNING s.step_uuid, s.task_uuid, s.name, s.state
    ), linked AS (
      INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
      SELECT u.id, f.step_uuid, t.step_uuid
        FROM spec u
       CROSS JOIN LATERAL unnest(u.dependencies) AS d(parent)
        JOIN made f ON f.task_uuid = u.id AND f.name = d.parent
        JOIN made t ON t.task_uuid = u.id AND t.name = u.name
    )
    SELECT array_agg(jsonb_build_object('task_uuid', m.task_uuid, 'step_uuid', m.step_uuid,
                                        'step_name', m.name, 'namespace', p_ns,
                                        'attempt', 1))
      INTO v_msgs
      FROM made m WHERE m.state = 'enqueued';
    IF v_msgs IS NOT NULL THEN
      PERFORM tasker.send_step_messages(p_ns, v_msgs);
    END IF;
  END IF;
  RETURN QUERY
    SELECT c.i, c.id, true, 'steps_in_process'::text
      FROM unnest(v_idx, v_tasks) AS c(i, id)
    UNION ALL
    -- The key was taken (by an earlier request of this batch, or a concurrent one whose
    -- insert this one waited for): that task.
    SELECT r.i::integer, t.task_uuid, false, t.state
      FROM unnest(p_tasks) WITH ORDINALITY AS r(nt, ctx, k, ini, steps, i)
      JOIN tasker.tasks t ON t.named_task_uuid = r.nt AND t.idempotency_key = r.k
     WHERE NOT (r.i::integer = ANY (coalesce(v_idx, ARRAY[]::integer[])));
END;
$function$;

-- Enqueues a task's ready steps (get_step_readiness_status): state enqueued, transition
-- appended, one message each in the namespace's queue. Returns how many.
CREATE OR REPLACE FUNCTION tasker.enqueue_steps_of(p_task uuid, p_actor text)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_ns    text;
  v_steps uuid[];
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
           next_retry_at = NULL,
           transitions = s.transitions
                         || tasker.transition_entry(ready.current_state, 'enqueued', p_actor,
                                                   jsonb_build_object('attempt', s.attempts + 1))
      FROM ready
     WHERE s.task_uuid = p_task AND s.step_uuid = ready.step_uuid
       AND s.state = ready.current_state
    RETURNING s.step_uuid, s.attempts, ready.name
  )
  SELECT array_agg(step_uuid),
         array_agg(jsonb_build_object('task_uuid', p_task, 'step_uuid', step_uuid,
                                      'step_name', name, 'namespace', v_ns,
                                      'attempt', attempts + 1))
    INTO v_steps, v_msgs
    FROM moved;
  IF v_steps IS NULL THEN
    RETURN 0;
  END IF;
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
  v_created tasker.transition[] := ARRAY[
    tasker.transition_entry(NULL, 'pending', p_actor, '{"created_by": "expand_steps"}')];
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
           publishes_events, parent_count, pending_parents, transitions)
        SELECT p_task, b.name, b.position, b.step_type, b.handler_callable,
               b.handler_initialization, b.max_attempts, b.retryable, b.backoff,
               b.backoff_base_ms, b.max_backoff_ms, b.timeout_seconds, b.publishes_events, 0, 0,
               v_created
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
           publishes_events, parent_count, pending_parents, transitions)
        VALUES (p_task, c.name, c.position, c.step_type, c.handler_callable,
                c.handler_initialization, c.max_attempts, c.retryable, c.backoff,
                c.backoff_base_ms, c.max_backoff_ms, c.timeout_seconds, c.publishes_events, 0, 0,
                v_created)
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

  RETURN cardinality(v_all);
END;
$function$;

-- Steps whose claim was lost (their worker died, or its lease ran out) on their last
-- attempt: error with a worker_lost failure that is not retryable, so a handler that kills
-- its worker (OOM, segfault, exit!) fails its step instead of killing worker after worker.
-- The lost attempt gets its audit row like any failed one. p_worker: the worker lost, when
-- the caller knows it (else the step's claim owner). The caller holds the tasks and then the
-- steps locked, and finalizes the tasks returned (they are blocked by the failure).
CREATE OR REPLACE FUNCTION tasker.fail_lost_steps(p_steps uuid[], p_worker text, p_actor text, p_reason text)
 RETURNS SETOF uuid
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_steps uuid[];
  v_tasks uuid[];
  v_n     integer;
BEGIN
  WITH failed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'error', updated_at = now(), claim_owner = NULL, lease_expires_at = NULL,
           next_retry_at = NULL,
           last_error = jsonb_build_object(
             'message', format('worker %s was lost (%s) while running attempt %s of %s: its process died or lost the database; the step is not run again',
                               coalesce(p_worker, s.claim_owner, 'unknown'), p_reason, s.attempts,
                               s.max_attempts),
             'error_type', 'worker_lost', 'retryable', false,
             'worker_id', coalesce(p_worker, s.claim_owner))
     WHERE s.step_uuid = ANY (p_steps) AND s.state = 'in_progress'
    RETURNING s.step_uuid, s.task_uuid, s.attempts, s.last_error
  ), audited AS (
    INSERT INTO tasker.step_result_audit_log
      (step_uuid, task_uuid, attempt, worker_id, success, error, execution_time_ms, metadata)
    SELECT f.step_uuid, f.task_uuid, f.attempts, coalesce(f.last_error->>'worker_id', 'unknown'), false,
           f.last_error, 0, jsonb_build_object('reason', p_reason)
      FROM failed f
    ON CONFLICT DO NOTHING
  )
  SELECT array_agg(f.step_uuid ORDER BY f.step_uuid), array_agg(f.task_uuid ORDER BY f.step_uuid)
    INTO v_steps, v_tasks
    FROM failed f;
  v_n := coalesce(cardinality(v_steps), 0);
  IF v_n = 0 THEN
    RETURN;
  END IF;
  PERFORM tasker.record_step_transitions(
    v_steps, array_fill('in_progress'::text, ARRAY[v_n]),
    array_fill('error'::text, ARRAY[v_n]), p_actor,
    array_fill(jsonb_build_object('reason', p_reason, 'worker_id', p_worker), ARRAY[v_n]));
  RETURN QUERY SELECT DISTINCT t FROM unnest(v_tasks) AS t;
END;
$function$;

-- A step whose claim fails on its own, every time (its parents' results too large to
-- gather into one value, say): error with a claim_failed failure that is not retryable,
-- and its task finalized (blocked by it), instead of its message failing every read of its
-- queue. Applies to an enqueued step, or an in_progress one whose lease expired (the claim
-- would have taken it over); returns its task, or NULL when the step is in neither state.
CREATE OR REPLACE FUNCTION tasker.fail_unclaimable_step(p_step uuid, p_actor text, p_message text)
 RETURNS uuid
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_task uuid;
  v_from text;
BEGIN
  SELECT s.task_uuid INTO v_task FROM tasker.workflow_steps s WHERE s.step_uuid = p_step;
  IF v_task IS NULL THEN
    RETURN NULL;
  END IF;
  -- Tasks before steps, as every locker of both.
  PERFORM 1 FROM tasker.tasks t WHERE t.task_uuid = v_task FOR NO KEY UPDATE;
  SELECT s.state INTO v_from FROM tasker.workflow_steps s
   WHERE s.step_uuid = p_step
     AND (s.state = 'enqueued'
          OR (s.state = 'in_progress' AND s.lease_expires_at <= clock_timestamp()))
     FOR NO KEY UPDATE;
  IF v_from IS NULL THEN
    RETURN NULL;
  END IF;
  UPDATE tasker.workflow_steps s
     SET state = 'error', updated_at = now(), claim_owner = NULL, lease_expires_at = NULL,
         next_retry_at = NULL,
         last_error = jsonb_build_object(
           'message', format('the step could not be claimed: %s', p_message),
           'error_type', 'claim_failed', 'retryable', false)
   WHERE s.step_uuid = p_step;
  PERFORM tasker.record_step_transitions(
    ARRAY[p_step], ARRAY[v_from], ARRAY['error'], p_actor,
    ARRAY[jsonb_build_object('reason', 'claim_failed')]);
  PERFORM tasker.finalize_task(v_task, p_actor);
  RETURN v_task;
END;
$function$;

-- Finds dead workers and releases what they held. A worker is dead when nobody holds its
-- advisory lock any more (its session ended) and it has not been seen for p_grace_ms (a
-- worker that only lost its connection for a moment takes its lock again within that), or
-- when it has not been seen for p_timeout_ms whatever its lock says (its session lingers but
-- the process cannot reach the database). A restart of the database server drops every
-- lock at once, so a worker last seen before the server started is judged by p_timeout_ms
-- counted from the start: live workers reconnect and keep their claims, only those that do
-- not come back are reaped. A dead worker's in-progress steps go back to enqueued (the
-- attempt counts: the handler may be what killed it), or to error (worker_lost) when that
-- was their last attempt, their tasks finalized; the released steps get new messages (their
-- claims deleted theirs), and hidden messages of enqueued steps in its queues become
-- visible at once (not those of scheduled tasks, still ahead of their run_at); its row is
-- deleted. Rows another reaper is handling are skipped. Returns one row per dead worker: how
-- many steps it held, the queues to wake, and the tasks its lost last attempts failed
-- (their waiters are woken by the caller).
CREATE OR REPLACE FUNCTION tasker.reap_dead_workers(p_grace_ms bigint, p_timeout_ms bigint, p_actor text)
 RETURNS TABLE(worker_id text, released integer, queues text[], failed_tasks uuid[])
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  w       record;
  v_n     integer;
  v_queues text[];
  v_ns    text;
  v_queue text;
  v_shown integer;
  v_failed uuid[];
BEGIN
  FOR w IN SELECT ww.worker_id, ww.lock_key, ww.last_seen_at, ww.namespaces FROM tasker.workers ww
            WHERE ww.last_seen_at < clock_timestamp() - make_interval(secs => p_grace_ms / 1000.0)
            ORDER BY ww.worker_id
            FOR UPDATE SKIP LOCKED LOOP
    -- The transaction-level lock is released at commit; a live worker holds its session
    -- lock, so taking it proves the worker's session is gone, unless the server restarted
    -- since the worker was last seen (then no lock survived, and it may be reconnecting).
    CONTINUE WHEN NOT ((w.last_seen_at >= pg_postmaster_start_time()
                        AND pg_try_advisory_xact_lock(w.lock_key))
                       OR greatest(w.last_seen_at, pg_postmaster_start_time())
                            < clock_timestamp() - make_interval(secs => p_timeout_ms / 1000.0));
    SELECT r.released, r.queues, r.failed_tasks INTO v_n, v_queues, v_failed
      FROM tasker.release_lost_claims(
             ARRAY(SELECT s.step_uuid FROM tasker.workflow_steps s
                    WHERE s.state = 'in_progress' AND s.claim_owner = w.worker_id),
             w.worker_id, p_actor, 'worker_lost') AS r;
    -- Messages of enqueued steps hidden now: any the dead worker had read but not claimed
    -- (a claim taken apart reads first). Visible again at once (a live worker that read
    -- one of those too finds the step claimed and drops it). The message names its step,
    -- and queue tables hold only unfinished messages, so these scans are short.
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
                              AND s.state = ''enqueued''
                              AND NOT EXISTS (SELECT 1 FROM tasker.tasks t
                                               WHERE t.task_uuid = s.task_uuid
                                                 AND t.run_at > clock_timestamp()))
               FOR UPDATE SKIP LOCKED)', 'q_' || v_queue);
      GET DIAGNOSTICS v_shown = ROW_COUNT;
      IF v_shown > 0 AND NOT (v_queue = ANY (v_queues)) THEN
        v_queues := v_queues || v_queue;
      END IF;
    END LOOP;
    DELETE FROM tasker.workers ww WHERE ww.worker_id = w.worker_id;
    worker_id := w.worker_id;
    released := v_n;
    queues := v_queues;
    failed_tasks := v_failed;
    RETURN NEXT;
  END LOOP;
END;
$function$;

-- Appends one transition to each step's list, for callers that moved the steps in a
-- statement of their own (the rarer paths: failures, releases, reaping). The hot paths
-- append in the UPDATE that moves the step instead, which writes no second row version.
CREATE OR REPLACE FUNCTION tasker.record_step_transitions(p_steps uuid[], p_from text[], p_to text[], p_actor text, p_metadata jsonb[])
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
  UPDATE tasker.workflow_steps s
     SET transitions = s.transitions || tasker.transition_entry(u.f, u.t, p_actor, u.meta)
    FROM unnest(p_steps, p_from, p_to, p_metadata) AS u(step, f, t, meta)
   WHERE s.step_uuid = ANY (p_steps) AND s.step_uuid = u.step;
END;
$function$;

-- Claims whose lease ran out although no worker was found dead: the worker lost track of
-- the step, or never learnt it had claimed it (the claim's answer was lost with its
-- connection). A claimed step has no queue message, so nothing else would run it again.
-- Up to p_limit of them, oldest lease first, are released by release_lost_claims (reason
-- lease_expired): enqueued again with a new message, or failed on their last attempt.
CREATE OR REPLACE FUNCTION tasker.release_expired_claims(p_actor text, p_limit integer)
 RETURNS TABLE(released integer, queues text[], failed_tasks uuid[])
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
AS $function$
BEGIN
  -- In-progress steps are the few entries of workflow_steps_claim_owner_idx; read unlocked.
  RETURN QUERY
    SELECT r.* FROM tasker.release_lost_claims(
      ARRAY(SELECT s.step_uuid FROM tasker.workflow_steps s
             WHERE s.state = 'in_progress' AND s.claim_owner IS NOT NULL
               AND s.lease_expires_at < clock_timestamp()
             ORDER BY s.lease_expires_at
             LIMIT p_limit),
      NULL, p_actor, 'lease_expired') AS r;
END;
$function$;

-- Takes lost claims away: of p_steps, those still in progress and still lost once locked
-- (held by p_worker, a dead worker; with p_worker NULL, whose lease has run out) go back to
-- enqueued with a new message each (their claims deleted theirs), or, on their last
-- attempt, fail (fail_lost_steps, reason p_reason) and their tasks are finalized. Tasks,
-- then steps, are locked in key order, as every other locker of both. The one path of
-- reap_dead_workers and release_expired_claims. Returns how many went back, the queues
-- written to and the tasks whose steps failed.
CREATE OR REPLACE FUNCTION tasker.release_lost_claims(p_steps uuid[], p_worker text, p_actor text, p_reason text)
 RETURNS TABLE(released integer, queues text[], failed_tasks uuid[])
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
AS $function$
DECLARE
  v_lost  uuid[];
  v_steps uuid[];
BEGIN
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                          WHERE s.step_uuid = ANY (p_steps) AND s.attempts >= s.max_attempts)
   ORDER BY t.task_uuid FOR NO KEY UPDATE;
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (p_steps) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  -- Read again under the locks: a recording, a renewal or another releaser may have won.
  SELECT array_agg(s.step_uuid ORDER BY s.step_uuid) FILTER (WHERE s.attempts >= s.max_attempts),
         array_agg(s.step_uuid ORDER BY s.step_uuid) FILTER (WHERE s.attempts < s.max_attempts)
    INTO v_lost, v_steps
    FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (p_steps) AND s.state = 'in_progress'
     AND CASE WHEN p_worker IS NULL THEN s.lease_expires_at < clock_timestamp()
              ELSE s.claim_owner = p_worker END;
  released := coalesce(cardinality(v_steps), 0);
  queues := ARRAY[]::text[];
  failed_tasks := ARRAY[]::uuid[];
  IF v_lost IS NOT NULL THEN
    failed_tasks := ARRAY(SELECT f.t FROM tasker.fail_lost_steps(v_lost, p_worker, p_actor,
                                                                p_reason) AS f(t)
                           ORDER BY f.t);
    PERFORM tasker.finalize_task(t, p_actor) FROM unnest(failed_tasks) AS t;
  END IF;
  IF v_steps IS NOT NULL THEN
    UPDATE tasker.workflow_steps s
       SET state = 'enqueued', updated_at = now(), enqueued_at = clock_timestamp(),
           transitions = s.transitions
                         || tasker.transition_entry('in_progress', 'enqueued', p_actor,
                                                   jsonb_build_object('reason', p_reason,
                                                                      'worker_id', s.claim_owner)),
           claim_owner = NULL, lease_expires_at = NULL
     WHERE s.step_uuid = ANY (v_steps);
    queues := tasker.send_enqueued_step_messages(v_steps);
  END IF;
  RETURN NEXT;
END;
$function$;

-- Graceful shutdown: a worker hands back steps it claimed but will not finish. The attempt
-- is not counted (no result was recorded), and each step gets a new queue message (its
-- claim deleted the old one) so another worker picks it up. Returns the queues written to.
CREATE OR REPLACE FUNCTION tasker.release_steps(p_steps uuid[], p_worker text)
 RETURNS text[]
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_id       uuid;
  v_released uuid[] := ARRAY[]::uuid[];
BEGIN
  FOR v_id IN SELECT DISTINCT x FROM unnest(p_steps) AS x ORDER BY x LOOP
    IF EXISTS (SELECT 1 FROM tasker.workflow_steps
                WHERE step_uuid = v_id AND state = 'in_progress' AND claim_owner = p_worker
                FOR NO KEY UPDATE) THEN
      PERFORM tasker.transition_step(v_id, 'in_progress', 'enqueued', p_worker,
                                     jsonb_build_object('reason', 'worker_shutdown'));
      UPDATE tasker.workflow_steps
         SET attempts = greatest(attempts - 1, 0), claim_owner = NULL, lease_expires_at = NULL,
             enqueued_at = clock_timestamp()
       WHERE step_uuid = v_id;
      v_released := v_released || v_id;
    END IF;
  END LOOP;
  RETURN tasker.send_enqueued_step_messages(v_released);
END;
$function$;

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
    -- By step: the log's key.
    INSERT INTO tasker_archive.step_result_audit_log
      SELECT a.* FROM tasker.step_result_audit_log a
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

-- Sends a worker message for each of these steps that is enqueued, in its namespace's
-- queue: for steps released from a claim, whose message the claim deleted (a claimed step
-- has none). Returns the queues written to, for the caller to wake.
CREATE OR REPLACE FUNCTION tasker.send_enqueued_step_messages(p_steps uuid[])
 RETURNS text[]
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
AS $function$
DECLARE
  q        record;
  v_queues text[] := ARRAY[]::text[];
BEGIN
  FOR q IN SELECT n.name AS ns,
                  array_agg(jsonb_build_object('task_uuid', s.task_uuid, 'step_uuid', s.step_uuid,
                                               'step_name', s.name, 'namespace', n.name,
                                               'attempt', s.attempts + 1)
                            ORDER BY s.step_uuid) AS msgs
             FROM tasker.workflow_steps s
             JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
             JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
             JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
            WHERE s.step_uuid = ANY (p_steps) AND s.state = 'enqueued'
            GROUP BY n.name
            ORDER BY n.name LOOP
    PERFORM tasker.send_step_messages(q.ns, q.msgs);
    v_queues := v_queues || ('worker_' || q.ns || '_queue');
  END LOOP;
  RETURN v_queues;
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
  v_ns    text;
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
    UPDATE tasker.tasks
       SET state = 'enqueuing_steps', updated_at = now(),
           transitions = transitions
                         || ARRAY[tasker.transition_entry(NULL, 'pending', p_actor),
                                  tasker.transition_entry('pending', 'initializing', p_actor),
                                  tasker.transition_entry('initializing', 'enqueuing_steps', p_actor)]
     WHERE task_uuid = p_task;
    RETURN tasker.finalize_task(p_task, p_actor);
  END IF;
  v_n := cardinality(v_steps);
  PERFORM tasker.record_step_transitions(
    v_steps, array_fill('pending'::text, ARRAY[v_n]),
    array_fill('enqueued'::text, ARRAY[v_n]), p_actor,
    array_fill('{"attempt": 1}'::jsonb, ARRAY[v_n]));
  UPDATE tasker.tasks
     SET state = 'steps_in_process', updated_at = now(),
         transitions = transitions || tasker.task_start_transitions(p_actor)
   WHERE task_uuid = p_task;
  v_ns := tasker.task_namespace(p_task);
  PERFORM tasker.send_step_messages(v_ns, tasker.root_messages(p_task, v_ns, v_steps, v_names));
  RETURN 'steps_in_process';
END;
$function$;

-- Stores a batch of results: checks each against the step's claim (state in_progress, this
-- worker, this attempt), stores it (step state, result or error, audit, transition, a
-- decision's or batch's outcome applied). p_send: send each recorded result to the
-- orchestration results queue (steps wait in enqueued_for_orchestration /
-- enqueued_as_error_for_orchestration). Without it the
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
  v_to        text[];
  v_decided   uuid[];
  v_dyn_tasks uuid[];
  t           uuid;
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
    SELECT c.*,
           CASE WHEN NOT (c.success AND c.bad IS NULL) THEN 'enqueued_as_error_for_orchestration'
                WHEN p_send OR c.step_type IN ('decision', 'batchable')
                  THEN 'enqueued_for_orchestration'
                ELSE 'complete' END AS to_state
      FROM (SELECT r.*, s.step_type,
                   CASE WHEN r.success AND (r.outcome IS NOT NULL
                                            OR s.step_type IN ('decision', 'batchable'))
                        THEN tasker.outcome_error(s.task_uuid, s.name, s.step_type, r.outcome)
                   END AS bad
              FROM r JOIN tasker.workflow_steps s ON s.step_uuid = r.step_uuid
             WHERE s.step_uuid = ANY (v_ids)) AS c
  ), applied AS (
    -- A result that completes its step is audited in the step's row; any other gets a row
    -- in the audit log below.
    UPDATE tasker.workflow_steps s
       SET state = r.to_state,
           completed_at = CASE WHEN r.to_state = 'complete' THEN clock_timestamp()
                               ELSE s.completed_at END,
           updated_at = now(),
           results = CASE WHEN r.success AND r.bad IS NULL THEN r.result ELSE s.results END,
           last_error = CASE WHEN r.success AND r.bad IS NULL THEN NULL
                             ELSE coalesce(r.bad, r.error) END,
           outcome = CASE WHEN r.success AND r.bad IS NULL
                           AND s.step_type IN ('decision', 'batchable')
                          THEN r.outcome ELSE s.outcome END,
           claim_owner = NULL, lease_expires_at = NULL,
           recorded_by = CASE WHEN r.to_state = 'complete' THEN p_worker END,
           execution_time_ms = CASE WHEN r.to_state = 'complete' THEN r.execution_ms END,
           result_metadata = CASE WHEN r.to_state = 'complete' THEN r.metadata END,
           transitions = s.transitions
                         || tasker.transition_entry('in_progress', r.to_state, p_worker,
                                                   jsonb_build_object('attempt', r.attempt,
                                                                      'execution_time_ms', r.execution_ms))
      FROM checked r
     WHERE s.step_uuid = ANY (v_ids) AND s.step_uuid = r.step_uuid AND s.state = 'in_progress'
       AND s.claim_owner = p_worker AND s.attempts = r.attempt
    RETURNING s.step_uuid, s.task_uuid, s.state, r.attempt, r.success AND r.bad IS NULL AS ok,
              r.result, coalesce(r.bad, r.error) AS error, r.execution_ms, r.metadata,
              r.success AND r.bad IS NULL AND s.step_type IN ('decision', 'batchable') AS decided
  ), audited AS (
    INSERT INTO tasker.step_result_audit_log
      (step_uuid, task_uuid, attempt, worker_id, success, result, error, execution_time_ms, metadata)
    SELECT a.step_uuid, a.task_uuid, a.attempt, p_worker, a.ok,
           CASE WHEN a.ok THEN a.result END, CASE WHEN NOT a.ok THEN a.error END,
           a.execution_ms, a.metadata
      FROM applied a
     WHERE a.state <> 'complete'
  ), sent AS (
    INSERT INTO pgmq.q_orchestration_step_results (vt, message)
    SELECT clock_timestamp(), jsonb_build_object(
             'task_uuid', a.task_uuid, 'step_uuid', a.step_uuid, 'attempt', a.attempt,
             'success', a.ok, 'worker_id', p_worker)
      FROM applied a
     WHERE p_send
  )
  SELECT array_agg(a.step_uuid), array_agg(a.task_uuid), array_agg(a.attempt),
         array_agg(a.state),
         array_agg(a.step_uuid) FILTER (WHERE a.decided),
         array_agg(DISTINCT a.task_uuid) FILTER (WHERE a.decided)
    INTO v_steps, v_tasks, v_attempts, v_to, v_decided, v_dyn_tasks
    FROM applied a;
  IF v_steps IS NULL THEN
    RETURN;
  END IF;
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
  RETURN QUERY SELECT * FROM unnest(v_steps, v_tasks, v_attempts, v_to);
END;
$function$;

-- The transitions of a task that starts with its steps enqueued: pending -> initializing ->
-- enqueuing_steps -> steps_in_process, as the first entries of its list.
CREATE OR REPLACE FUNCTION tasker.task_start_transitions(p_actor text)
 RETURNS tasker.transition[]
 LANGUAGE sql
AS $function$
  SELECT ARRAY[tasker.transition_entry(NULL, 'pending', p_actor),
               tasker.transition_entry('pending', 'initializing', p_actor),
               tasker.transition_entry('initializing', 'enqueuing_steps', p_actor),
               tasker.transition_entry('enqueuing_steps', 'steps_in_process', p_actor,
                                       '{"execution_status": "processing"}')]
$function$;

-- One entry of a task's or a step's transitions list (tasks.transitions,
-- workflow_steps.transitions), made now; empty metadata is kept as NULL. Callers append it in
-- the UPDATE that moves the row: `transitions = transitions || tasker.transition_entry(...)`.
CREATE OR REPLACE FUNCTION tasker.transition_entry(p_from text, p_to text, p_actor text, p_metadata jsonb DEFAULT NULL::jsonb)
 RETURNS tasker.transition
 LANGUAGE sql
AS $function$
  SELECT ROW(p_from, p_to, p_actor, nullif(p_metadata, '{}'::jsonb), clock_timestamp())::tasker.transition
$function$;

-- Moves a step from p_from to p_to only if it is still in p_from, appending the transition
-- to its list. Returns false when the state moved underneath; raises for a transition the
-- table forbids.
CREATE OR REPLACE FUNCTION tasker.transition_step(p_step uuid, p_from text, p_to text, p_actor text, p_metadata jsonb DEFAULT '{}'::jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tasker.step_state_transitions
                  WHERE from_state = p_from AND to_state = p_to) THEN
    RAISE EXCEPTION 'step %: transition % -> % is not allowed', p_step, p_from, p_to
      USING ERRCODE = 'check_violation';
  END IF;
  UPDATE tasker.workflow_steps
     SET state = p_to, updated_at = now(),
         transitions = transitions || tasker.transition_entry(p_from, p_to, p_actor, p_metadata)
   WHERE step_uuid = p_step AND state = p_from;
  RETURN FOUND;
END;
$function$;

-- Moves a task from p_from to p_to only if it is still in p_from, appending the transition
-- to its list. Returns false when the state moved underneath (another process won); raises
-- for a transition the table forbids.
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
                             THEN clock_timestamp() ELSE NULL END,
         transitions = transitions || tasker.transition_entry(p_from, p_to, p_actor, p_metadata)
   WHERE task_uuid = p_task AND state = p_from;
  RETURN FOUND;
END;
$function$;

-- Steps deleted (their task removed): their audit log rows go with them, as a foreign
-- key's cascade would (the table has none: see db/schema.sql).
CREATE OR REPLACE FUNCTION tasker.workflow_steps_deleted()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
  DELETE FROM tasker.step_result_audit_log a
   WHERE a.step_uuid IN (SELECT g.step_uuid FROM gone g);
  RETURN NULL;
END;
$function$;

CREATE OR REPLACE TRIGGER workflow_steps_deleted
  AFTER DELETE ON tasker.workflow_steps REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION tasker.workflow_steps_deleted();

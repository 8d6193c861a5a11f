-- A step's updates (claim, recording, readying) become HOT: no index on workflow_steps names
-- a column they change. The partial indexes on the state go: failures and retries are indexed
-- by columns only a failure sets (last_error, next_retry_at, with checks that keep them so),
-- claims are noted in tasker.step_claims (one row per claiming statement), waiting steps are
-- counted from the queues, recent recordings from tasker.step_recordings (one row per
-- recording). fillfactor 40 leaves each page room for the new versions.
-- Written by bin/sql-migration from db/ (docs/sql.md).

CREATE TABLE tasker.step_claims (
    claim_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker_id text NOT NULL,
    steps uuid[] NOT NULL,
    claimed_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    check_at timestamp with time zone NOT NULL
);
CREATE INDEX step_claims_check_idx ON tasker.step_claims USING btree (check_at);
CREATE INDEX step_claims_worker_idx ON tasker.step_claims USING btree (worker_id);

CREATE TABLE tasker.step_recordings (
    recorded_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    worker_id text NOT NULL,
    completed integer NOT NULL
);
CREATE INDEX step_recordings_recorded_idx ON tasker.step_recordings USING btree (recorded_at);

-- The steps held now, and the last hour's recordings, from the indexes about to go. No claim
-- may commit between this read and the drop, or it would have no row in step_claims (its
-- step never released should its worker die): the steps are locked from here. A claim
-- already running when this commits finishes with the functions as they were and notes
-- nothing, so workers are stopped while this migration runs (README, Upgrading).
LOCK TABLE tasker.workflow_steps IN ACCESS EXCLUSIVE MODE;
INSERT INTO tasker.step_claims (worker_id, steps, check_at)
SELECT s.claim_owner, array_agg(s.step_uuid), min(s.lease_expires_at)
  FROM tasker.workflow_steps s
 WHERE s.state = 'in_progress' AND s.claim_owner IS NOT NULL
 GROUP BY s.claim_owner;
INSERT INTO tasker.step_recordings (recorded_at, worker_id, completed)
SELECT s.completed_at, s.recorded_by, 1
  FROM tasker.workflow_steps s
 WHERE s.recorded_by IS NOT NULL AND s.completed_at > now() - interval '1 hour';

DROP INDEX tasker.workflow_steps_retry_idx, tasker.workflow_steps_failed_idx,
           tasker.workflow_steps_claim_owner_idx, tasker.workflow_steps_enqueued_idx,
           tasker.workflow_steps_recorded_idx;
ALTER TABLE tasker.workflow_steps SET (fillfactor = 40);

-- Steps made to hold what the new checks say: a retry time only while waiting for it, an
-- error on every failed or retrying step.
UPDATE tasker.workflow_steps SET next_retry_at = NULL
 WHERE next_retry_at IS NOT NULL AND state <> 'waiting_for_retry';
UPDATE tasker.workflow_steps SET last_error = '{"message": "the handler gave no error"}'
 WHERE last_error IS NULL AND state IN ('error', 'waiting_for_retry');
ALTER TABLE tasker.workflow_steps ADD CONSTRAINT workflow_steps_retry_only_waiting
  CHECK ((next_retry_at IS NULL) OR (state = 'waiting_for_retry'::text));
CREATE INDEX workflow_steps_retry_idx ON tasker.workflow_steps USING btree (next_retry_at)
  WHERE (next_retry_at IS NOT NULL);
ALTER TABLE tasker.workflow_steps ADD CONSTRAINT workflow_steps_failure_has_error
  CHECK ((last_error IS NOT NULL) OR (state <> ALL (ARRAY['error'::text, 'waiting_for_retry'::text])));
CREATE INDEX workflow_steps_failed_idx ON tasker.workflow_steps USING btree (handler_callable)
  WHERE (last_error IS NOT NULL);

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

SET LOCAL check_function_bodies = off;

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
 SET enable_bitmapscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_id       uuid;
  v_expired  boolean;
  v_lost     uuid[];
  v_poisoned uuid[];
  v_claimed  uuid[];
  v_tasks    uuid[];
  v_scheduled uuid[];
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  -- One unlocked read gives the steps' tasks and tells whether any lease ran out under its
  -- worker (rare: the sweep release_expired_claims usually takes such a step back first).
  -- Only then are the tasks of those on their last attempt locked (before any step, as
  -- every locker of both does), the steps locked in order, and the expired ones handed
  -- back or failed.
  SELECT array_agg(DISTINCT k.task_uuid),
         coalesce(bool_or(k.state = 'in_progress' AND k.lease_expires_at <= clock_timestamp()), false),
         array_agg(DISTINCT k.task_uuid)
           FILTER (WHERE k.state = 'in_progress' AND k.lease_expires_at <= clock_timestamp()
                     AND k.attempts >= k.max_attempts)
    INTO v_tasks, v_expired, v_poisoned
    FROM (SELECT s.task_uuid, s.state, s.lease_expires_at, s.attempts, s.max_attempts
            FROM tasker.workflow_steps s WHERE s.step_uuid = ANY (p_steps) OFFSET 0) AS k;
  -- A scheduled task's steps wait for its run_at: each task read once, not once per step.
  SELECT array_agg(t.task_uuid) INTO v_scheduled
    FROM tasker.tasks t WHERE t.task_uuid = ANY (v_tasks) AND t.run_at > clock_timestamp();
  IF v_expired THEN
    IF v_poisoned IS NOT NULL THEN
      PERFORM 1 FROM tasker.tasks t WHERE t.task_uuid = ANY (v_poisoned)
       ORDER BY t.task_uuid FOR NO KEY UPDATE;
    END IF;
    PERFORM 1 FROM tasker.workflow_steps s
     WHERE s.step_uuid = ANY (p_steps) ORDER BY s.step_uuid FOR NO KEY UPDATE;
    -- A step whose worker died is handed back first, then claimed afresh below; on its
    -- last attempt it fails instead (worker_lost).
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
  END IF;
  -- The claim itself is one UPDATE, which takes each row's lock as it moves it: the rows
  -- are reached through the primary key's index (no bitmap scan, which would visit them
  -- in table order), in key order, so concurrent claimers lock in one order without a
  -- separate locking read. The state is compared as a text of its own (state || '') so
  -- that no generic plan reaches the rows through a partial index on state (such an index
  -- holds an entry for every version of a step ever in that state until a vacuum).
  WITH claimed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'in_progress', updated_at = now(), attempts = s.attempts + 1,
           claim_owner = p_worker,
           lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           started_at = clock_timestamp(),
           transitions = s.transitions || tasker.transition_entry('enqueued', 'in_progress', p_worker)
     WHERE s.step_uuid = ANY (p_steps) AND s.state || '' = 'enqueued'
       AND NOT (s.task_uuid = ANY (coalesce(v_scheduled, ARRAY[]::uuid[])))
    RETURNING s.step_uuid
  )
  SELECT array_agg(c.step_uuid) INTO v_claimed FROM claimed c;
  PERFORM tasker.note_claims(p_worker, v_claimed,
                             clock_timestamp() + make_interval(secs => p_lease_seconds));
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
 SET enable_bitmapscan TO 'off'
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
  v_lock_tasks  uuid[];
  v_takes_outcome boolean;
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
  -- One read of the steps gives the tasks to lock (first, in task order, as every locker
  -- of tasks and steps does) and whether any step takes an outcome (decision, batchable).
  -- Neither changes once a step exists, so the read needs no lock.
  SELECT array_agg(DISTINCT k.task_uuid),
         coalesce(bool_or(k.step_type IN ('decision', 'batchable')), false)
    INTO v_lock_tasks, v_takes_outcome
    FROM (SELECT s.task_uuid, s.step_type FROM tasker.workflow_steps s
           WHERE s.step_uuid = ANY (v_ids) OFFSET 0) AS k;
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid = ANY (v_lock_tasks)
   ORDER BY t.task_uuid FOR NO KEY UPDATE;
  -- The common case, every result a success without an outcome for a step that takes
  -- none, is recorded by one statement here: what store_step_results does for such a
  -- result (the step complete with its result, its audit and its transition, its claim
  -- cleared), without its general path's function calls and the queries it needs for
  -- failures and outcomes. Anything else goes through store_step_results, as before.
  -- Its UPDATE takes the steps' locks itself, in key order: the steps come through the
  -- primary key's index (no bitmap scan, which would go in table order) and the results
  -- sorted by step, so it locks as the releasers (release_lost_claims, a claim that finds
  -- a lease run out) do, which lock steps in key order without their tasks' locks.
  v_plain := v_plain AND NOT v_takes_outcome;
  IF v_plain THEN
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
      -- refused below. State and owner are compared as texts of their own, so that the
      -- rows are reached by key, whatever index a later change adds.
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
         AND s.state || '' = 'in_progress' AND s.claim_owner || '' = p_worker
         AND s.attempts = r.attempt
      RETURNING s.step_uuid, s.task_uuid
    ), counted AS (
      INSERT INTO tasker.step_recordings (worker_id, completed)
      SELECT p_worker, count(*) FROM applied HAVING count(*) > 0
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
      PERFORM tasker.note_claims(p_worker, v_claim,
                                 clock_timestamp() + make_interval(secs => p_lease_seconds));
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
    -- The tasks are reached by key alone (OFFSET 0 keeps their state out of the scan, and
    -- the UPDATE compares it as a text of its own): tasks_active_idx holds an entry for
    -- every version of a task that was ever steps_in_process until a vacuum, so a scan of
    -- it for the state visits them all. A generic plan made while the table was small
    -- joined the UPDATE through it, once per finished task.
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
       WHERE t.task_uuid = f.task_uuid AND t.state || '' = 'steps_in_process'
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
      -- Each task's namespace is read once (materialized), not once per step.
      WITH ns AS MATERIALIZED (
        SELECT tk.task_uuid AS t, n.name AS ns
          FROM tasker.tasks tk
          JOIN tasker.named_tasks nt ON nt.named_task_uuid = tk.named_task_uuid
          JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
         WHERE tk.task_uuid = ANY (v_done_tasks)
      )
      SELECT d.s, d.t, ns.ns, 'completed'::text, v_enqueued, NULL::jsonb, NULL::tasker.step_claim
        FROM unnest(v_done, v_done_tasks) AS d(s, t)
        JOIN ns ON ns.t = d.t;
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
  v_edges   boolean := EXISTS (SELECT 1 FROM unnest((p_task).steps) AS s
                                WHERE cardinality(s.dependencies) > 0);
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
    -- Only for a template with dependencies, starting from them (as create_tasks does).
    INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
    SELECT v_task, f.step_uuid, t.step_uuid
      FROM (SELECT s.name, p.parent
              FROM spec s CROSS JOIN LATERAL unnest(s.dependencies) AS p(parent)
             WHERE v_edges OFFSET 0) AS d
      JOIN made f ON f.name = d.parent
      JOIN made t ON t.name = d.name
  )
  SELECT array_agg(m.step_uuid), array_agg(m.name),
         array_agg(m.step_uuid) FILTER (WHERE m.state = 'in_progress')
    INTO v_roots, v_names, v_claimed
    FROM made m WHERE m.state IN ('enqueued', 'in_progress');
  PERFORM tasker.note_claims(p_claim_worker, v_claimed, v_lease);
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

-- Notes in tasker.step_claims that p_worker claimed p_steps with leases until p_lease_until
-- (nothing for no steps). The row is looked at a few seconds from now, when most of its
-- steps are recorded, or when their leases run out if that is sooner.
CREATE OR REPLACE FUNCTION tasker.note_claims(p_worker text, p_steps uuid[], p_lease_until timestamp with time zone)
 RETURNS void
 LANGUAGE sql
AS $function$
  INSERT INTO tasker.step_claims (worker_id, steps, check_at)
  SELECT p_worker, p_steps, least(p_lease_until, clock_timestamp() + interval '5 seconds')
   WHERE cardinality(p_steps) > 0;
$function$;

-- Finds dead workers and releases what they held. A worker is dead when nobody holds its
-- advisory lock any more (its session ended) and it has not been seen for p_grace_ms (a
-- worker that only lost its connection for a moment takes its lock again within that), or
-- when it has not been seen for p_timeout_ms whatever its lock says (its session lingers but
-- the process cannot reach the database). A restart of the database server drops every
-- lock at once, so a worker last seen before the server started is judged by p_timeout_ms
-- counted from the start: live workers reconnect and keep their claims, only those that do
-- not come back are reaped. A dead worker's in-progress steps (found through its rows in
-- tasker.step_claims) go back to enqueued (the attempt counts: the handler may be what
-- killed it), or to error (worker_lost) when that
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
  v_claimed uuid[];
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
    -- Its claims' rows first (a sweep that holds one is waited for; it locks steps after
    -- rows, so taking the rows after the steps could deadlock with it; with several dead
    -- workers, steps released for an earlier one still can, and Postgres then ends one of
    -- the two, which runs again next time).
    WITH gone AS (
      DELETE FROM tasker.step_claims c WHERE c.worker_id = w.worker_id RETURNING c.steps
    )
    SELECT coalesce(array_agg(DISTINCT u.step), ARRAY[]::uuid[]) INTO v_claimed
      FROM gone g CROSS JOIN LATERAL unnest(g.steps) AS u(step);
    SELECT r.released, r.queues, r.failed_tasks INTO v_n, v_queues, v_failed
      FROM tasker.release_lost_claims(
             v_claimed, w.worker_id, p_actor, 'worker_lost') AS r;
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

-- Claims whose lease ran out although no worker was found dead: the worker lost track of
-- the step, or never learnt it had claimed it (the claim's answer was lost with its
-- connection). A claimed step has no queue message, so nothing else would run it again.
-- They are found through tasker.step_claims, not the steps: the rows whose check_at has
-- passed (locked, so concurrent sweeps share them). Of their steps still held by the row's
-- worker with a lease run out, up to p_limit, oldest lease first, are released by
-- release_lost_claims (reason lease_expired): enqueued again with a new message, or failed
-- on their last attempt. A row with a step still held after that is looked at again at the
-- earliest lease of those; the other rows are done and deleted. A step no longer held by a
-- row's worker (recorded, released) can only be held again through a claim, which writes
-- its own row.
CREATE OR REPLACE FUNCTION tasker.release_expired_claims(p_actor text, p_limit integer)
 RETURNS TABLE(released integer, queues text[], failed_tasks uuid[])
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_rows     bigint[];
  v_ref_rows bigint[];
  v_ref_by   text[];
  v_refs     uuid[];
  v_held     bigint[];
  v_expired  uuid[];
BEGIN
  released := 0;
  queues := ARRAY[]::text[];
  failed_tasks := ARRAY[]::uuid[];
  SELECT array_agg(c.claim_id) INTO v_rows
    FROM (SELECT k.claim_id FROM tasker.step_claims k
           WHERE k.check_at <= clock_timestamp()
             FOR UPDATE SKIP LOCKED) AS c;
  IF v_rows IS NULL THEN
    RETURN NEXT;
    RETURN;
  END IF;
  SELECT array_agg(c.claim_id), array_agg(c.worker_id), array_agg(u.step)
    INTO v_ref_rows, v_ref_by, v_refs
    FROM tasker.step_claims c CROSS JOIN LATERAL unnest(c.steps) AS u(step)
   WHERE c.claim_id = ANY (v_rows);
  -- The refs still held, read unlocked: the rows that have one, and the held steps whose
  -- lease ran out (release_lost_claims locks them and looks again).
  WITH held AS (
    SELECT u.claim_id, u.step, s.lease_expires_at AS lease
      FROM unnest(v_ref_rows, v_ref_by, v_refs) AS u(claim_id, worker_id, step)
      JOIN tasker.workflow_steps s ON s.step_uuid = u.step
     WHERE s.step_uuid = ANY (v_refs) AND s.state = 'in_progress'
       AND s.claim_owner = u.worker_id
  )
  SELECT (SELECT array_agg(DISTINCT h.claim_id) FROM held h),
         ARRAY(SELECT h.step FROM held h WHERE h.lease < clock_timestamp()
                GROUP BY h.step ORDER BY min(h.lease) LIMIT p_limit)
    INTO v_held, v_expired;
  DELETE FROM tasker.step_claims c
   WHERE c.claim_id = ANY (v_rows)
     AND NOT (c.claim_id = ANY (coalesce(v_held, ARRAY[]::bigint[])));
  IF v_held IS NULL THEN
    RETURN NEXT;
    RETURN;
  END IF;
  IF cardinality(v_expired) > 0 THEN
    SELECT r.released, r.queues, r.failed_tasks INTO released, queues, failed_tasks
      FROM tasker.release_lost_claims(v_expired, NULL, p_actor, 'lease_expired') AS r;
  END IF;
  -- The rows that had a held step, looked at again after the release.
  WITH still AS (
    SELECT u.claim_id, min(s.lease_expires_at) AS next
      FROM unnest(v_ref_rows, v_ref_by, v_refs) AS u(claim_id, worker_id, step)
      JOIN tasker.workflow_steps s ON s.step_uuid = u.step
     WHERE s.step_uuid = ANY (v_refs) AND u.claim_id = ANY (v_held)
       AND s.state = 'in_progress' AND s.claim_owner = u.worker_id
     GROUP BY 1
  ), due_again AS (
    UPDATE tasker.step_claims c SET check_at = st.next
      FROM still st
     WHERE c.claim_id = ANY (v_held) AND c.claim_id = st.claim_id
    RETURNING c.claim_id
  )
  DELETE FROM tasker.step_claims c
   WHERE c.claim_id = ANY (v_held) AND c.claim_id NOT IN (SELECT d.claim_id FROM due_again d);
  RETURN NEXT;
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
           CASE WHEN jsonb_typeof(x->'error') = 'object' THEN x->'error'
                ELSE '{"message": "the handler gave no error"}'::jsonb END AS error,
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
  ), counted AS (
    INSERT INTO tasker.step_recordings (worker_id, completed)
    SELECT p_worker, count(*) FROM applied a WHERE a.state = 'complete' HAVING count(*) > 0
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

-- Moves a step from p_from to p_to only if it is still in p_from, appending the transition
-- to its list (a retry's time goes when the step stops waiting for it). Returns false when
-- the state moved underneath; raises for a transition the table forbids.
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
         next_retry_at = CASE WHEN p_to = 'waiting_for_retry' THEN next_retry_at END,
         transitions = transitions || tasker.transition_entry(p_from, p_to, p_actor, p_metadata)
   WHERE step_uuid = p_step AND state = p_from;
  RETURN FOUND;
END;
$function$;

-- Steps waiting for a worker, as the gauges show them: enqueued steps with a message in a
-- worker queue (a scheduled task's hidden until its run_at), and how long the one visible
-- longest has been visible (a scheduled step waits from its run_at, not its creation). Read
-- from the queues, whose size follows the steps waiting, rather than the steps table, which
-- has no index on the state (its updates are HOT); each message's step is looked at by key,
-- so a stale copy of a claimed step's message does not count. The queues are walked through
-- their index on vt: a plain index scan marks the entries of deleted messages dead, so a
-- queue's history is read once, not at every refresh.
CREATE OR REPLACE FUNCTION tasker.waiting_steps(OUT waiting bigint, OUT oldest_seconds double precision)
 RETURNS record
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
AS $function$
DECLARE
  v_queue text;
  v_n     bigint;
  v_age   double precision;
BEGIN
  waiting := 0;
  oldest_seconds := 0;
  FOR v_queue IN SELECT m.queue_name FROM pgmq.meta m
                  WHERE m.queue_name LIKE 'worker\_%\_queue' ORDER BY 1 LOOP
    EXECUTE format(
      'SELECT count(DISTINCT s.step_uuid),
              extract(epoch FROM now() - min(greatest(k.enqueued_at, k.vt))
                                           FILTER (WHERE k.vt <= now()))::float8
         FROM (SELECT q.enqueued_at, q.vt,
                      CASE WHEN q.message->>''step_uuid''
                                ~* ''^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$''
                           THEN (q.message->>''step_uuid'')::uuid END AS step
                 FROM pgmq.%I q WHERE q.vt > ''-infinity''::timestamptz) AS k
         JOIN tasker.workflow_steps s ON s.step_uuid = k.step
        WHERE s.state = ''enqueued''', 'q_' || v_queue)
       INTO v_n, v_age;
    waiting := waiting + v_n;
    oldest_seconds := greatest(oldest_seconds, coalesce(v_age, 0));
  END LOOP;
END;
$function$;

-- tasker.complete_steps reports each completed step's task's state once recorded, so the
-- worker wakes the waiters of the tasks that finished rather than sending a notification
-- statement for every task a recording touched.
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;
DROP FUNCTION IF EXISTS tasker.complete_steps(p_worker text, p_results jsonb, p_jitter_ratio double precision, p_max_retry_after_ms bigint, p_send_namespaces text[], p_claim_max integer, p_lease_seconds integer);

-- A worker's batch of results, recorded and applied in one transaction: each result is
-- checked against its claim (state in_progress, this worker, this attempt; a stale one is
-- refused), the step moves to complete, waiting_for_retry (backoff) or error, children it
-- readied are enqueued (and up to p_claim_max of those in p_send_namespaces claimed for
-- this worker in the same UPDATE), and tasks it finished are finalized. A batch of plain
-- successes (no outcome, steps that take none) is recorded by one statement here; any
-- other goes through store_step_results. One row per result: its outcome, whether
-- messages were sent, the claim of a child taken for the caller, and, for a success, its
-- task's state once recorded (so the caller wakes the waiters of the tasks that finished,
-- not of every task a result touched; NULL where the caller cannot rely on it).
CREATE OR REPLACE FUNCTION tasker.complete_steps(p_worker text, p_results jsonb, p_jitter_ratio double precision, p_max_retry_after_ms bigint, p_send_namespaces text[] DEFAULT NULL::text[], p_claim_max integer DEFAULT 0, p_lease_seconds integer DEFAULT 0)
 RETURNS TABLE(step_uuid uuid, task_uuid uuid, namespace text, outcome text, enqueued boolean, message jsonb, claim tasker.step_claim, task_state text)
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
           NULL::jsonb, NULL::tasker.step_claim, NULL::text
      FROM jsonb_array_elements(coalesce(v_applied, '[]'::jsonb)) AS a;
  IF v_done IS NOT NULL THEN
    RETURN QUERY
      -- Each task's namespace and state are read once (materialized), not once per step.
      WITH ns AS MATERIALIZED (
        SELECT tk.task_uuid AS t, n.name AS ns, tk.state AS st
          FROM tasker.tasks tk
          JOIN tasker.named_tasks nt ON nt.named_task_uuid = tk.named_task_uuid
          JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
         WHERE tk.task_uuid = ANY (v_done_tasks)
      )
      SELECT d.s, d.t, ns.ns, 'completed'::text, v_enqueued, NULL::jsonb, NULL::tasker.step_claim,
             ns.st
        FROM unnest(v_done, v_done_tasks) AS d(s, t)
        JOIN ns ON ns.t = d.t;
  END IF;
  RETURN QUERY
    SELECT id, NULL::uuid, NULL::text, 'refused'::text, v_enqueued, NULL::jsonb, NULL::tasker.step_claim,
           NULL::text
      FROM unnest(v_ids) AS id
     WHERE NOT (id = ANY (coalesce(v_steps, ARRAY[]::uuid[]) || coalesce(v_done, ARRAY[]::uuid[])));
  RETURN QUERY
    SELECT u.step, u.task, u.ns, 'enqueued'::text, v_enqueued, u.msg,
           (SELECT c FROM unnest(v_claims) AS c WHERE c.step_uuid = u.step), NULL::text
      FROM unnest(v_ready, v_ready_tasks, v_ready_ns, v_ready_msgs) AS u(step, task, ns, msg)
     WHERE u.ns = ANY (p_send_namespaces);
END;
$function$;

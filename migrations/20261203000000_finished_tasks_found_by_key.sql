-- Finished tasks found by key in the recording.
--
-- tasker.complete_steps completes the tasks its recording finished with one statement for
-- all of them; its generic plan found them by scanning tasks_active_idx for the state
-- steps_in_process and filtering by id. That index keeps an entry for every version of a
-- task that was ever steps_in_process until a vacuum clears them, so each recording
-- visited every task completed since the last vacuum: 0.39 ms of each recording under the
-- embedded run's load (300 tasks, pg_stat_statements), growing with the work done between
-- vacuums, where reaching the tasks by key takes about 0.05 ms. Only that statement
-- changes.

CREATE OR REPLACE FUNCTION tasker.complete_steps(
  p_worker text, p_results jsonb, p_jitter_ratio float8, p_max_retry_after_ms bigint,
  p_send_namespaces text[] DEFAULT NULL, p_claim_max integer DEFAULT 0,
  p_lease_seconds integer DEFAULT 0
) RETURNS TABLE (step_uuid uuid, task_uuid uuid, namespace text, outcome text, enqueued boolean,
                 message jsonb, claim jsonb)
LANGUAGE plpgsql AS $$
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
  v_commit_mode text;
  q             record;
BEGIN
  PERFORM set_config('tasker.steps_enqueued', 'off', true);
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
    -- enqueued by the same UPDATE. Children are locked in step order, as parents_done
    -- locks them. They are reached through their key array, as everywhere on this path:
    -- joined to the counts alone, the generic plan may merge-join the step table's whole
    -- primary key.
    WITH locked AS (
      SELECT c.step_uuid, k.n, ns.name AS ns,
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
    ), moved AS (
      UPDATE tasker.workflow_steps c
         SET pending_parents = c.pending_parents - l.n,
             state = CASE WHEN l.ready THEN 'enqueued' ELSE c.state END,
             enqueued_at = CASE WHEN l.ready THEN clock_timestamp() ELSE c.enqueued_at END,
             next_retry_at = CASE WHEN l.ready THEN NULL ELSE c.next_retry_at END,
             updated_at = CASE WHEN l.ready THEN now() ELSE c.updated_at END
        FROM locked l
       WHERE c.step_uuid = ANY (v_children) AND c.step_uuid = l.step_uuid
      RETURNING c.step_uuid, c.task_uuid, c.name, c.attempts, l.ns, l.ready
    )
    SELECT array_agg(m.step_uuid ORDER BY m.step_uuid),
           array_agg(m.task_uuid ORDER BY m.step_uuid),
           array_agg(jsonb_build_object('attempt', m.attempts + 1) ORDER BY m.step_uuid),
           array_agg(m.ns ORDER BY m.step_uuid),
           array_agg(jsonb_build_object('task_uuid', m.task_uuid, 'step_uuid', m.step_uuid,
                                        'step_name', m.name, 'namespace', m.ns,
                                        'attempt', m.attempts + 1) ORDER BY m.step_uuid)
      INTO v_ready, v_ready_tasks, v_ready_meta, v_ready_ns, v_ready_msgs
      FROM moved m WHERE m.ready;
    IF v_ready IS NOT NULL THEN
      PERFORM tasker.record_step_transitions(
        v_ready, v_ready_tasks, array_fill('pending'::text, ARRAY[cardinality(v_ready)]),
        array_fill('enqueued'::text, ARRAY[cardinality(v_ready)]), p_worker, v_ready_meta);
      FOR q IN SELECT u.ns, array_agg(u.msg) AS msgs
                 FROM unnest(v_ready_ns, v_ready_msgs) AS u(ns, msg)
                WHERE NOT (u.ns = ANY (coalesce(p_send_namespaces, ARRAY[]::text[])))
                GROUP BY 1 LOOP
        PERFORM tasker.send_step_messages(q.ns, q.msgs);
      END LOOP;
      IF p_claim_max > 0 THEN
        SELECT array_agg(u.step ORDER BY u.step) INTO v_claim
          FROM (SELECT x.step FROM unnest(v_ready, v_ready_ns) AS x(step, ns)
                 WHERE x.ns = ANY (p_send_namespaces)
                 ORDER BY x.step LIMIT p_claim_max) AS u;
      END IF;
      IF v_claim IS NOT NULL THEN
        v_commit_mode := current_setting('synchronous_commit');
        SELECT jsonb_object_agg(c.step_uuid, to_jsonb(c)) INTO v_claims
          FROM tasker.claim_steps(v_claim, p_worker, p_lease_seconds) AS c
         WHERE c.outcome = 'claimed';
        PERFORM set_config('synchronous_commit', v_commit_mode, true);
      END IF;
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
    -- Tasks the failures above touched are finalized already.
    SELECT array_agg(DISTINCT u.t ORDER BY u.t) INTO v_touched
      FROM unnest(v_done_tasks) AS u(t)
     WHERE NOT (u.t = ANY (coalesce(v_tasks, ARRAY[]::uuid[])));
    -- Those whose every step is now complete (or resolved manually) complete together:
    -- what finalize_task would do for each (its execution context says all_complete), in
    -- three statements for all of them.
    -- The tasks are reached by key alone (OFFSET 0 keeps their state out of the scan):
    -- tasks_active_idx holds an entry for every version of a task that was ever
    -- steps_in_process until a vacuum, so a scan of it for the state visits them all.
    WITH finished AS (
      SELECT k.task_uuid
        FROM (SELECT t.task_uuid, t.state FROM tasker.tasks t
               WHERE t.task_uuid = ANY (v_touched) OFFSET 0) AS k
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
$$;

-- CREATE OR REPLACE resets the settings the function had.
ALTER FUNCTION tasker.complete_steps(text, jsonb, float8, bigint, text[], integer, integer)
  SET enable_seqscan = off;
ALTER FUNCTION tasker.complete_steps(text, jsonb, float8, bigint, text[], integer, integer)
  SET plan_cache_mode = force_generic_plan;

-- A finished no-op task wrote its row twice and six transition rows (four at its start, the
-- completion's, the previous one's most_recent flag cleared). A task's transitions move into
-- its row (tasks.transitions, appended by the statement that moves it; the view
-- task_transitions reads them as rows, most_recent the last), as a step's did in
-- 20261210001300.
-- Written by bin/sql-migration from db/ (docs/sql.md).

-- A task's transitions, from its rows into its row, in order; then the table goes.
ALTER TABLE tasker.tasks ADD COLUMN transitions jsonb DEFAULT '[]'::jsonb NOT NULL;
ALTER TABLE tasker_archive.tasks ADD COLUMN transitions jsonb;

UPDATE tasker.tasks t SET transitions = x.list
  FROM (SELECT task_uuid,
               jsonb_agg(jsonb_build_object('from_state', from_state, 'to_state', to_state,
                                            'actor', actor, 'metadata', metadata,
                                            'created_at', created_at) ORDER BY sort_key) AS list
          FROM tasker.task_transitions GROUP BY task_uuid) AS x
 WHERE t.task_uuid = x.task_uuid;
UPDATE tasker_archive.tasks t SET transitions = x.list
  FROM (SELECT task_uuid,
               jsonb_agg(jsonb_build_object('from_state', from_state, 'to_state', to_state,
                                            'actor', actor, 'metadata', metadata,
                                            'created_at', created_at) ORDER BY sort_key) AS list
          FROM tasker_archive.task_transitions GROUP BY task_uuid) AS x
 WHERE t.task_uuid = x.task_uuid;
UPDATE tasker_archive.tasks SET transitions = '[]'::jsonb WHERE transitions IS NULL;
ALTER TABLE tasker_archive.tasks ALTER COLUMN transitions SET NOT NULL;

DROP TABLE tasker.task_transitions;
DROP TABLE tasker_archive.task_transitions;

CREATE VIEW tasker.task_transitions AS
 SELECT tk.task_uuid,
    (j.e ->> 'from_state'::text) AS from_state,
    (j.e ->> 'to_state'::text) AS to_state,
    ((j.n - 1))::integer AS sort_key,
    (j.n = jsonb_array_length(tk.transitions)) AS most_recent,
    (j.e ->> 'actor'::text) AS actor,
    COALESCE((j.e -> 'metadata'::text), '{}'::jsonb) AS metadata,
    ((j.e ->> 'created_at'::text))::timestamp with time zone AS created_at
   FROM (tasker.tasks tk
     CROSS JOIN LATERAL jsonb_array_elements(tk.transitions) WITH ORDINALITY j(e, n));

SET LOCAL check_function_bodies = off;
DROP FUNCTION IF EXISTS tasker.record_task_transition(p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb);
DROP FUNCTION IF EXISTS tasker.task_started(p_task uuid, p_ns text, p_steps uuid[], p_names text[], p_actor text, p_send boolean, p_visible_at timestamp with time zone);

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
          CASE WHEN v_started THEN tasker.task_start_transitions(p_actor) ELSE '[]'::jsonb END)
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
           jsonb_build_array(tasker.transition_entry(NULL, 'pending', p_actor))
           || CASE WHEN u.parents = 0
                   THEN jsonb_build_array(tasker.transition_entry('pending', 'enqueued', p_actor,
                                                                 '{"attempt": 1}'))
                   ELSE '[]'::jsonb END
           || CASE WHEN u.claimed
                   THEN jsonb_build_array(tasker.transition_entry('enqueued', 'in_progress',
                                                                 p_claim_worker))
                   ELSE '[]'::jsonb END
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
             jsonb_build_array(tasker.transition_entry(NULL, 'pending', p_actor))
             || CASE WHEN u.parents = 0
                     THEN jsonb_build_array(tasker.transition_entry('pending', 'enqueued', p_actor,
                                                                   '{"attempt": 1}'))
                     ELSE '[]'::jsonb END
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
                         || jsonb_build_array(
                              tasker.transition_entry(NULL, 'pending', p_actor),
                              tasker.transition_entry('pending', 'initializing', p_actor),
                              tasker.transition_entry('initializing', 'enqueuing_steps', p_actor))
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

-- The transitions of a task that starts with its steps enqueued: pending -> initializing ->
-- enqueuing_steps -> steps_in_process, as the first entries of its list.
CREATE OR REPLACE FUNCTION tasker.task_start_transitions(p_actor text)
 RETURNS jsonb
 LANGUAGE sql
AS $function$
  SELECT jsonb_build_array(
           tasker.transition_entry(NULL, 'pending', p_actor),
           tasker.transition_entry('pending', 'initializing', p_actor),
           tasker.transition_entry('initializing', 'enqueuing_steps', p_actor),
           tasker.transition_entry('enqueuing_steps', 'steps_in_process', p_actor,
                                   '{"execution_status": "processing"}'))
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

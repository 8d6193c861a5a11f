-- Scheduled tasks (run_at): a task created with run_at in the future gets its roots' messages
-- hidden until then and no claim at creation, and claim_steps answers 'scheduled' for its
-- steps until then. The task rows show run_at.
-- Written by bin/sql-migration from db/ (docs/sql.md).

ALTER TABLE tasker.tasks ADD COLUMN run_at timestamp with time zone;

CREATE OR REPLACE VIEW tasker.task_rows AS
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

SET LOCAL check_function_bodies = off;
DROP FUNCTION IF EXISTS tasker.create_task(p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text, p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[], p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[], p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[], p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean, p_claim_worker text, p_claims boolean[], p_lease_seconds integer);
DROP FUNCTION IF EXISTS tasker.create_task_read(p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text, p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[], p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[], p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[], p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean, p_claim_worker text, p_claims boolean[], p_lease_seconds integer);
DROP FUNCTION IF EXISTS tasker.send_step_messages(p_ns text, p_msgs jsonb[]);
DROP FUNCTION IF EXISTS tasker.task_started(p_task uuid, p_ns text, p_steps uuid[], p_names text[], p_actor text, p_send boolean);

-- Claims steps for a worker: each enqueued step (or in_progress one whose lease expired: its
-- worker died) moves to in_progress with this worker as owner, a new attempt and a lease.
-- One row per requested step with its outcome and, when claimed, everything the handler
-- needs (task context, parents' results). Outcomes: claimed; busy (another worker's live
-- lease, lease_expires_at says until when); scheduled (its task's run_at is later: that
-- time is in lease_expires_at); finished (nothing to run); missing. Commits without
-- waiting for the flush: a claim lost in a crash is only a step claimed again.
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
                WHEN s.state = 'enqueued' THEN 'scheduled'
                ELSE 'finished' END,
           CASE WHEN s.state = 'in_progress' THEN s.lease_expires_at
                WHEN s.state = 'enqueued' AND c.step_uuid IS NULL
                  THEN (SELECT t.run_at FROM tasker.tasks t WHERE t.task_uuid = s.task_uuid)
           END,
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

-- Creates one task with its steps, edges, parent counters and first transitions, and starts
-- it: roots enqueued (their messages inserted into the namespace queue unless p_hold_roots,
-- when the caller sends them), or, for a dynamic task, its blueprints stored and the
-- certain steps created. p_claim_worker with p_claims: the roots marked there are claimed
-- for that worker (a worker in the creating process) in this transaction instead of being
-- queued. p_run_at in the future schedules the task: nothing is claimed at creation, the
-- roots are enqueued with their messages hidden until then, and claim_steps refuses its
-- steps until then. An idempotency key already taken returns the existing task (created
-- false).
CREATE OR REPLACE FUNCTION tasker.create_task(p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text, p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[], p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[], p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[], p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean DEFAULT false, p_claim_worker text DEFAULT NULL::text, p_claims boolean[] DEFAULT NULL::boolean[], p_lease_seconds integer DEFAULT 0, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
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
  v_later   boolean := p_run_at > clock_timestamp();
BEGIN
  INSERT INTO tasker.tasks (named_task_uuid, context, idempotency_key, initiator, state, run_at)
  VALUES (p_named_task, p_context, p_idempotency_key, p_initiator,
          CASE WHEN v_started THEN 'steps_in_process' ELSE 'pending' END, p_run_at)
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
           CASE WHEN u.parents = 0 THEN greatest(clock_timestamp(), p_run_at) END,
           CASE WHEN u.claimed THEN 1 ELSE 0 END,
           CASE WHEN u.claimed THEN p_claim_worker END,
           CASE WHEN u.claimed THEN v_lease END,
           CASE WHEN u.claimed THEN clock_timestamp() END
      FROM (SELECT x.*, x.parents = 0 AND coalesce(x.claim, false)
                        AND p_claim_worker IS NOT NULL AND v_later IS NOT TRUE AS claimed
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
  PERFORM tasker.task_started(v_task, v_ns, v_roots, v_names, p_actor, NOT p_hold_roots,
                              p_run_at);
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
CREATE OR REPLACE FUNCTION tasker.create_task_read(p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text, p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[], p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[], p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[], p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean DEFAULT false, p_claim_worker text DEFAULT NULL::text, p_claims boolean[] DEFAULT NULL::boolean[], p_lease_seconds integer DEFAULT 0, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
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
           p_lease_seconds, p_run_at) AS c;
  RETURN QUERY SELECT v_task, v_created, v_state,
    (SELECT to_json(r) FROM tasker.task_rows r WHERE r.task_uuid = v_task),
    (SELECT coalesce(json_agg(to_json(s) ORDER BY s.position, s.name), '[]'::json)
       FROM tasker.step_rows s WHERE s.task_uuid = v_task),
    v_messages, v_claimed, v_lease;
END;
$function$;

-- Writes a batch of worker messages into a namespace's queue table in one dynamic statement
-- (the row pgmq.send_batch writes: visible now, no headers), and marks the transaction as
-- having enqueued work so the caller knows to wake that namespace's workers. p_visible_at:
-- the messages stay hidden until then (a scheduled task's roots).
CREATE OR REPLACE FUNCTION tasker.send_step_messages(p_ns text, p_msgs jsonb[], p_visible_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
  EXECUTE format('INSERT INTO pgmq.%I (vt, message) SELECT greatest(clock_timestamp(), $2), m FROM unnest($1) AS m',
                 'q_worker_' || p_ns || '_queue')
    USING p_msgs, p_visible_at;
  PERFORM set_config('tasker.steps_enqueued', 'on', true);
END;
$function$;

-- The transitions of a task that starts with its roots enqueued (pending -> initializing ->
-- enqueuing_steps -> steps_in_process); with p_send, the roots' messages too (false: the
-- caller sends them), hidden until p_visible_at when it is given (a scheduled task).
CREATE OR REPLACE FUNCTION tasker.task_started(p_task uuid, p_ns text, p_steps uuid[], p_names text[], p_actor text, p_send boolean DEFAULT true, p_visible_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS void
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  IF p_send THEN
    PERFORM tasker.send_step_messages(p_ns,
                                      tasker.root_messages(p_task, p_ns, p_steps, p_names),
                                      p_visible_at);
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

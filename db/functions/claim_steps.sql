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

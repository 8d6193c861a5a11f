-- Claims whose lease ran out although no worker was found dead: the worker lost track of
-- the step, or never learnt it had claimed it (the claim's answer was lost with its
-- connection). A claimed step has no queue message, so nothing else would run it again.
-- Each goes back to enqueued with a new message, or, on its last attempt, fails
-- (worker_lost, lease_expired) and its task is finalized. At most p_limit, oldest lease
-- first; steps another transaction holds are skipped. Returns how many were released, the
-- queues written to and the tasks whose steps failed.
CREATE OR REPLACE FUNCTION tasker.release_expired_claims(p_actor text, p_limit integer)
 RETURNS TABLE(released integer, queues text[], failed_tasks uuid[])
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
AS $function$
DECLARE
  v_expired uuid[];
  v_lost    uuid[];
  v_steps   uuid[];
BEGIN
  -- In-progress steps are the few entries of workflow_steps_claim_owner_idx; read unlocked.
  SELECT array_agg(k.step_uuid) INTO v_expired
    FROM (SELECT s.step_uuid FROM tasker.workflow_steps s
           WHERE s.state = 'in_progress' AND s.claim_owner IS NOT NULL
             AND s.lease_expires_at < clock_timestamp()
           ORDER BY s.lease_expires_at
           LIMIT p_limit) AS k;
  released := 0;
  queues := ARRAY[]::text[];
  failed_tasks := ARRAY[]::uuid[];
  IF v_expired IS NULL THEN
    RETURN NEXT;
    RETURN;
  END IF;
  -- Tasks, then steps, each in key order, as every other locker of both.
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                          WHERE s.step_uuid = ANY (v_expired) AND s.attempts >= s.max_attempts)
   ORDER BY t.task_uuid FOR NO KEY UPDATE;
  SELECT array_agg(s.step_uuid ORDER BY s.step_uuid) INTO v_expired
    FROM (SELECT w.step_uuid FROM tasker.workflow_steps w
           WHERE w.step_uuid = ANY (v_expired)
           ORDER BY w.step_uuid
           FOR NO KEY UPDATE SKIP LOCKED) AS s;
  -- Still expired now that they are locked: a late renewal or recording may have won.
  SELECT array_agg(s.step_uuid) FILTER (WHERE s.attempts >= s.max_attempts),
         array_agg(s.step_uuid) FILTER (WHERE s.attempts < s.max_attempts)
    INTO v_lost, v_steps
    FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (coalesce(v_expired, ARRAY[]::uuid[]))
     AND s.state = 'in_progress' AND s.lease_expires_at < clock_timestamp();
  IF v_lost IS NOT NULL THEN
    failed_tasks := ARRAY(SELECT f.t FROM tasker.fail_lost_steps(v_lost, NULL, p_actor,
                                                                'lease_expired') AS f(t)
                           ORDER BY f.t);
    PERFORM tasker.finalize_task(t, p_actor) FROM unnest(failed_tasks) AS t;
  END IF;
  IF v_steps IS NOT NULL THEN
    UPDATE tasker.workflow_steps s
       SET state = 'enqueued', updated_at = now(), enqueued_at = clock_timestamp(),
           transitions = s.transitions
                         || tasker.transition_entry('in_progress', 'enqueued', p_actor,
                                                   jsonb_build_object('reason', 'lease_expired',
                                                                      'worker_id', s.claim_owner)),
           claim_owner = NULL, lease_expires_at = NULL
     WHERE s.step_uuid = ANY (v_steps);
    released := cardinality(v_steps);
    queues := tasker.send_enqueued_step_messages(v_steps);
  END IF;
  RETURN NEXT;
END;
$function$;

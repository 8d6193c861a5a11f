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

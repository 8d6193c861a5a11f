-- The heartbeat's renewal. Rows another transaction is changing right now are skipped, not
-- waited for: most often that is this worker recording the step's result, and waiting would
-- both report a step as lost that was just recorded and, since the renewal locked rows in no
-- particular order, deadlock with the sorted lockers (recording, claims, result processing).
-- A skipped renewal is made at the next beat. Returns the steps this worker no longer holds
-- and did not record a result for, judged by a second statement: its snapshot sees a
-- recording that committed while the first was locking (whose row it then found complete).
CREATE OR REPLACE FUNCTION tasker.renew_leases(p_steps uuid[], p_worker text, p_lease_seconds integer)
 RETURNS SETOF uuid
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_not_renewed uuid[];
BEGIN
  WITH free AS (
    SELECT s.step_uuid, s.state, s.claim_owner
      FROM tasker.workflow_steps s
     WHERE s.step_uuid = ANY (p_steps)
     FOR NO KEY UPDATE SKIP LOCKED
  ), renewed AS (
    UPDATE tasker.workflow_steps s
       SET lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds)
      FROM free
     WHERE s.step_uuid = ANY (p_steps) AND s.step_uuid = free.step_uuid
       AND free.state = 'in_progress' AND free.claim_owner = p_worker
    RETURNING s.step_uuid
  )
  SELECT array_agg(f.step_uuid) INTO v_not_renewed
    FROM free f
   WHERE f.step_uuid NOT IN (SELECT r.step_uuid FROM renewed r);
  IF v_not_renewed IS NULL THEN
    RETURN;
  END IF;
  -- Recorded by this worker for its current attempt: as a success in the step's own row
  -- (recorded_by), or in the audit log. Not through the view step_result_audits: its
  -- generic plan here read every step this worker ever recorded (workflow_steps_recorded_idx)
  -- and every audit row of the worker, a cost that grew with the history kept.
  RETURN QUERY
    SELECT s.step_uuid FROM tasker.workflow_steps s
     WHERE s.step_uuid = ANY (v_not_renewed)
       AND s.recorded_by IS DISTINCT FROM p_worker
       AND NOT EXISTS (SELECT 1 FROM tasker.step_result_audit_log l
                        WHERE l.step_uuid = s.step_uuid AND l.attempt = s.attempts
                          AND l.worker_id = p_worker);
END;
$function$;

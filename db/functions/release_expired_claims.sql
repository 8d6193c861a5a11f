-- Claims whose lease ran out although no worker was found dead: the worker lost track of
-- the step, or never learnt it had claimed it (the claim's answer was lost with its
-- connection). A claimed step has no queue message, so nothing else would run it again.
-- Up to p_limit of them, oldest lease first, are released by release_lost_claims (reason
-- lease_expired): enqueued again with a new message, or failed on their last attempt.
CREATE OR REPLACE FUNCTION tasker.release_expired_claims(p_actor text, p_limit integer)
 RETURNS TABLE(released integer, queues text[], failed_tasks uuid[])
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
AS $function$
BEGIN
  -- Read unlocked through workflow_steps_claim_owner_idx: its live entries are the steps
  -- claimed now, and the entries claims left since the last look (callers look every
  -- quarter lease, ExpiredClaimSweep) are visited once. Once, because a plain index scan
  -- marks an entry whose row version is dead to every transaction, and later scans skip
  -- it; a bitmap scan marks nothing, and every sweep read every step claimed since the
  -- table's last vacuum again (84 ms a sweep late in a 200,000-step run).
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

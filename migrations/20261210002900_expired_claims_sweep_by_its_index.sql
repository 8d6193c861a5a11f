-- The expired-claims sweep compared check_at with clock_timestamp(), which no index condition
-- takes: each sweep read the whole of tasker.step_claims, every claim row not yet vacuumed
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;

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
  -- statement_timestamp(), not clock_timestamp(): an index condition takes no volatile
  -- value, and with clock_timestamp() each sweep read the whole table (every claim row not
  -- yet vacuumed) instead of step_claims_check_idx's due range.
  SELECT array_agg(c.claim_id) INTO v_rows
    FROM (SELECT k.claim_id FROM tasker.step_claims k
           WHERE k.check_at <= statement_timestamp()
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

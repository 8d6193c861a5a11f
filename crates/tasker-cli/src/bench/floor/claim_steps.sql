-- The claim as the engine makes it: the messages deleted, each step they name (one, or a
-- task's under "steps") moved to in_progress with its owner, lease and transition, the
-- claim noted (one row for all of them); committed without waiting for the flush.
BEGIN;
SET LOCAL synchronous_commit = off;
WITH d AS (
  DELETE FROM pgmq.q_floor WHERE msg_id = ANY (':msgs'::bigint[]) RETURNING message
), claimed AS (
  UPDATE tasker.workflow_steps s
     SET state = 'in_progress', attempts = s.attempts + 1, claim_owner = 'floor',
         lease_expires_at = now() + interval '5 minutes', started_at = now(), updated_at = now(),
         transitions = s.transitions || tasker.transition_entry('enqueued', 'in_progress', 'floor')
    FROM d CROSS JOIN LATERAL
         jsonb_array_elements(coalesce(d.message->'steps', jsonb_build_array(d.message))) AS e
   WHERE s.step_uuid = (e->>'step_uuid')::uuid
  RETURNING s.step_uuid
)
INSERT INTO tasker.step_claims (worker_id, steps, check_at)
SELECT 'floor', array_agg(c.step_uuid), now() + interval '5 seconds' FROM claimed c;
COMMIT;

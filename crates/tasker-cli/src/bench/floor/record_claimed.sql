-- The recording: each claimed step complete with its result, audit and transition, its
-- claim cleared. The state is compared as a text of its own, as in the engine: a plain
-- `state = 'in_progress'` lets the plan AND in a scan of every entry of the partial index on
-- claimed steps (workflow_steps_claim_owner_idx), which cost this floor a third of its speed.
BEGIN;
UPDATE tasker.workflow_steps s
   SET state = 'complete', results = '{"ok": true}', completed_at = now(), updated_at = now(),
       claim_owner = NULL, lease_expires_at = NULL, recorded_by = 'floor', execution_time_ms = 0,
       result_metadata = '{}',
       transitions = s.transitions
                     || tasker.transition_entry('in_progress', 'complete', 'floor', '{"attempt": 1}')
 WHERE s.task_uuid = ANY (':tasks'::uuid[]) AND s.state || '' = 'in_progress';

-- The recording: each claimed step complete with its result, audit and transition, its
-- claim cleared, and counted (one row). The state is compared as a text of its own, as in
-- the engine, so that no plan reaches the rows through an index on it.
BEGIN;
WITH recorded AS (
  UPDATE tasker.workflow_steps s
     SET state = 'complete', results = '{"ok": true}', completed_at = now(), updated_at = now(),
         claim_owner = NULL, lease_expires_at = NULL, recorded_by = 'floor', execution_time_ms = 0,
         result_metadata = '{}',
         transitions = s.transitions
                       || tasker.transition_entry('in_progress', 'complete', 'floor', '{"attempt": 1}')
   WHERE s.task_uuid = ANY (':tasks'::uuid[]) AND s.state || '' = 'in_progress'
  RETURNING 1
)
INSERT INTO tasker.step_recordings (worker_id, completed) SELECT 'floor', count(*) FROM recorded;

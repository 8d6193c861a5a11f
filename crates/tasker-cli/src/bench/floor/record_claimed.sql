-- The recording: each claimed step complete with its result, audit and transitions, its
-- claim cleared; the tasks complete.
BEGIN;
WITH u AS (
  UPDATE tasker.workflow_steps s
     SET state = 'complete', results = '{"ok": true}', completed_at = now(), updated_at = now(),
         claim_owner = NULL, lease_expires_at = NULL, recorded_by = 'floor', execution_time_ms = 0,
         result_metadata = '{}',
         transitions = s.transitions
                       || tasker.transition_entry('in_progress', 'complete', 'floor', '{"attempt": 1}')
   WHERE s.task_uuid = ANY (':tasks'::uuid[]) AND s.state = 'in_progress'
  RETURNING s.task_uuid
)
UPDATE tasker.tasks t
   SET state = 'complete', completed_at = now(), updated_at = now(),
       transitions = t.transitions || tasker.transition_entry('steps_in_process', 'complete', 'floor')
 WHERE t.task_uuid IN (SELECT task_uuid FROM u);
COMMIT;

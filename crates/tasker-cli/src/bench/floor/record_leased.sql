-- The recording when the claim was only a lease: the messages deleted, each step moved from
-- enqueued to complete with both transitions (the state compared as in record_claimed.sql),
-- and counted.
BEGIN;
DELETE FROM pgmq.q_floor WHERE msg_id = ANY (':msgs'::bigint[]);
WITH recorded AS (
  UPDATE tasker.workflow_steps s
     SET state = 'complete', attempts = s.attempts + 1, results = '{"ok": true}',
         started_at = now(), completed_at = now(), updated_at = now(), recorded_by = 'floor',
         execution_time_ms = 0, result_metadata = '{}',
         transitions = s.transitions
                       || tasker.transition_entry('enqueued', 'in_progress', 'floor')
                       || tasker.transition_entry('in_progress', 'complete', 'floor', '{"attempt": 1}')
   WHERE s.task_uuid = ANY (':tasks'::uuid[]) AND s.state || '' = 'enqueued'
  RETURNING 1
)
INSERT INTO tasker.step_recordings (worker_id, completed) SELECT 'floor', count(*) FROM recorded;

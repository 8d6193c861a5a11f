-- Indexes the dashboard's queries need to stay fast on large tables.

-- Task list filtered by state, newest first (task_uuid is a v7 UUID, so it orders by
-- creation time), and the capped per-state counts: both walk this index and stop early.
CREATE INDEX tasks_state_uuid_idx ON tasker.tasks (state, task_uuid DESC);

-- Task list filtered by template or namespace (a namespace is a handful of templates).
CREATE INDEX tasks_named_task_uuid_idx ON tasker.tasks (named_task_uuid, task_uuid DESC);

-- Throughput and failures over the last minutes read only the newest audit rows.
CREATE INDEX step_result_audits_recorded_idx ON tasker.step_result_audits (recorded_at);

-- Failures grouped by handler read only the failed steps, however many have completed.
CREATE INDEX workflow_steps_failed_idx ON tasker.workflow_steps (handler_callable)
  WHERE state IN ('error', 'waiting_for_retry');

-- The steps each worker holds.
CREATE INDEX workflow_steps_claim_owner_idx ON tasker.workflow_steps (claim_owner)
  WHERE state = 'in_progress';

-- The steps waiting for a worker (the state gauges count them and age the oldest).
CREATE INDEX workflow_steps_enqueued_idx ON tasker.workflow_steps (enqueued_at)
  WHERE state = 'enqueued';

-- Ten fanout tasks of ten no-op roots, created enqueued (what tasker.create_tasks writes for
-- them); their messages follow in the same transaction.
BEGIN;
WITH t AS (
  INSERT INTO tasker.tasks (named_task_uuid, state, transitions)
  SELECT ':nt'::uuid, 'steps_in_process', tasker.task_start_transitions('floor')
    FROM generate_series(1, 10)
  RETURNING task_uuid
), s AS (
  INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable, max_attempts,
    retryable, backoff, backoff_base_ms, max_backoff_ms, parent_count, pending_parents, state,
    enqueued_at, transitions)
  SELECT t.task_uuid, 'noop_' || i, i, 'Examples::Noop', 3, true, 'exponential', 1000, 30000,
         0, 0, 'enqueued', clock_timestamp(),
         ARRAY[tasker.transition_entry(NULL, 'pending', 'floor'),
               tasker.transition_entry('pending', 'enqueued', 'floor', '{"attempt": 1}')]
    FROM t CROSS JOIN generate_series(0, 9) AS i
  RETURNING step_uuid, task_uuid, name
)
SELECT (SELECT array_agg(task_uuid) FROM t)::text AS tasks,
       jsonb_agg(jsonb_build_object('task_uuid', task_uuid, 'step_uuid', step_uuid,
                                    'step_name', name)) AS steps
  FROM s \gset

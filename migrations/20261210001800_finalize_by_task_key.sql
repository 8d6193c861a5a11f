-- finalize_task's looks at a task's retrying and failed steps compared state to constants
-- matching the partial indexes workflow_steps_retry_idx and workflow_steps_failed_idx;
-- planned without fresh statistics they ANDed in a scan of the whole index, every step kept
-- in error or waiting for a retry in any task; the states are now compared as texts of their
-- own
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;

-- Decides what a task does next from its execution context: complete, blocked (then error),
-- enqueue the steps that became ready, or wait. The context is computed once, after
-- enqueueing: with no permanent failure (checked first) and steps just enqueued the task is
-- processing. The task's steps are reached by its key: states are compared as texts of their
-- own, since a generic plan would otherwise AND in a scan of the whole partial index on that
-- state (workflow_steps_retry_idx, workflow_steps_failed_idx), every step of every task
-- waiting for a retry or kept in error.
CREATE OR REPLACE FUNCTION tasker.finalize_task(p_task uuid, p_actor text)
 RETURNS text
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_state  text;
  v_ctx    record;
  v_status text;
  v_target text;
  v_failed jsonb;
BEGIN
  SELECT state INTO v_state FROM tasker.tasks WHERE task_uuid = p_task FOR NO KEY UPDATE;
  IF v_state IS NULL OR v_state NOT IN ('enqueuing_steps', 'steps_in_process', 'evaluating_results',
                                        'waiting_for_dependencies', 'waiting_for_retry') THEN
    RETURN v_state;
  END IF;
  SELECT * INTO v_ctx FROM tasker.get_task_execution_context(p_task);
  v_status := v_ctx.execution_status;
  IF v_status = 'has_ready_steps' THEN
    IF tasker.enqueue_steps_of(p_task, p_actor) > 0 THEN
      v_status := 'processing';
    ELSE
      SELECT * INTO v_ctx FROM tasker.get_task_execution_context(p_task);
      v_status := v_ctx.execution_status;
    END IF;
  END IF;
  v_target := CASE v_status
    WHEN 'blocked_by_failures' THEN 'blocked_by_failures'
    WHEN 'all_complete' THEN 'complete'
    WHEN 'processing' THEN 'steps_in_process'
    WHEN 'has_ready_steps' THEN 'steps_in_process'
    ELSE CASE WHEN EXISTS (SELECT 1 FROM tasker.workflow_steps
                            WHERE task_uuid = p_task AND state || '' = 'waiting_for_retry')
              THEN 'waiting_for_retry' ELSE 'waiting_for_dependencies' END
  END;
  IF v_target = 'blocked_by_failures' THEN
    SELECT coalesce(jsonb_agg(jsonb_build_object('step', name, 'attempts', attempts,
                                                 'error', last_error) ORDER BY position), '[]')
      INTO v_failed
      FROM tasker.workflow_steps
     WHERE task_uuid = p_task
       AND (state || '' = 'error'
            OR (state || '' = 'waiting_for_retry'
                AND NOT (attempts < max_attempts AND (retryable OR attempts = 0))));
    PERFORM tasker.transition_task(p_task, v_state, 'blocked_by_failures', p_actor,
                                   jsonb_build_object('failed_steps', v_failed));
    PERFORM tasker.transition_task(p_task, 'blocked_by_failures', 'error', p_actor,
                                   jsonb_build_object('failed_steps', v_failed));
    RETURN 'error';
  END IF;
  IF v_target <> v_state THEN
    PERFORM tasker.transition_task(p_task, v_state, v_target, p_actor,
                                   jsonb_build_object('execution_status', v_status));
  END IF;
  RETURN v_target;
END;
$function$;

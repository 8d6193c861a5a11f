-- The task-level view the finalizer decides on. The precedence of execution_status matters:
-- with parallel execution a task can have a permanently failed step and ready steps at
-- once, and it must be reported blocked, not handed more work.
CREATE OR REPLACE FUNCTION tasker.get_task_execution_context(p_task uuid)
 RETURNS TABLE(task_uuid uuid, total_steps bigint, pending_steps bigint, in_progress_steps bigint, completed_steps bigint, failed_steps bigint, ready_steps bigint, permanently_blocked_steps bigint, execution_status text, recommended_action text, health_status text)
 LANGUAGE sql
 STABLE
AS $function$
  WITH r AS (SELECT * FROM tasker.get_step_readiness_status(p_task)),
  c AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE current_state IN ('pending', 'waiting_for_retry')) AS pending,
           count(*) FILTER (WHERE current_state IN ('enqueued', 'in_progress',
                     'enqueued_for_orchestration', 'enqueued_as_error_for_orchestration')) AS in_progress,
           count(*) FILTER (WHERE current_state IN ('complete', 'resolved_manually')) AS completed,
           count(*) FILTER (WHERE current_state IN ('error', 'waiting_for_retry')) AS failed,
           count(*) FILTER (WHERE ready_for_execution) AS ready,
           count(*) FILTER (WHERE current_state = 'error'
                              OR (current_state = 'waiting_for_retry' AND NOT retry_eligible)) AS blocked
      FROM r
  )
  SELECT p_task, total, pending, in_progress, completed, failed, ready, blocked,
         CASE
           WHEN blocked > 0 THEN 'blocked_by_failures'
           WHEN ready > 0 THEN 'has_ready_steps'
           WHEN in_progress > 0 THEN 'processing'
           WHEN total > 0 AND completed = total THEN 'all_complete'
           ELSE 'waiting_for_dependencies'
         END,
         CASE
           WHEN blocked > 0 THEN 'handle_failures'
           WHEN ready > 0 THEN 'execute_ready_steps'
           WHEN in_progress > 0 THEN 'wait_for_completion'
           WHEN total > 0 AND completed = total THEN 'finalize_task'
           ELSE 'wait_for_dependencies'
         END,
         CASE
           WHEN blocked > 0 THEN 'blocked'
           WHEN failed > 0 THEN 'recovering'
           ELSE 'healthy'
         END
    FROM c
$function$;

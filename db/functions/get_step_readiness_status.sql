-- Each step of a task with whether it can run now: pending or waiting_for_retry, every
-- parent done (from the step's pending_parents counter when it has one, else by counting
-- its edges), attempts left and backoff passed.
CREATE OR REPLACE FUNCTION tasker.get_step_readiness_status(p_task uuid)
 RETURNS TABLE(step_uuid uuid, task_uuid uuid, name text, current_state text, dependencies_satisfied boolean, retry_eligible boolean, ready_for_execution boolean, attempts integer, max_attempts integer, retryable boolean, next_retry_at timestamp with time zone, total_parents integer, completed_parents integer)
 LANGUAGE sql
 STABLE
AS $function$
  SELECT s.step_uuid,
         s.task_uuid,
         s.name,
         s.state,
         p.total = p.done,
         s.attempts < s.max_attempts AND (s.retryable OR s.attempts = 0),
         s.state IN ('pending', 'waiting_for_retry')
           AND p.total = p.done
           AND s.attempts < s.max_attempts
           AND (s.retryable OR s.attempts = 0)
           AND (s.next_retry_at IS NULL OR s.next_retry_at <= clock_timestamp()),
         s.attempts,
         s.max_attempts,
         s.retryable,
         s.next_retry_at,
         p.total::integer,
         p.done::integer
    FROM tasker.workflow_steps s
    CROSS JOIN LATERAL (
      SELECT coalesce(s.parent_count, count(*)) AS total,
             coalesce(s.parent_count - s.pending_parents,
                      count(*) FILTER (WHERE ps.state IN ('complete', 'resolved_manually'))) AS done
        FROM tasker.workflow_step_edges e
        JOIN tasker.workflow_steps ps ON ps.step_uuid = e.from_step_uuid
       WHERE e.to_step_uuid = s.step_uuid AND s.pending_parents IS NULL
    ) p
   WHERE s.task_uuid = p_task
   ORDER BY s.position
$function$;

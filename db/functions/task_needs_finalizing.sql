-- Whether finalizing this task could change anything: true unless it is steps_in_process
-- with a step still enqueued or running and none ready, due for a retry, or failed. The
-- caller holds the task row, so no other transaction changes its steps' states meanwhile.
CREATE OR REPLACE FUNCTION tasker.task_needs_finalizing(p_task uuid)
 RETURNS boolean
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
  v_busy   boolean;
  v_decide boolean;
BEGIN
  IF (SELECT t.state FROM tasker.tasks t WHERE t.task_uuid = p_task)
     IS DISTINCT FROM 'steps_in_process' THEN
    RETURN true;
  END IF;
  SELECT coalesce(bool_or(s.state IN ('enqueued', 'in_progress')), false),
         coalesce(bool_or((s.state = 'pending' AND coalesce(s.pending_parents, 0) = 0)
                          OR (s.state = 'waiting_for_retry'
                              AND (s.next_retry_at IS NULL OR s.next_retry_at <= clock_timestamp()))
                          OR s.state NOT IN ('pending', 'waiting_for_retry', 'enqueued',
                                             'in_progress', 'complete', 'resolved_manually')),
                  false)
    INTO v_busy, v_decide
    FROM tasker.workflow_steps s
   WHERE s.task_uuid = p_task;
  RETURN v_decide OR NOT v_busy;
END;
$function$;

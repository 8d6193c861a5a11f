-- Steps whose claim was lost (their worker died, or its lease ran out) on their last
-- attempt: error with a worker_lost failure that is not retryable, so a handler that kills
-- its worker (OOM, segfault, exit!) fails its step instead of killing worker after worker.
-- The lost attempt gets its audit row like any failed one. p_worker: the worker lost, when
-- the caller knows it (else the step's claim owner). The caller holds the tasks and then the
-- steps locked, and finalizes the tasks returned (they are blocked by the failure).
CREATE OR REPLACE FUNCTION tasker.fail_lost_steps(p_steps uuid[], p_worker text, p_actor text, p_reason text)
 RETURNS SETOF uuid
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_steps uuid[];
  v_tasks uuid[];
  v_n     integer;
BEGIN
  WITH failed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'error', updated_at = now(), claim_owner = NULL, lease_expires_at = NULL,
           next_retry_at = NULL,
           last_error = jsonb_build_object(
             'message', format('worker %s was lost (%s) while running attempt %s of %s: its process died or lost the database; the step is not run again',
                               coalesce(p_worker, s.claim_owner, 'unknown'), p_reason, s.attempts,
                               s.max_attempts),
             'error_type', 'worker_lost', 'retryable', false,
             'worker_id', coalesce(p_worker, s.claim_owner))
     WHERE s.step_uuid = ANY (p_steps) AND s.state = 'in_progress'
    RETURNING s.step_uuid, s.task_uuid, s.attempts, s.last_error
  ), audited AS (
    INSERT INTO tasker.step_result_audit_log
      (step_uuid, task_uuid, attempt, worker_id, success, error, execution_time_ms, metadata)
    SELECT f.step_uuid, f.task_uuid, f.attempts, coalesce(f.last_error->>'worker_id', 'unknown'), false,
           f.last_error, 0, jsonb_build_object('reason', p_reason)
      FROM failed f
    ON CONFLICT DO NOTHING
  )
  SELECT array_agg(f.step_uuid ORDER BY f.step_uuid), array_agg(f.task_uuid ORDER BY f.step_uuid)
    INTO v_steps, v_tasks
    FROM failed f;
  v_n := coalesce(cardinality(v_steps), 0);
  IF v_n = 0 THEN
    RETURN;
  END IF;
  PERFORM tasker.record_step_transitions(
    v_steps, array_fill('in_progress'::text, ARRAY[v_n]),
    array_fill('error'::text, ARRAY[v_n]), p_actor,
    array_fill(jsonb_build_object('reason', p_reason, 'worker_id', p_worker), ARRAY[v_n]));
  RETURN QUERY SELECT DISTINCT t FROM unnest(v_tasks) AS t;
END;
$function$;

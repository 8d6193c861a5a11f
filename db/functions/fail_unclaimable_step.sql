-- A step whose claim fails on its own, every time (its parents' results too large to
-- gather into one value, say): error with a claim_failed failure that is not retryable,
-- and its task finalized (blocked by it), instead of its message failing every read of its
-- queue. Applies to an enqueued step, or an in_progress one whose lease expired (the claim
-- would have taken it over); returns its task, or NULL when the step is in neither state.
CREATE OR REPLACE FUNCTION tasker.fail_unclaimable_step(p_step uuid, p_actor text, p_message text)
 RETURNS uuid
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_task uuid;
  v_from text;
BEGIN
  SELECT s.task_uuid INTO v_task FROM tasker.workflow_steps s WHERE s.step_uuid = p_step;
  IF v_task IS NULL THEN
    RETURN NULL;
  END IF;
  -- Tasks before steps, as every locker of both.
  PERFORM 1 FROM tasker.tasks t WHERE t.task_uuid = v_task FOR NO KEY UPDATE;
  SELECT s.state INTO v_from FROM tasker.workflow_steps s
   WHERE s.step_uuid = p_step
     AND (s.state = 'enqueued'
          OR (s.state = 'in_progress' AND s.lease_expires_at <= clock_timestamp()))
     FOR NO KEY UPDATE;
  IF v_from IS NULL THEN
    RETURN NULL;
  END IF;
  UPDATE tasker.workflow_steps s
     SET state = 'error', updated_at = now(), claim_owner = NULL, lease_expires_at = NULL,
         next_retry_at = NULL,
         last_error = jsonb_build_object(
           'message', format('the step could not be claimed: %s', p_message),
           'error_type', 'claim_failed', 'retryable', false)
   WHERE s.step_uuid = p_step;
  PERFORM tasker.record_step_transitions(
    ARRAY[p_step], ARRAY[v_from], ARRAY['error'], p_actor,
    ARRAY[jsonb_build_object('reason', 'claim_failed')]);
  PERFORM tasker.finalize_task(v_task, p_actor);
  RETURN v_task;
END;
$function$;

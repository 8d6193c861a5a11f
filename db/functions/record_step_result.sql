-- One result in one transaction: a batch of one for record_step_results, with an optional
-- outcome (a decision's next_steps or a batch list).
CREATE OR REPLACE FUNCTION tasker.record_step_result(p_step uuid, p_attempt integer, p_worker text, p_success boolean, p_result jsonb, p_error jsonb, p_execution_ms bigint, p_metadata jsonb, p_worker_queue text, p_msg_id bigint)
 RETURNS boolean
 LANGUAGE sql
AS $function$
  SELECT NOT EXISTS (
    SELECT 1 FROM tasker.record_step_results(p_worker, jsonb_build_array(jsonb_build_object(
      'step_uuid', p_step, 'attempt', p_attempt, 'success', p_success, 'result', p_result,
      'error', p_error, 'execution_ms', p_execution_ms, 'metadata', p_metadata,
      'queue', p_worker_queue, 'msg_id', p_msg_id))))
$function$;

CREATE OR REPLACE FUNCTION tasker.record_step_result(p_step uuid, p_attempt integer, p_worker text, p_success boolean, p_result jsonb, p_error jsonb, p_execution_ms bigint, p_metadata jsonb, p_worker_queue text, p_msg_id bigint, p_outcome jsonb)
 RETURNS boolean
 LANGUAGE sql
AS $function$
  SELECT NOT EXISTS (
    SELECT 1 FROM tasker.record_step_results(p_worker, jsonb_build_array(jsonb_build_object(
      'step_uuid', p_step, 'attempt', p_attempt, 'success', p_success, 'result', p_result,
      'error', p_error, 'execution_ms', p_execution_ms, 'metadata', p_metadata,
      'queue', p_worker_queue, 'msg_id', p_msg_id, 'outcome', p_outcome))))
$function$;

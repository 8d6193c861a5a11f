-- The orchestrator's side of the results queue: decodes a batch of messages, applies them
-- and deletes them.
CREATE OR REPLACE FUNCTION tasker.process_step_results(p_messages jsonb, p_actor text, p_jitter_ratio double precision, p_max_retry_after_ms bigint)
 RETURNS TABLE(msg_id bigint, task_uuid uuid, namespace text, outcome text)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_msgs     bigint[];
  v_tasks    uuid[];
  v_steps    uuid[];
  v_attempts integer[];
  v_workers  text[];
BEGIN
  SELECT array_agg(m.msg_id ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.task_uuid ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.step_uuid ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.attempt ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.worker_id ORDER BY m.task_uuid, m.step_uuid, m.msg_id)
    INTO v_msgs, v_tasks, v_steps, v_attempts, v_workers
    FROM (SELECT (x->>'msg_id')::bigint AS msg_id, (x->>'task_uuid')::uuid AS task_uuid,
                 (x->>'step_uuid')::uuid AS step_uuid, (x->>'attempt')::integer AS attempt,
                 x->>'worker_id' AS worker_id
            FROM jsonb_array_elements(p_messages) AS x) AS m;
  RETURN QUERY
    SELECT * FROM tasker.apply_step_results(v_msgs, v_tasks, v_steps, v_attempts, v_workers,
                                            p_actor, p_jitter_ratio, p_max_retry_after_ms);
  DELETE FROM pgmq.q_orchestration_step_results q WHERE q.msg_id = ANY (v_msgs);
END;
$function$;

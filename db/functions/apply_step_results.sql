-- Applies stored results (steps in enqueued_for_orchestration or
-- enqueued_as_error_for_orchestration at the given attempt): complete, waiting_for_retry with
-- backoff, or error; completed steps count themselves off their children; every task
-- touched is finalized once (enqueueing what became ready). p_ids identifies each input
-- in the rows returned (a results-queue message id, or a position). The caller has locked
-- the tasks or lets this lock them: every task first, then every step, each in key order.
CREATE OR REPLACE FUNCTION tasker.apply_step_results(p_ids bigint[], p_tasks uuid[], p_steps uuid[], p_attempts integer[], p_workers text[], p_actor text, p_jitter_ratio double precision, p_max_retry_after_ms bigint)
 RETURNS TABLE(msg_id bigint, task_uuid uuid, namespace text, outcome text)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_task_ids   uuid[];
  v_step_ids   uuid[];
  v_msgs       bigint[];
  v_steps      uuid[];
  v_tasks      uuid[];
  v_from       text[];
  v_to         text[];
  v_meta       jsonb[];
  v_outcomes   jsonb := '{}'::jsonb;
  f            record;
  v_err        jsonb;
  v_delay      bigint;
BEGIN
  SELECT array_agg(DISTINCT u.t) INTO v_task_ids FROM unnest(p_tasks) AS u(t);
  SELECT array_agg(DISTINCT u.s) INTO v_step_ids FROM unnest(p_steps) AS u(s);
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid = ANY (v_task_ids) ORDER BY t.task_uuid FOR NO KEY UPDATE;
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (v_step_ids) ORDER BY s.step_uuid FOR NO KEY UPDATE;

  WITH m AS (
    SELECT DISTINCT ON (s.step_uuid) u.id, s.step_uuid, u.worker_id
      FROM unnest(p_ids, p_tasks, p_steps, p_attempts, p_workers)
             AS u(id, task_uuid, step_uuid, attempt, worker_id)
      JOIN tasker.workflow_steps s ON s.step_uuid = u.step_uuid AND s.task_uuid = u.task_uuid
     WHERE s.step_uuid = ANY (v_step_ids) AND s.attempts = u.attempt
       AND s.state = 'enqueued_for_orchestration'
     ORDER BY s.step_uuid, u.id
  ), completed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'complete', updated_at = now(), completed_at = clock_timestamp()
      FROM m
     WHERE s.step_uuid = ANY (v_step_ids) AND s.step_uuid = m.step_uuid
    RETURNING s.step_uuid, s.task_uuid, s.attempts, m.id, m.worker_id
  )
  SELECT array_agg(c.id), array_agg(c.step_uuid), array_agg(c.task_uuid),
         array_agg('enqueued_for_orchestration'::text), array_agg('complete'::text),
         array_agg(jsonb_build_object('attempt', c.attempts, 'worker_id', c.worker_id))
    INTO v_msgs, v_steps, v_tasks, v_from, v_to, v_meta
    FROM completed c;
  IF v_steps IS NOT NULL THEN
    PERFORM tasker.record_step_transitions(v_steps, v_from, v_to, p_actor, v_meta);
    PERFORM tasker.parents_done(v_steps);
    SELECT jsonb_object_agg(id::text, 'completed') INTO v_outcomes FROM unnest(v_msgs) AS id;
  END IF;

  FOR f IN SELECT DISTINCT ON (s.step_uuid)
                  u.id, s.step_uuid, s.task_uuid, s.state, s.attempts, s.max_attempts,
                  s.retryable, s.backoff, s.backoff_base_ms, s.max_backoff_ms,
                  coalesce(s.last_error, '{}'::jsonb) AS last_error
             FROM unnest(p_ids, p_tasks, p_steps, p_attempts)
                    AS u(id, task_uuid, step_uuid, attempt)
             JOIN tasker.workflow_steps s
               ON s.step_uuid = u.step_uuid AND s.task_uuid = u.task_uuid
            WHERE s.step_uuid = ANY (v_step_ids) AND s.attempts = u.attempt
              AND s.state = 'enqueued_as_error_for_orchestration'
            ORDER BY s.step_uuid, u.id LOOP
    v_err := f.last_error;
    IF coalesce((v_err->>'retryable')::boolean, true) AND f.retryable
       AND f.attempts < f.max_attempts THEN
      v_delay := tasker.retry_delay_ms(f.backoff, f.backoff_base_ms, f.max_backoff_ms,
                                       f.attempts, v_err, p_jitter_ratio, p_max_retry_after_ms);
      PERFORM tasker.transition_step(f.step_uuid, f.state, 'waiting_for_retry', p_actor,
        jsonb_build_object('attempt', f.attempts, 'retry_in_ms', v_delay));
      UPDATE tasker.workflow_steps
         SET next_retry_at = clock_timestamp() + make_interval(secs => v_delay / 1000.0)
       WHERE workflow_steps.step_uuid = f.step_uuid;
      v_outcomes := v_outcomes || jsonb_build_object(f.id::text, 'retry_scheduled');
    ELSE
      PERFORM tasker.transition_step(f.step_uuid, f.state, 'error', p_actor,
        jsonb_build_object('attempt', f.attempts, 'reason',
          CASE WHEN NOT coalesce((v_err->>'retryable')::boolean, true) THEN 'not retryable (handler)'
               WHEN NOT f.retryable THEN 'not retryable (template)'
               ELSE 'out of attempts' END));
      UPDATE tasker.workflow_steps SET completed_at = clock_timestamp()
       WHERE workflow_steps.step_uuid = f.step_uuid;
      v_outcomes := v_outcomes || jsonb_build_object(f.id::text, 'failed');
    END IF;
    v_tasks := v_tasks || f.task_uuid;
  END LOOP;

  PERFORM tasker.finalize_task(t, p_actor)
     FROM (SELECT DISTINCT t FROM unnest(v_tasks) AS t) AS touched ORDER BY t;

  RETURN QUERY
    SELECT u.id, u.task_uuid, tasker.task_namespace(u.task_uuid),
           coalesce(v_outcomes->>u.id::text, 'ignored')
      FROM unnest(p_ids, p_tasks) WITH ORDINALITY AS u(id, task_uuid, i)
     ORDER BY u.i;
END;
$function$;

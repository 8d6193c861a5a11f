-- Stores a batch of results: checks each against the step's claim (state in_progress, this
-- worker, this attempt), stores it (step state, result or error, audit, transition, a
-- decision's or batch's outcome applied). p_send: send each recorded result to the
-- orchestration results queue (steps wait in enqueued_for_orchestration /
-- enqueued_as_error_for_orchestration). Without it the
-- caller applies the results in the same transaction, and a success of a step without an
-- outcome goes straight to complete; decision and batchable steps still pass through
-- enqueued_for_orchestration, because their outcome's new steps count the step as a
-- pending parent until it completes. Returns the recorded results with the state each
-- moved to.
CREATE OR REPLACE FUNCTION tasker.store_step_results(p_worker text, p_results jsonb, p_send boolean)
 RETURNS TABLE(step_uuid uuid, task_uuid uuid, attempt integer, state text)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_ids       uuid[];
  v_steps     uuid[];
  v_tasks     uuid[];
  v_attempts  integer[];
  v_to        text[];
  v_decided   uuid[];
  v_dyn_tasks uuid[];
  t           uuid;
BEGIN
  SELECT array_agg(DISTINCT (x->>'step_uuid')::uuid) INTO v_ids
    FROM jsonb_array_elements(p_results) AS x;
  -- An outcome changes its task (expand_steps locks the task row), so the tasks of decision
  -- and batchable steps are locked first, in order, as everything else locks a task before
  -- its steps. A step's type never changes, so reading it unlocked is safe.
  PERFORM 1 FROM tasker.tasks tt
   WHERE tt.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                           WHERE s.step_uuid = ANY (v_ids)
                             AND s.step_type IN ('decision', 'batchable'))
   ORDER BY tt.task_uuid FOR NO KEY UPDATE;
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (v_ids) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  WITH r AS (
    SELECT DISTINCT ON ((x->>'step_uuid')::uuid)
           (x->>'step_uuid')::uuid AS step_uuid, (x->>'attempt')::integer AS attempt,
           (x->>'success')::boolean AS success, x->'result' AS result,
           CASE WHEN jsonb_typeof(x->'error') = 'object' THEN x->'error'
                ELSE '{"message": "the handler gave no error"}'::jsonb END AS error,
           (x->>'execution_ms')::bigint AS execution_ms,
           CASE WHEN jsonb_typeof(x->'metadata') = 'object' THEN x->'metadata' ELSE '{}'::jsonb END AS metadata,
           CASE WHEN jsonb_typeof(x->'outcome') <> 'null' THEN x->'outcome' END AS outcome
      FROM jsonb_array_elements(p_results) AS x
     ORDER BY (x->>'step_uuid')::uuid
  ), checked AS (
    SELECT c.*,
           CASE WHEN NOT (c.success AND c.bad IS NULL) THEN 'enqueued_as_error_for_orchestration'
                WHEN p_send OR c.step_type IN ('decision', 'batchable')
                  THEN 'enqueued_for_orchestration'
                ELSE 'complete' END AS to_state
      FROM (SELECT r.*, s.step_type,
                   CASE WHEN r.success AND (r.outcome IS NOT NULL
                                            OR s.step_type IN ('decision', 'batchable'))
                        THEN tasker.outcome_error(s.task_uuid, s.name, s.step_type, r.outcome)
                   END AS bad
              FROM r JOIN tasker.workflow_steps s ON s.step_uuid = r.step_uuid
             WHERE s.step_uuid = ANY (v_ids)) AS c
  ), applied AS (
    -- A result that completes its step is audited in the step's row; any other gets a row
    -- in the audit log below.
    UPDATE tasker.workflow_steps s
       SET state = r.to_state,
           completed_at = CASE WHEN r.to_state = 'complete' THEN clock_timestamp()
                               ELSE s.completed_at END,
           updated_at = now(),
           results = CASE WHEN r.success AND r.bad IS NULL THEN r.result ELSE s.results END,
           last_error = CASE WHEN r.success AND r.bad IS NULL THEN NULL
                             ELSE coalesce(r.bad, r.error) END,
           outcome = CASE WHEN r.success AND r.bad IS NULL
                           AND s.step_type IN ('decision', 'batchable')
                          THEN r.outcome ELSE s.outcome END,
           claim_owner = NULL, lease_expires_at = NULL,
           recorded_by = CASE WHEN r.to_state = 'complete' THEN p_worker END,
           execution_time_ms = CASE WHEN r.to_state = 'complete' THEN r.execution_ms END,
           result_metadata = CASE WHEN r.to_state = 'complete' THEN r.metadata END,
           transitions = s.transitions
                         || tasker.transition_entry('in_progress', r.to_state, p_worker,
                                                   jsonb_build_object('attempt', r.attempt,
                                                                      'execution_time_ms', r.execution_ms))
      FROM checked r
     WHERE s.step_uuid = ANY (v_ids) AND s.step_uuid = r.step_uuid AND s.state = 'in_progress'
       AND s.claim_owner = p_worker AND s.attempts = r.attempt
    RETURNING s.step_uuid, s.task_uuid, s.state, r.attempt, r.success AND r.bad IS NULL AS ok,
              r.result, coalesce(r.bad, r.error) AS error, r.execution_ms, r.metadata,
              r.success AND r.bad IS NULL AND s.step_type IN ('decision', 'batchable') AS decided
  ), audited AS (
    INSERT INTO tasker.step_result_audit_log
      (step_uuid, task_uuid, attempt, worker_id, success, result, error, execution_time_ms, metadata)
    SELECT a.step_uuid, a.task_uuid, a.attempt, p_worker, a.ok,
           CASE WHEN a.ok THEN a.result END, CASE WHEN NOT a.ok THEN a.error END,
           a.execution_ms, a.metadata
      FROM applied a
     WHERE a.state <> 'complete'
  ), counted AS (
    INSERT INTO tasker.step_recordings (worker_id, completed)
    SELECT p_worker, count(*) FROM applied a WHERE a.state = 'complete' HAVING count(*) > 0
  ), sent AS (
    INSERT INTO pgmq.q_orchestration_step_results (vt, message)
    SELECT clock_timestamp(), jsonb_build_object(
             'task_uuid', a.task_uuid, 'step_uuid', a.step_uuid, 'attempt', a.attempt,
             'success', a.ok, 'worker_id', p_worker)
      FROM applied a
     WHERE p_send
  )
  SELECT array_agg(a.step_uuid), array_agg(a.task_uuid), array_agg(a.attempt),
         array_agg(a.state),
         array_agg(a.step_uuid) FILTER (WHERE a.decided),
         array_agg(DISTINCT a.task_uuid) FILTER (WHERE a.decided)
    INTO v_steps, v_tasks, v_attempts, v_to, v_decided, v_dyn_tasks
    FROM applied a;
  IF v_steps IS NULL THEN
    RETURN;
  END IF;
  -- A cancelled task gets no new steps: its in-flight results still land, nothing more.
  IF v_decided IS NOT NULL THEN
    SELECT array_agg(s.step_uuid ORDER BY s.step_uuid), array_agg(DISTINCT s.task_uuid)
      INTO v_decided, v_dyn_tasks
      FROM tasker.workflow_steps s JOIN tasker.tasks tt ON tt.task_uuid = s.task_uuid
     WHERE s.step_uuid = ANY (v_decided) AND tt.task_uuid = ANY (v_dyn_tasks)
       AND tt.state <> 'cancelled';
  END IF;
  IF v_decided IS NOT NULL THEN
    PERFORM tasker.create_batch_workers(v_decided, p_worker);
    FOREACH t IN ARRAY v_dyn_tasks LOOP
      PERFORM tasker.expand_steps(t, p_worker);
    END LOOP;
  END IF;
  RETURN QUERY SELECT * FROM unnest(v_steps, v_tasks, v_attempts, v_to);
END;
$function$;

-- What is wrong with a successful step's outcome, as the error recorded in its place, or
-- NULL when it may be applied. Permanent failures: the same handler would say it again.
CREATE OR REPLACE FUNCTION tasker.outcome_error(p_task uuid, p_step text, p_type text, p_outcome jsonb)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_outcome jsonb := CASE WHEN jsonb_typeof(p_outcome) = 'object' THEN p_outcome END;
  v_kind    text;
  v_list    jsonb;
  v_bad     jsonb;
  v_index   bigint;
  v_bp      record;
  v_choices text;
  v_room    bigint;
BEGIN
  v_kind := CASE WHEN v_outcome ? 'batches' OR (v_outcome IS NULL AND p_type = 'batchable')
                 THEN 'invalid_batch' ELSE 'invalid_decision' END;
  IF v_outcome IS NULL THEN
    IF p_type = 'decision' THEN
      RETURN tasker.outcome_failure(v_kind, format(
        'decision step ''%s'' returned no next_steps (return [] to choose none)', p_step));
    ELSIF p_type = 'batchable' THEN
      RETURN tasker.outcome_failure(v_kind, format(
        'batchable step ''%s'' returned no batches (return [] for none)', p_step));
    ELSIF p_outcome IS NULL OR jsonb_typeof(p_outcome) = 'null' THEN
      RETURN NULL;
    END IF;
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'': malformed outcome %s', p_step, left(p_outcome::text, 200)));
  END IF;
  IF (SELECT count(*) FROM jsonb_object_keys(v_outcome)) <> 1
     OR NOT (v_outcome ? 'next_steps' OR v_outcome ? 'batches') THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'': malformed outcome %s (expected next_steps or batches)', p_step,
      left(v_outcome::text, 200)));
  END IF;
  IF v_outcome ? 'next_steps' AND p_type <> 'decision' THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'' is %s: only a decision step may return next_steps (got %s)', p_step, p_type,
      left((v_outcome->'next_steps')::text, 200)));
  END IF;
  IF v_outcome ? 'batches' AND p_type <> 'batchable' THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'' is %s: only a batchable step may return batches', p_step, p_type));
  END IF;

  IF p_type = 'decision' THEN
    v_list := v_outcome->'next_steps';
    IF jsonb_typeof(v_list) <> 'array' THEN
      RETURN tasker.outcome_failure(v_kind, format(
        'decision step ''%s'': next_steps must be an array of step names, got %s', p_step,
        left(v_list::text, 200)));
    END IF;
    SELECT e INTO v_bad FROM jsonb_array_elements(v_list) AS e
     WHERE jsonb_typeof(e) <> 'string'
        OR NOT EXISTS (SELECT 1 FROM tasker.step_blueprints b
                        WHERE b.task_uuid = p_task AND b.name = e #>> '{}'
                          AND p_step = ANY (b.dependencies))
     LIMIT 1;
    IF FOUND THEN
      SELECT string_agg(b.name, ', ' ORDER BY b.position) INTO v_choices
        FROM tasker.step_blueprints b
       WHERE b.task_uuid = p_task AND p_step = ANY (b.dependencies);
      RETURN tasker.outcome_failure(v_kind, format(
        'decision step ''%s'' chose %s, which is not one of its direct dependents (%s)',
        p_step, left(v_bad::text, 200), v_choices));
    END IF;
    RETURN NULL;
  END IF;

  v_list := v_outcome->'batches';
  IF jsonb_typeof(v_list) <> 'array' THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'': batches must be an array of objects, got %s', p_step,
      left(v_list::text, 200)));
  END IF;
  SELECT b.max_workers, b.batch_worker INTO v_bp FROM tasker.step_blueprints b
   WHERE b.task_uuid = p_task AND b.name = p_step;
  IF jsonb_array_length(v_list) > v_bp.max_workers THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'' returned %s batches, more than batch.max_workers (%s)', p_step,
      jsonb_array_length(v_list), v_bp.max_workers));
  END IF;
  SELECT e.value, e.i - 1 INTO v_bad, v_index
    FROM jsonb_array_elements(v_list) WITH ORDINALITY AS e(value, i)
   WHERE jsonb_typeof(e.value) <> 'object' LIMIT 1;
  IF FOUND THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'': batches[%s] is %s, not an object', p_step, v_index,
      left(v_bad::text, 200)));
  END IF;
  -- Room left under the task's ceiling, keeping enough for every template step still to
  -- come, so a later decision can never be the one that passes it.
  SELECT t.max_steps
         - (SELECT count(*) FROM tasker.workflow_steps s WHERE s.task_uuid = p_task)
         - (SELECT count(*) FROM tasker.step_blueprints b
             WHERE b.task_uuid = p_task AND b.step_type <> 'batch_worker'
               AND NOT EXISTS (SELECT 1 FROM tasker.workflow_steps s
                                WHERE s.task_uuid = p_task AND s.name = b.name))
    INTO v_room
    FROM tasker.tasks t WHERE t.task_uuid = p_task;
  IF v_room IS NOT NULL AND jsonb_array_length(v_list) > v_room THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'' returned %s batches, but the task has room for %s more steps (orchestration.max_steps_per_task)',
      p_step, jsonb_array_length(v_list), greatest(v_room, 0)));
  END IF;
  RETURN NULL;
END;
$function$;

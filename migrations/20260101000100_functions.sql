-- State transitions (compare-and-swap), readiness and execution context.

-- Appends a task transition row and moves the most_recent flag to it.
CREATE FUNCTION tasker.record_task_transition(
  p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_prev integer;
BEGIN
  UPDATE tasker.task_transitions SET most_recent = false
   WHERE task_uuid = p_task AND most_recent
  RETURNING sort_key INTO v_prev;
  INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
  VALUES (p_task, p_from, p_to, coalesce(v_prev + 1, 0), true, p_actor, coalesce(p_metadata, '{}'::jsonb));
END;
$$;

CREATE FUNCTION tasker.record_step_transition(
  p_step uuid, p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_prev integer;
BEGIN
  UPDATE tasker.workflow_step_transitions SET most_recent = false
   WHERE step_uuid = p_step AND most_recent
  RETURNING sort_key INTO v_prev;
  INSERT INTO tasker.workflow_step_transitions
    (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
  VALUES (p_step, p_task, p_from, p_to, coalesce(v_prev + 1, 0), true, p_actor,
          coalesce(p_metadata, '{}'::jsonb));
END;
$$;

-- Moves a task from p_from to p_to only if it is still in p_from. Returns false when the
-- state moved underneath (another process won); raises for a transition the table forbids.
CREATE FUNCTION tasker.transition_task(
  p_task uuid, p_from text, p_to text, p_actor text, p_metadata jsonb DEFAULT '{}'::jsonb
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tasker.task_state_transitions
                  WHERE from_state = p_from AND to_state = p_to) THEN
    RAISE EXCEPTION 'task %: transition % -> % is not allowed', p_task, p_from, p_to
      USING ERRCODE = 'check_violation';
  END IF;
  UPDATE tasker.tasks
     SET state = p_to,
         updated_at = now(),
         completed_at = CASE WHEN p_to IN ('complete', 'error', 'cancelled', 'resolved_manually')
                             THEN clock_timestamp() ELSE NULL END
   WHERE task_uuid = p_task AND state = p_from;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM tasker.record_task_transition(p_task, p_from, p_to, p_actor, p_metadata);
  RETURN true;
END;
$$;

CREATE FUNCTION tasker.transition_step(
  p_step uuid, p_from text, p_to text, p_actor text, p_metadata jsonb DEFAULT '{}'::jsonb
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_task uuid;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tasker.step_state_transitions
                  WHERE from_state = p_from AND to_state = p_to) THEN
    RAISE EXCEPTION 'step %: transition % -> % is not allowed', p_step, p_from, p_to
      USING ERRCODE = 'check_violation';
  END IF;
  UPDATE tasker.workflow_steps
     SET state = p_to, updated_at = now()
   WHERE step_uuid = p_step AND state = p_from
  RETURNING task_uuid INTO v_task;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM tasker.record_step_transition(p_step, v_task, p_from, p_to, p_actor, p_metadata);
  RETURN true;
END;
$$;

-- Per step of a task: whether it can run now, and why not.
CREATE FUNCTION tasker.get_step_readiness_status(p_task uuid)
RETURNS TABLE (
  step_uuid uuid,
  task_uuid uuid,
  name text,
  current_state text,
  dependencies_satisfied boolean,
  retry_eligible boolean,
  ready_for_execution boolean,
  attempts integer,
  max_attempts integer,
  retryable boolean,
  next_retry_at timestamptz,
  total_parents integer,
  completed_parents integer
) LANGUAGE sql STABLE AS $$
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
      SELECT count(*) AS total,
             count(*) FILTER (WHERE ps.state IN ('complete', 'resolved_manually')) AS done
        FROM tasker.workflow_step_edges e
        JOIN tasker.workflow_steps ps ON ps.step_uuid = e.from_step_uuid
       WHERE e.to_step_uuid = s.step_uuid
    ) p
   WHERE s.task_uuid = p_task
   ORDER BY s.position
$$;

-- The task-level view the finalizer decides on. The precedence of execution_status matters:
-- with parallel execution a task can have a permanently failed step and ready steps at
-- once, and it must be reported blocked, not handed more work.
CREATE FUNCTION tasker.get_task_execution_context(p_task uuid)
RETURNS TABLE (
  task_uuid uuid,
  total_steps bigint,
  pending_steps bigint,
  in_progress_steps bigint,
  completed_steps bigint,
  failed_steps bigint,
  ready_steps bigint,
  permanently_blocked_steps bigint,
  execution_status text,
  recommended_action text,
  health_status text
) LANGUAGE sql STABLE AS $$
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
$$;

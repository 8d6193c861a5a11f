-- Stores a new dynamic task's blueprints (p_blueprints: [{name, position, step_type,
-- handler_callable, handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
-- max_backoff_ms, timeout_seconds, publishes_events, dependencies, gate, batch_worker,
-- max_workers}]) and creates the steps that are certain. Returns the number created.
CREATE OR REPLACE FUNCTION tasker.create_dynamic_steps(p_task uuid, p_blueprints jsonb, p_max_steps integer, p_actor text)
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  UPDATE tasker.tasks SET max_steps = p_max_steps WHERE task_uuid = p_task;
  INSERT INTO tasker.step_blueprints
    (task_uuid, name, position, step_type, handler_callable, handler_initialization,
     max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, timeout_seconds,
     publishes_events, dependencies, gate, batch_worker, max_workers)
  SELECT p_task, b.name, b.position, b.step_type, b.handler_callable,
         coalesce(b.handler_initialization, '{}'::jsonb), b.max_attempts, b.retryable, b.backoff,
         b.backoff_base_ms, b.max_backoff_ms, b.timeout_seconds,
         coalesce(b.publishes_events, '[]'::jsonb),
         ARRAY(SELECT jsonb_array_elements_text(coalesce(b.dependencies, '[]'::jsonb))),
         b.gate, b.batch_worker, b.max_workers
    FROM jsonb_to_recordset(p_blueprints) AS b(
      name text, position integer, step_type text, handler_callable text,
      handler_initialization jsonb, max_attempts integer, retryable boolean, backoff text,
      backoff_base_ms bigint, max_backoff_ms bigint, timeout_seconds integer,
      publishes_events jsonb, dependencies jsonb, gate text, batch_worker text,
      max_workers integer);
  RETURN tasker.expand_steps(p_task, p_actor);
END;
$function$;

-- Creates one copy of the batch_worker step per batch of each given batchable step (their
-- outcomes already stored), in one statement however many batches: named <worker>_000,
-- _001, ... in batch order, each with its batch as inputs.batch, an edge from the batchable
-- step and a first transition.
CREATE OR REPLACE FUNCTION tasker.create_batch_workers(p_steps uuid[], p_actor text)
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_n integer;
BEGIN
  WITH copies AS (
    INSERT INTO tasker.workflow_steps
      (task_uuid, name, position, step_type, template_step, handler_callable,
       handler_initialization, max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms,
       timeout_seconds, publishes_events, inputs, parent_count, pending_parents, transitions)
    SELECT s.task_uuid,
           w.name || '_' || lpad((o.i - 1)::text, greatest(3, length((o.i - 1)::text)), '0'),
           w.position, 'batch_worker', w.name, w.handler_callable, w.handler_initialization,
           w.max_attempts, w.retryable, w.backoff, w.backoff_base_ms, w.max_backoff_ms,
           w.timeout_seconds, w.publishes_events, jsonb_build_object('batch', o.batch),
           -- The batchable step, being recorded now, is the one parent.
           1, 1,
           ARRAY[tasker.transition_entry(NULL, 'pending', p_actor, '{"created_by": "batch"}')]
      FROM tasker.workflow_steps s
      JOIN tasker.step_blueprints pb ON pb.task_uuid = s.task_uuid AND pb.name = s.name
      JOIN tasker.step_blueprints w ON w.task_uuid = s.task_uuid AND w.name = pb.batch_worker
     CROSS JOIN LATERAL jsonb_array_elements(s.outcome->'batches') WITH ORDINALITY AS o(batch, i)
     WHERE s.step_uuid = ANY (p_steps) AND s.step_type = 'batchable'
     ORDER BY s.step_uuid, o.i
    ON CONFLICT (task_uuid, name) DO NOTHING
    RETURNING step_uuid, task_uuid, template_step
  ), edges AS (
    INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
    SELECT c.task_uuid, s.step_uuid, c.step_uuid
      FROM copies c
      JOIN tasker.step_blueprints pb ON pb.task_uuid = c.task_uuid AND pb.batch_worker = c.template_step
      JOIN tasker.workflow_steps s ON s.task_uuid = c.task_uuid AND s.name = pb.name
     WHERE s.step_uuid = ANY (p_steps)
  )
  SELECT count(*) INTO v_n FROM copies;
  RETURN v_n;
END;
$function$;

-- Creating a task and reading it back in one round trip.
--
-- TaskerCore::Client.create_task returns the created task with its steps. It called
-- tasker.create_task, then read the task row and its steps: two round trips, one after the
-- other. Measured from Ruby with the embedded worker busy on earlier tasks (1,000 tasks of
-- 10 no-op steps created one by one): creation 3.0 ms, the read 1.5 ms, of which the
-- queries themselves took 0.06 ms. The rest of the read was waiting for a busy CPU to run
-- the backends and the client, once more per round trip. A process that creates tasks one
-- by one is bound by that latency.
--
-- tasker.create_task_read creates the task as tasker.create_task does and returns, beside
-- its result, the task row and its steps as JSON, read by a later statement of the same
-- function so that they include what the creation wrote. The columns come from the views
-- tasker.task_rows and tasker.step_rows, which the clients' task and step reads (TaskRow,
-- StepRow) select from too, so both ways of reading a task return the same fields.

CREATE VIEW tasker.task_rows AS
  SELECT t.task_uuid, n.name AS namespace, nt.name, nt.version, t.state, t.context,
         t.correlation_id, t.idempotency_key, t.initiator, t.created_at, t.updated_at,
         t.completed_at
    FROM tasker.tasks t
    JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
    JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid;

CREATE VIEW tasker.step_rows AS
  SELECT s.step_uuid, s.task_uuid, s.name, s.position, s.step_type, s.handler_callable,
         s.state, s.attempts, s.max_attempts, s.retryable, s.backoff, s.backoff_base_ms,
         s.max_backoff_ms, s.timeout_seconds, s.inputs, s.results, s.last_error,
         s.next_retry_at, s.claim_owner, s.lease_expires_at, s.enqueued_at, s.started_at,
         s.completed_at
    FROM tasker.workflow_steps s;

CREATE FUNCTION tasker.create_task_read(
  p_named_task uuid, p_context jsonb, p_idempotency_key text, p_initiator text, p_actor text,
  p_names text[], p_positions integer[], p_callables text[], p_inits jsonb[],
  p_max_attempts integer[], p_retryable boolean[], p_backoff text[], p_base_ms bigint[],
  p_max_ms bigint[], p_timeouts integer[], p_events jsonb[], p_parents integer[],
  p_edge_from text[], p_edge_to text[], p_blueprints jsonb, p_max_steps integer
) RETURNS TABLE (task_uuid uuid, created boolean, state text, task jsonb, steps jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  v_task    uuid;
  v_created boolean;
  v_state   text;
BEGIN
  SELECT c.task_uuid, c.created, c.state INTO v_task, v_created, v_state
    FROM tasker.create_task(p_named_task, p_context, p_idempotency_key, p_initiator, p_actor,
           p_names, p_positions, p_callables, p_inits, p_max_attempts, p_retryable, p_backoff,
           p_base_ms, p_max_ms, p_timeouts, p_events, p_parents, p_edge_from, p_edge_to,
           p_blueprints, p_max_steps) AS c;
  RETURN QUERY SELECT v_task, v_created, v_state,
    (SELECT to_jsonb(r) FROM tasker.task_rows r WHERE r.task_uuid = v_task),
    (SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.position, s.name), '[]'::jsonb)
       FROM tasker.step_rows s WHERE s.task_uuid = v_task);
END;
$$;

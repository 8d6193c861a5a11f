-- The claims of steps this worker has just claimed (in_progress, attempt counted, lease
-- set), with what each handler needs: its task's context and its parents' results. The one
-- place a claimed step's tasker.step_claim is built; claim_steps and complete_steps (for
-- the children it claims) return these. PL/pgSQL so that its plan is kept per connection.
CREATE OR REPLACE FUNCTION tasker.claimed_steps(p_steps uuid[])
 RETURNS SETOF tasker.step_claim
 LANGUAGE plpgsql
 STABLE
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  -- Each task (with its template's names) is read once for all its steps, not once per
  -- step; a step without parents skips the edge lookup.
  RETURN QUERY
    WITH st AS MATERIALIZED (
      SELECT s.step_uuid, s.lease_expires_at, s.task_uuid, s.name, s.attempts, s.max_attempts,
             s.handler_callable, s.handler_initialization, s.timeout_seconds,
             s.publishes_events, s.inputs, s.parent_count
        FROM tasker.workflow_steps s
       WHERE s.step_uuid = ANY (p_steps)
    ), tk AS MATERIALIZED (
      SELECT t.task_uuid, t.context, n.name AS namespace, nt.name, nt.version
        FROM tasker.tasks t
        JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
        JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
       WHERE t.task_uuid = ANY (ARRAY(SELECT DISTINCT st.task_uuid FROM st))
    )
    SELECT st.step_uuid, 'claimed'::text, st.lease_expires_at, st.task_uuid, st.name,
           tk.namespace, tk.name, tk.version, st.attempts, st.max_attempts,
           st.handler_callable, st.handler_initialization, st.timeout_seconds,
           st.publishes_events, st.inputs, tk.context,
           CASE WHEN st.parent_count = 0 THEN '{}'::jsonb
                ELSE coalesce((SELECT jsonb_object_agg(ps.name, ps.results)
                                 FROM tasker.workflow_step_edges e
                                 JOIN tasker.workflow_steps ps ON ps.step_uuid = e.from_step_uuid
                                WHERE e.to_step_uuid = st.step_uuid AND NOT e.gate), '{}'::jsonb)
           END
      FROM st JOIN tk ON tk.task_uuid = st.task_uuid;
END;
$function$;

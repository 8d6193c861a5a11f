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
  RETURN QUERY
    SELECT s.step_uuid, 'claimed'::text, s.lease_expires_at, s.task_uuid, s.name, n.name,
           nt.name, nt.version, s.attempts, s.max_attempts, s.handler_callable,
           s.handler_initialization, s.timeout_seconds, s.publishes_events, s.inputs,
           t.context,
           coalesce((SELECT jsonb_object_agg(ps.name, ps.results)
                       FROM tasker.workflow_step_edges e
                       JOIN tasker.workflow_steps ps ON ps.step_uuid = e.from_step_uuid
                      WHERE e.to_step_uuid = s.step_uuid AND NOT e.gate), '{}'::jsonb)
      FROM tasker.workflow_steps s
      JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
      JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
      JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
     WHERE s.step_uuid = ANY (p_steps);
END;
$function$;

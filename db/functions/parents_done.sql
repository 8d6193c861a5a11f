-- Steps that just became complete or resolved: each of their children has one parent fewer
-- to wait for. One statement for the batch; children locked in key order.
CREATE OR REPLACE FUNCTION tasker.parents_done(p_steps uuid[])
 RETURNS void
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_children uuid[];
BEGIN
  SELECT array_agg(DISTINCT e.to_step_uuid) INTO v_children
    FROM tasker.workflow_step_edges e WHERE e.from_step_uuid = ANY (p_steps);
  IF v_children IS NULL THEN
    RETURN;
  END IF;
  PERFORM 1 FROM tasker.workflow_steps c
   WHERE c.step_uuid = ANY (v_children) AND c.pending_parents IS NOT NULL
   ORDER BY c.step_uuid FOR NO KEY UPDATE;
  UPDATE tasker.workflow_steps c
     SET pending_parents = c.pending_parents - d.n
    FROM (SELECT e.to_step_uuid, count(*) AS n FROM tasker.workflow_step_edges e
           WHERE e.from_step_uuid = ANY (p_steps) GROUP BY 1) d
   WHERE c.step_uuid = ANY (v_children) AND c.step_uuid = d.to_step_uuid
     AND c.pending_parents IS NOT NULL;
END;
$function$;

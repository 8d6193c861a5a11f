-- Counts edges just added (p_from[i] -> p_to[i]) into their children's parent counters.
-- Returns how many edges it counted.
CREATE OR REPLACE FUNCTION tasker.count_new_parents(p_from uuid[], p_to uuid[])
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  IF p_from IS NULL THEN
    RETURN 0;
  END IF;
  PERFORM 1 FROM tasker.workflow_steps c
   WHERE c.step_uuid = ANY (p_to) ORDER BY c.step_uuid FOR NO KEY UPDATE;
  UPDATE tasker.workflow_steps c
     SET parent_count = c.parent_count + n.total, pending_parents = c.pending_parents + n.pending
    FROM (SELECT e.t, count(*) AS total,
                 count(*) FILTER (WHERE p.state NOT IN ('complete', 'resolved_manually')) AS pending
            FROM unnest(p_from, p_to) AS e(f, t)
            JOIN tasker.workflow_steps p ON p.step_uuid = e.f
           WHERE p.step_uuid = ANY (p_from)
           GROUP BY e.t) n
   WHERE c.step_uuid = ANY (p_to) AND c.step_uuid = n.t AND c.pending_parents IS NOT NULL;
  RETURN cardinality(p_from);
END;
$function$;

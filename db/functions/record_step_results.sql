-- The results-queue path: stores the results and sends each to the orchestration results
-- queue. Returns the results refused (the claim had moved on).
CREATE OR REPLACE FUNCTION tasker.record_step_results(p_worker text, p_results jsonb)
 RETURNS SETOF uuid
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_ids    uuid[];
  v_stored uuid[];
BEGIN
  SELECT array_agg(DISTINCT (x->>'step_uuid')::uuid) INTO v_ids
    FROM jsonb_array_elements(p_results) AS x;
  SELECT array_agg(r.step_uuid) INTO v_stored
    FROM tasker.store_step_results(p_worker, p_results, true) r;
  RETURN QUERY
    SELECT id FROM unnest(v_ids) AS id WHERE NOT (id = ANY (coalesce(v_stored, ARRAY[]::uuid[])));
END;
$function$;

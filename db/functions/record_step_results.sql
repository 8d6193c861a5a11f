-- The results-queue path (`[worker] results_via = "orchestration"`): stores the results,
-- writes their durable domain events, and sends each to the orchestration results queue,
-- where the orchestrator's ResultProcessor applies them (tasker.process_step_results).
-- Returns the results refused (the claim had moved on).
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
  PERFORM tasker.send_domain_events(p_results, v_stored);
  RETURN QUERY
    SELECT id FROM unnest(v_ids) AS id WHERE NOT (id = ANY (coalesce(v_stored, ARRAY[]::uuid[])));
END;
$function$;

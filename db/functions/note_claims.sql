-- Notes in tasker.step_claims that p_worker claimed p_steps with leases until p_lease_until
-- (nothing for no steps). The row is looked at a few seconds from now, when most of its
-- steps are recorded, or when their leases run out if that is sooner.
CREATE OR REPLACE FUNCTION tasker.note_claims(p_worker text, p_steps uuid[], p_lease_until timestamp with time zone)
 RETURNS void
 LANGUAGE sql
AS $function$
  INSERT INTO tasker.step_claims (worker_id, steps, check_at)
  SELECT p_worker, p_steps, least(p_lease_until, clock_timestamp() + interval '5 seconds')
   WHERE cardinality(p_steps) > 0;
$function$;

-- Notes in tasker.step_claims that p_worker claimed p_steps with leases until p_lease_until
-- (nothing for no steps). The row is looked at a few seconds from now, when most of its
-- steps are recorded, or when their leases run out if that is sooner. PL/pgSQL rather than
-- SQL: a SQL function's statement is planned on every call (0.1 ms of each creation's).
CREATE OR REPLACE FUNCTION tasker.note_claims(p_worker text, p_steps uuid[], p_lease_until timestamp with time zone)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
  IF cardinality(p_steps) > 0 THEN
    INSERT INTO tasker.step_claims (worker_id, steps, check_at)
    VALUES (p_worker, p_steps, least(p_lease_until, clock_timestamp() + interval '5 seconds'));
  END IF;
END;
$function$;

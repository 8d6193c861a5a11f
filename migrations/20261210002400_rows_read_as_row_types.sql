-- tasker.create_task_read returns the task and its steps as rows of tasker.task_rows and
-- tasker.step_rows rather than JSON: the client reads them in the binary format, which costs
-- Postgres and the client a fraction of what writing and parsing JSON did.
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;
DROP FUNCTION IF EXISTS tasker.create_task_read(p_actor text, p_task tasker.task_spec, p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean, p_claim_worker text, p_claim_roots integer, p_lease_seconds integer, p_run_at timestamp with time zone);

-- create_task, then the task and its steps read back in the same call (one round trip for a
-- creating client), as rows of tasker.task_rows and tasker.step_rows: the client reads them
-- in the binary format, which costs both sides a fraction of what JSON did.
CREATE OR REPLACE FUNCTION tasker.create_task_read(p_actor text, p_task tasker.task_spec, p_blueprints jsonb, p_max_steps integer, p_hold_roots boolean DEFAULT false, p_claim_worker text DEFAULT NULL::text, p_claim_roots integer DEFAULT 0, p_lease_seconds integer DEFAULT 0, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS TABLE(task_uuid uuid, created boolean, state text, task tasker.task_rows, steps tasker.step_rows[], messages jsonb, claimed uuid[], lease_expires_at timestamp with time zone)
 LANGUAGE plpgsql
 ROWS 1
AS $function$
DECLARE
  v_task     uuid;
  v_created  boolean;
  v_state    text;
  v_messages jsonb;
  v_claimed  uuid[];
  v_lease    timestamptz;
BEGIN
  SELECT c.task_uuid, c.created, c.state, c.messages, c.claimed, c.lease_expires_at
    INTO v_task, v_created, v_state, v_messages, v_claimed, v_lease
    FROM tasker.create_task(p_actor, p_task, p_blueprints, p_max_steps, p_hold_roots,
           p_claim_worker, p_claim_roots, p_lease_seconds, p_run_at) AS c;
  RETURN QUERY SELECT v_task, v_created, v_state,
    (SELECT r FROM tasker.task_rows r WHERE r.task_uuid = v_task),
    (SELECT coalesce(array_agg(s ORDER BY s.position, s.name), '{}')
       FROM tasker.step_rows s WHERE s.task_uuid = v_task),
    v_messages, v_claimed, v_lease;
END;
$function$;

-- Claims the steps named by messages just read (ids and bodies in one order), committing
-- without waiting for the flush as reads and claims do. One row per message, in that
-- order: the step it names (NULL when it names none: a malformed message, for the caller to
-- set aside) and that step's claim_steps row; messages naming the same step share it.
CREATE OR REPLACE FUNCTION tasker.claim_messages(p_ids bigint[], p_msgs jsonb[], p_worker text, p_lease_seconds integer)
 RETURNS SETOF tasker.message_claim
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_named uuid[];
  v_steps uuid[];
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  IF p_ids IS NULL THEN
    RETURN;
  END IF;
  -- A step id is a hyphenated UUID. Messages come by the hundred and are nearly never
  -- malformed, so the ids shaped like one are cast all at once, and only when one of them
  -- holds a character that is not hex is each matched against the pattern: a regular
  -- expression per message cost more than the rest of reading it.
  BEGIN
    SELECT array_agg(CASE WHEN jsonb_typeof(u.m) = 'object' AND length(u.m->>'step_uuid') = 36
                           AND substr(u.m->>'step_uuid', 9, 1) = '-'
                           AND substr(u.m->>'step_uuid', 14, 1) = '-'
                           AND substr(u.m->>'step_uuid', 19, 1) = '-'
                           AND substr(u.m->>'step_uuid', 24, 1) = '-'
                          THEN (u.m->>'step_uuid')::uuid END ORDER BY u.i)
      INTO v_named
      FROM unnest(p_msgs) WITH ORDINALITY AS u(m, i);
  EXCEPTION WHEN invalid_text_representation THEN
    SELECT array_agg(CASE WHEN jsonb_typeof(u.m) = 'object'
                           AND u.m->>'step_uuid' ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                          THEN (u.m->>'step_uuid')::uuid END ORDER BY u.i)
      INTO v_named
      FROM unnest(p_msgs) WITH ORDINALITY AS u(m, i);
  END;
  SELECT array_agg(DISTINCT x) INTO v_steps FROM unnest(v_named) AS x WHERE x IS NOT NULL;
  RETURN QUERY
    SELECT u.id, u.m, u.step, CASE WHEN c.step_uuid IS NOT NULL THEN c END
      FROM unnest(p_ids, p_msgs, v_named) WITH ORDINALITY AS u(id, m, step, i)
      LEFT JOIN tasker.claim_steps(coalesce(v_steps, ARRAY[]::uuid[]), p_worker, p_lease_seconds) AS c
        ON c.step_uuid = u.step
     ORDER BY u.i;
END;
$function$;

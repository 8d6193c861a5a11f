-- The durable domain events of the results recorded (p_recorded: not those refused), written
-- to their namespace's events queue in the recording's transaction: they commit with the
-- result or not at all. The queue is the outbox; its consumers read it as any PGMQ queue. A
-- result carries its events in `events` and their namespace in `events_namespace`.
CREATE OR REPLACE FUNCTION tasker.send_domain_events(p_results jsonb, p_recorded uuid[])
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
  q record;
BEGIN
  FOR q IN
    SELECT x->>'events_namespace' AS ns, array_agg(ev ORDER BY x->>'step_uuid', i) AS msgs
      FROM jsonb_array_elements(p_results) AS x,
           jsonb_array_elements(x->'events') WITH ORDINALITY AS e(ev, i)
     WHERE jsonb_typeof(x->'events') = 'array'
       AND (x->>'step_uuid')::uuid = ANY (coalesce(p_recorded, ARRAY[]::uuid[]))
     GROUP BY 1
  LOOP
    EXECUTE format('INSERT INTO pgmq.%I (vt, message) SELECT clock_timestamp(), m FROM unnest($1) AS m',
                   'q_' || q.ns || '_domain_events')
      USING q.msgs;
  END LOOP;
END;
$function$;

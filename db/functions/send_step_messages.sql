-- Writes a batch of worker messages into a namespace's queue table in one dynamic statement
-- (the row pgmq.send_batch writes: visible now, no headers), and marks the transaction as
-- having enqueued work so the caller knows to wake that namespace's workers.
CREATE OR REPLACE FUNCTION tasker.send_step_messages(p_ns text, p_msgs jsonb[])
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
  EXECUTE format('INSERT INTO pgmq.%I (vt, message) SELECT clock_timestamp(), m FROM unnest($1) AS m',
                 'q_worker_' || p_ns || '_queue')
    USING p_msgs;
  PERFORM set_config('tasker.steps_enqueued', 'on', true);
END;
$function$;

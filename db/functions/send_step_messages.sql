-- Writes a batch of worker messages into a namespace's queue table in one dynamic statement
-- (the row pgmq.send_batch writes: visible now, no headers), and marks the transaction as
-- having enqueued work so the caller knows to wake that namespace's workers. p_visible_at:
-- the messages stay hidden until then (a scheduled task's roots).
CREATE OR REPLACE FUNCTION tasker.send_step_messages(p_ns text, p_msgs jsonb[], p_visible_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
  EXECUTE format('INSERT INTO pgmq.%I (vt, message) SELECT greatest(clock_timestamp(), $2), m FROM unnest($1) AS m',
                 'q_worker_' || p_ns || '_queue')
    USING p_msgs, p_visible_at;
  PERFORM set_config('tasker.steps_enqueued', 'on', true);
END;
$function$;

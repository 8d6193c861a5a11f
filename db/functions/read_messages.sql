-- Queue reads: pgmq.read, committed without waiting for the flush (a read lost in a crash
-- only makes the message visible again).
CREATE OR REPLACE FUNCTION tasker.read_messages(p_queue text, p_vt integer, p_qty integer)
 RETURNS TABLE(msg_id bigint, read_ct integer, enqueued_at timestamp with time zone, message jsonb)
 LANGUAGE plpgsql
AS $function$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  RETURN QUERY SELECT r.msg_id, r.read_ct, r.enqueued_at, r.message
                 FROM pgmq.read(p_queue, p_vt, p_qty) AS r;
END;
$function$;

-- Queue reads (the orchestration results queue), committed without waiting for the flush (a
-- read lost in a crash only makes the message visible again). What pgmq.read does, with the
-- picked messages updated by `msg_id = ANY`: an index condition however small the
-- statistics say the queue is, where pgmq.read's join, planned from an emptied queue's
-- statistics, walks the whole queue.
CREATE OR REPLACE FUNCTION tasker.read_messages(p_queue text, p_vt integer, p_qty integer)
 RETURNS TABLE(msg_id bigint, read_ct integer, enqueued_at timestamp with time zone, message jsonb)
 LANGUAGE plpgsql
AS $function$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  RETURN QUERY EXECUTE format(
    'WITH picked AS (
       SELECT q.msg_id FROM pgmq.%1$I q WHERE q.vt <= clock_timestamp()
        ORDER BY q.msg_id LIMIT $2 FOR UPDATE SKIP LOCKED)
     UPDATE pgmq.%1$I m SET vt = clock_timestamp() + make_interval(secs => $1),
                            read_ct = m.read_ct + 1
      WHERE m.msg_id = ANY (ARRAY(SELECT p.msg_id FROM picked p))
     RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.message', 'q_' || p_queue)
    USING p_vt, p_qty;
END;
$function$;

-- Tunes a PGMQ queue table for this engine's access pattern: no visibility-time index (reads
-- go by message id order) and fillfactor 50, so the update a read makes stays on its page.
CREATE OR REPLACE FUNCTION tasker.prepare_queue_table(p_queue text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_table text := 'q_' || p_queue;
BEGIN
  IF to_regclass(format('pgmq.%I', v_table)) IS NULL THEN
    RAISE EXCEPTION 'queue %: no table pgmq.%', p_queue, v_table
      USING ERRCODE = 'undefined_table';
  END IF;
  -- Both changes lock the table, so each runs only when it would change something.
  IF to_regclass(format('pgmq.%I', v_table || '_vt_idx')) IS NOT NULL THEN
    EXECUTE format('DROP INDEX IF EXISTS pgmq.%I', v_table || '_vt_idx');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_class c
                  WHERE c.oid = format('pgmq.%I', v_table)::regclass
                    AND 'fillfactor=50' = ANY (coalesce(c.reloptions, ARRAY[]::text[]))) THEN
    EXECUTE format('ALTER TABLE pgmq.%I SET (fillfactor = 50)', v_table);
  END IF;
END;
$function$;

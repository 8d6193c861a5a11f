-- Queue tables whose reads are HOT updates.
--
-- A worker queue message is written three times: sent (insert), read (an update of vt and
-- read_ct) and deleted with its step's result. pgmq.create gives every queue table an index
-- on vt, which no read uses: Tasker's claim statement and pgmq.read both walk the primary
-- key in msg_id order and filter on vt (EXPLAIN shows the primary-key scan). That index
-- cost every send one more index entry and made every read a non-HOT update, which adds an
-- entry to both indexes. Without it, and with room left on each page for the read's new
-- row version (fillfactor), a read touches no index at all.

CREATE FUNCTION tasker.prepare_queue_table(p_queue text) RETURNS void
LANGUAGE plpgsql AS $$
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
$$;

-- Queues made before this migration (PGMQ is installed after the migrations, so a new
-- database has none yet; Tasker prepares every queue it ensures).
DO $$
BEGIN
  IF to_regclass('pgmq.meta') IS NOT NULL THEN
    PERFORM tasker.prepare_queue_table(m.queue_name) FROM pgmq.meta m;
  END IF;
END;
$$;

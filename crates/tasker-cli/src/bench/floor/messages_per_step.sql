-- A queue message per step, as the engine sends them.
WITH m AS (
  INSERT INTO pgmq.q_floor (vt, message)
  SELECT clock_timestamp(), e || '{"namespace": "floor", "attempt": 1}'
    FROM jsonb_array_elements(':steps'::jsonb) AS e
  RETURNING msg_id
)
SELECT array_agg(msg_id)::text AS msgs FROM m \gset
COMMIT;

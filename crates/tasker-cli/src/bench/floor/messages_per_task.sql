-- One queue message per task naming its ten steps, instead of one per step.
WITH m AS (
  INSERT INTO pgmq.q_floor (vt, message)
  SELECT clock_timestamp(), jsonb_build_object('task_uuid', e->>'task_uuid', 'namespace', 'floor',
           'attempt', 1, 'steps', jsonb_agg(e - 'task_uuid'))
    FROM jsonb_array_elements(':steps'::jsonb) AS e
   GROUP BY e->>'task_uuid'
  RETURNING msg_id
)
SELECT array_agg(msg_id)::text AS msgs FROM m \gset
COMMIT;

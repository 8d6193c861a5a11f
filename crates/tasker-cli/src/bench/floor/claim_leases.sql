-- A claim that is only the messages' lease (PGMQ's visibility timeout): no step row written.
BEGIN;
SET LOCAL synchronous_commit = off;
UPDATE pgmq.q_floor SET vt = now() + interval '5 minutes', read_ct = read_ct + 1
 WHERE msg_id = ANY (':msgs'::bigint[]);
COMMIT;

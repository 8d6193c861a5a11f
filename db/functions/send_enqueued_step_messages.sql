-- Sends a worker message for each of these steps that is enqueued, in its namespace's
-- queue: for steps released from a claim, whose message the claim deleted (a claimed step
-- has none). Returns the queues written to, for the caller to wake.
CREATE OR REPLACE FUNCTION tasker.send_enqueued_step_messages(p_steps uuid[])
 RETURNS text[]
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
AS $function$
DECLARE
  q        record;
  v_queues text[] := ARRAY[]::text[];
BEGIN
  FOR q IN SELECT n.name AS ns,
                  array_agg(jsonb_build_object('task_uuid', s.task_uuid, 'step_uuid', s.step_uuid,
                                               'step_name', s.name, 'namespace', n.name,
                                               'attempt', s.attempts + 1)
                            ORDER BY s.step_uuid) AS msgs
             FROM tasker.workflow_steps s
             JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
             JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
             JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
            WHERE s.step_uuid = ANY (p_steps) AND s.state = 'enqueued'
            GROUP BY n.name
            ORDER BY n.name LOOP
    PERFORM tasker.send_step_messages(q.ns, q.msgs);
    v_queues := v_queues || ('worker_' || q.ns || '_queue');
  END LOOP;
  RETURN v_queues;
END;
$function$;

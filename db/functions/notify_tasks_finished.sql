-- Wakes the waiters of the given tasks that are in one of p_states (their terminal states).
-- A function so its statement is planned once per connection (force_generic_plan).
CREATE OR REPLACE FUNCTION tasker.notify_tasks_finished(p_channel text, p_tasks uuid[], p_states text[])
 RETURNS void
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
BEGIN
  PERFORM pg_notify(p_channel, t.task_uuid::text)
     FROM tasker.tasks t
    WHERE t.task_uuid = ANY (p_tasks) AND t.state = ANY (p_states);
END;
$function$;

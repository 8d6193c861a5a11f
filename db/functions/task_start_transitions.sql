-- The transitions of a task that starts with its steps enqueued: pending -> initializing ->
-- enqueuing_steps -> steps_in_process, as the first entries of its list.
CREATE OR REPLACE FUNCTION tasker.task_start_transitions(p_actor text)
 RETURNS tasker.transition[]
 LANGUAGE sql
AS $function$
  SELECT ARRAY[tasker.transition_entry(NULL, 'pending', p_actor),
               tasker.transition_entry('pending', 'initializing', p_actor),
               tasker.transition_entry('initializing', 'enqueuing_steps', p_actor),
               tasker.transition_entry('enqueuing_steps', 'steps_in_process', p_actor,
                                       '{"execution_status": "processing"}')]
$function$;

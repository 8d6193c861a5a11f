-- A started task's root messages, as its workers read them.
CREATE OR REPLACE FUNCTION tasker.root_messages(p_task uuid, p_ns text, p_steps uuid[], p_names text[])
 RETURNS jsonb[]
 LANGUAGE sql
 STABLE
AS $function$
  SELECT array_agg(jsonb_build_object('task_uuid', p_task, 'step_uuid', u.step,
                                      'step_name', u.name, 'namespace', p_ns, 'attempt', 1))
    FROM unnest(p_steps, p_names) AS u(step, name)
$function$;

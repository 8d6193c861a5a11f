-- The namespace a task's steps are queued under. plpgsql, not sql: a SQL function with a
-- FROM clause is not inlined and would be planned again in every statement that calls it.
CREATE OR REPLACE FUNCTION tasker.task_namespace(p_task uuid)
 RETURNS text
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
  RETURN (SELECT n.name
            FROM tasker.tasks t
            JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
            JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
           WHERE t.task_uuid = p_task);
END;
$function$;

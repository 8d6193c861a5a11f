-- tasker.task_with_steps read the rows back for p_read NULL, which create_task's other uses
-- of it treat as false
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;

-- A task's row and its steps as a creating client returns them (tasker.create_task with
-- p_read), read back: for the creations that cannot build them from what they inserted (a
-- key already taken, a dynamic task, a task started by its first finalization). Nothing
-- (NULLs) without p_read (false or NULL, as create_task's own uses of it read NULL).
CREATE OR REPLACE FUNCTION tasker.task_with_steps(p_task uuid, p_read boolean)
 RETURNS TABLE(task tasker.task_rows, steps tasker.step_rows[])
 LANGUAGE plpgsql
 ROWS 1
AS $function$
BEGIN
  IF NOT coalesce(p_read, false) THEN
    RETURN QUERY SELECT NULL::tasker.task_rows, NULL::tasker.step_rows[];
    RETURN;
  END IF;
  RETURN QUERY SELECT (SELECT r FROM tasker.task_rows r WHERE r.task_uuid = p_task),
    (SELECT coalesce(array_agg(s ORDER BY s.position, s.name), '{}')
       FROM tasker.step_rows s WHERE s.task_uuid = p_task);
END;
$function$;

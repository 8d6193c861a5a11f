-- enqueue_ready_steps and task_has_permanent_failure have had no caller since finalize_task
-- enqueues through enqueue_steps_of.
-- Written by bin/sql-migration from db/ (docs/sql.md).

SET LOCAL check_function_bodies = off;
DROP FUNCTION IF EXISTS tasker.enqueue_ready_steps(p_task uuid, p_actor text);
DROP FUNCTION IF EXISTS tasker.task_has_permanent_failure(p_task uuid);

-- The recording's end: the tasks, all of whose steps it completed, complete.
UPDATE tasker.tasks t
   SET state = 'complete', completed_at = now(), updated_at = now(),
       transitions = t.transitions || tasker.transition_entry('steps_in_process', 'complete', 'floor')
 WHERE t.task_uuid = ANY (':tasks'::uuid[]);
COMMIT;

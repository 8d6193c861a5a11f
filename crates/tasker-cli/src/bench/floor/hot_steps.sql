-- The steps table as it would be if a step's updates could be HOT (heap-only: the new row
-- version on the same page, no new index entries): no index whose columns or predicate a
-- claim or a recording changes (the partial indexes on the step's state, and on who
-- recorded it), and room left on each page for the new versions.
DROP INDEX tasker.workflow_steps_retry_idx, tasker.workflow_steps_failed_idx,
           tasker.workflow_steps_claim_owner_idx, tasker.workflow_steps_enqueued_idx,
           tasker.workflow_steps_recorded_idx;
ALTER TABLE tasker.workflow_steps SET (fillfactor = 40);

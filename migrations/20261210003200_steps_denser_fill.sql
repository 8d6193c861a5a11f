-- workflow_steps at fillfactor 60 instead of 40: about five steps a page instead of four, so a
-- removal reads, logs and writes back a quarter fewer pages for the same tasks, and a year's
-- history takes a quarter less room; a fifth fewer of the steps' updates stay heap-only
-- (docs/performance.md, twenty-third part). Pages already written keep their fill; the
-- setting takes a brief lock that ordinary reads and writes do not wait for.
ALTER TABLE tasker.workflow_steps SET (fillfactor = 60);

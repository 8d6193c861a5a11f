-- Ten fanout tasks of ten no-op steps through tasker.create_tasks, as the creation batcher
-- calls it (tasks, steps, transitions and root messages in one statement).
SELECT count(*) FROM tasker.create_tasks('floor', 'floor',
  ARRAY(SELECT ROW(':nt'::uuid, '{}'::jsonb, NULL::text, 'floor',
                   ARRAY(SELECT ROW('noop_' || i, 'Examples::Noop', '{}'::jsonb, 3, true,
                                    'exponential', 1000, 30000, NULL::integer, '[]'::jsonb,
                                    ARRAY[]::text[])::tasker.step_spec
                           FROM generate_series(0, 9) AS i))::tasker.task_spec
          FROM generate_series(1, 10)));

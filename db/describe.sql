-- Everything in the `tasker` schema that a migration can change, one row per object:
-- (kind, name, definition), in a stable order. Two databases with the same rows have the
-- same schema and functions. Used by the test `sql_source` and by bin/sql-migration.
SELECT kind, name, definition FROM (
  SELECT 'function' AS kind,
         p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS name,
         pg_get_functiondef(p.oid) AS definition
    FROM pg_proc p
   WHERE p.pronamespace = 'tasker'::regnamespace
  UNION ALL
  SELECT 'relation', c.relname,
         c.relkind::text || ' ' || c.relpersistence::text || ' '
           || coalesce(array_to_string(c.reloptions, ','), '')
    FROM pg_class c
   WHERE c.relnamespace = 'tasker'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'c')
  UNION ALL
  -- Columns in their order (attnum gaps left by dropped columns do not count).
  SELECT 'column', c.relname || '.' || lpad(row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum)::text, 3, '0'),
         a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
           || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.relnamespace = 'tasker'::regnamespace AND c.relkind IN ('r', 'p', 'c')
     AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'constraint', c.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
    FROM pg_constraint k
    JOIN pg_class c ON c.oid = k.conrelid
   WHERE c.relnamespace = 'tasker'::regnamespace
  UNION ALL
  SELECT 'index', i.indexname, i.indexdef
    FROM pg_indexes i
   WHERE i.schemaname = 'tasker'
  UNION ALL
  SELECT 'view', v.viewname, v.definition
    FROM pg_views v
   WHERE v.schemaname = 'tasker'
  UNION ALL
  SELECT 'trigger', c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
    FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid
   WHERE c.relnamespace = 'tasker'::regnamespace AND NOT t.tgisinternal
  UNION ALL
  SELECT 'sequence', s.sequencename,
         s.data_type::text || ' ' || s.start_value || ' ' || s.increment_by || ' '
           || s.cache_size || ' ' || s.cycle
    FROM pg_sequences s
   WHERE s.schemaname = 'tasker'
  UNION ALL
  -- The state machines are data the functions enforce.
  SELECT 'row', 'task_state_transitions', from_state || ' -> ' || to_state
    FROM tasker.task_state_transitions
  UNION ALL
  SELECT 'row', 'step_state_transitions', from_state || ' -> ' || to_state
    FROM tasker.step_state_transitions
) AS objects
ORDER BY kind, name, definition

-- Everything in the `tasker` and `tasker_archive` schemas that a migration can change, one
-- row per object: (kind, name, definition), in a stable order; tasker_archive's names are
-- qualified. Two databases with the same rows have the same schema and functions. Used by
-- the test `sql_source` and by bin/sql-migration.
WITH schemas AS (
  SELECT n.oid, n.nspname, CASE WHEN n.nspname = 'tasker' THEN '' ELSE n.nspname || '.' END AS prefix
    FROM pg_namespace n
   WHERE n.nspname IN ('tasker', 'tasker_archive')
)
SELECT kind, name, definition FROM (
  SELECT 'function' AS kind,
         p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS name,
         pg_get_functiondef(p.oid) AS definition
    FROM pg_proc p
   WHERE p.pronamespace = 'tasker'::regnamespace
  UNION ALL
  SELECT 'relation', ns.prefix || c.relname,
         c.relkind::text || ' ' || c.relpersistence::text || ' '
           || coalesce(array_to_string(c.reloptions, ','), '')
    FROM pg_class c
    JOIN schemas ns ON ns.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'c')
  UNION ALL
  -- Columns in their order (attnum gaps left by dropped columns do not count).
  SELECT 'column', ns.prefix || c.relname || '.' || lpad(row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum)::text, 3, '0'),
         a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
           || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN schemas ns ON ns.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.relkind IN ('r', 'p', 'c')
     AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'constraint', ns.prefix || c.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
    FROM pg_constraint k
    JOIN pg_class c ON c.oid = k.conrelid
    JOIN schemas ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT 'index', ns.prefix || i.indexname, i.indexdef
    FROM pg_indexes i
    JOIN schemas ns ON ns.nspname = i.schemaname
  UNION ALL
  SELECT 'view', ns.prefix || v.viewname, v.definition
    FROM pg_views v
    JOIN schemas ns ON ns.nspname = v.schemaname
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

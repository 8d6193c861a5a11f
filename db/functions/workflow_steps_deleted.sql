-- Steps deleted (their task removed): their audit log rows go with them, as a foreign
-- key's cascade would (the table has none: see db/schema.sql).
CREATE OR REPLACE FUNCTION tasker.workflow_steps_deleted()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
  DELETE FROM tasker.step_result_audit_log a
   WHERE a.step_uuid IN (SELECT g.step_uuid FROM gone g);
  RETURN NULL;
END;
$function$;

CREATE OR REPLACE TRIGGER workflow_steps_deleted
  AFTER DELETE ON tasker.workflow_steps REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION tasker.workflow_steps_deleted();

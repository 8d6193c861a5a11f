-- The error recorded for a step whose decision or batch outcome is refused: permanent.
CREATE OR REPLACE FUNCTION tasker.outcome_failure(p_type text, p_message text)
 RETURNS jsonb
 LANGUAGE sql
 IMMUTABLE
AS $function$
  SELECT jsonb_build_object('message', p_message, 'error_type', p_type, 'retryable', false)
$function$;

-- The delay before a failed step's next attempt: the handler's retry_after hint (capped) wins,
-- else the step's backoff (none / linear / exponential, capped) plus random jitter.
CREATE OR REPLACE FUNCTION tasker.retry_delay_ms(p_backoff text, p_base_ms bigint, p_max_ms bigint, p_attempts integer, p_error jsonb, p_jitter_ratio double precision, p_max_retry_after_ms bigint)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_delay bigint;
BEGIN
  IF p_error ? 'retry_after_ms' AND jsonb_typeof(p_error->'retry_after_ms') = 'number' THEN
    RETURN least((p_error->>'retry_after_ms')::bigint, p_max_retry_after_ms);
  END IF;
  v_delay := CASE p_backoff
    WHEN 'none' THEN 0
    WHEN 'linear' THEN p_base_ms * greatest(p_attempts, 1)
    ELSE p_base_ms * power(2::numeric, least(greatest(p_attempts, 1) - 1, 40))::bigint
  END;
  v_delay := least(v_delay, p_max_ms);
  RETURN v_delay + floor(random() * v_delay * p_jitter_ratio)::bigint;
END;
$function$;

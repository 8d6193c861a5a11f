-- Graceful shutdown: a worker hands back steps it claimed but will not finish. The attempt
-- is not counted (no result was recorded), and each step gets a new queue message (its
-- claim deleted the old one) so another worker picks it up. Returns the queues written to.
CREATE OR REPLACE FUNCTION tasker.release_steps(p_steps uuid[], p_worker text)
 RETURNS text[]
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
  v_id       uuid;
  v_released uuid[] := ARRAY[]::uuid[];
BEGIN
  FOR v_id IN SELECT DISTINCT x FROM unnest(p_steps) AS x ORDER BY x LOOP
    IF EXISTS (SELECT 1 FROM tasker.workflow_steps
                WHERE step_uuid = v_id AND state = 'in_progress' AND claim_owner = p_worker
                FOR NO KEY UPDATE) THEN
      PERFORM tasker.transition_step(v_id, 'in_progress', 'enqueued', p_worker,
                                     jsonb_build_object('reason', 'worker_shutdown'));
      UPDATE tasker.workflow_steps
         SET attempts = greatest(attempts - 1, 0), claim_owner = NULL, lease_expires_at = NULL,
             enqueued_at = clock_timestamp()
       WHERE step_uuid = v_id;
      v_released := v_released || v_id;
    END IF;
  END LOOP;
  RETURN tasker.send_enqueued_step_messages(v_released);
END;
$function$;

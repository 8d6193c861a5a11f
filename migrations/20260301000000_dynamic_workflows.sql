-- Dynamic workflows: decision steps choose which of their dependents exist, batchable steps
-- create one copy of their batch_worker step per batch, and deferred_convergence steps wait
-- for whichever of their dependencies were created.
--
-- A dynamic task keeps its template's steps as blueprints; only the steps that are certain
-- are created when it starts. A decision's or batch's outcome is stored on its step and
-- applied (tasker.expand_steps) in the transaction that records the step's success, so it
-- happens exactly once: recording only succeeds for the claim holder's current attempt, and
-- UNIQUE (task_uuid, name) on steps and the edges' primary key make every insert idempotent.

ALTER TABLE tasker.workflow_steps
  ADD COLUMN step_type text NOT NULL DEFAULT 'standard'
    CHECK (step_type IN ('standard', 'decision', 'batchable', 'batch_worker', 'deferred_convergence')),
  -- A batch copy's batch_worker step (process_batch for process_batch_007).
  ADD COLUMN template_step text,
  -- The applied outcome of a decision ({"next_steps": [...]}) or batchable ({"batches": [...]}).
  ADD COLUMN outcome jsonb,
  -- Parents (edges in) and parents not yet complete or resolved, kept as edges are added and
  -- parents finish, for the steps of dynamic tasks: a convergence step over a thousand batch
  -- workers is then checked for readiness without reading its thousand parents each time a
  -- result lands. NULL (fixed-DAG tasks) means readiness counts the edges.
  ADD COLUMN parent_count integer,
  ADD COLUMN pending_parents integer;

-- A gate edge makes a convergence step wait for a decision or batchable step whose outcome
-- may still create some of its dependencies; it carries no result to the convergence step.
ALTER TABLE tasker.workflow_step_edges ADD COLUMN gate boolean NOT NULL DEFAULT false;

-- The step ceiling a dynamic task was created with ([orchestration] max_steps_per_task).
ALTER TABLE tasker.tasks ADD COLUMN max_steps integer;

-- A dynamic task's template steps, resolved (retry defaults, environment overrides), from
-- which its steps are created as outcomes arrive. gate: the decision or batchable step whose
-- outcome decides whether this step is created (TaskTemplate::gate_of).
CREATE TABLE tasker.step_blueprints (
  task_uuid              uuid NOT NULL REFERENCES tasker.tasks ON DELETE CASCADE,
  name                   text NOT NULL,
  position               integer NOT NULL,
  step_type              text NOT NULL,
  handler_callable       text NOT NULL,
  handler_initialization jsonb NOT NULL,
  max_attempts           integer NOT NULL,
  retryable              boolean NOT NULL,
  backoff                text NOT NULL,
  backoff_base_ms        bigint NOT NULL,
  max_backoff_ms         bigint NOT NULL,
  timeout_seconds        integer,
  publishes_events       jsonb NOT NULL,
  dependencies           text[] NOT NULL,
  gate                   text,
  batch_worker           text,
  max_workers            integer,
  PRIMARY KEY (task_uuid, name)
);

-- Counts edges just added (p_from[i] -> p_to[i]) into their children's parent counters.
-- Returns how many edges it counted.
CREATE FUNCTION tasker.count_new_parents(p_from uuid[], p_to uuid[]) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
  IF p_from IS NULL THEN
    RETURN 0;
  END IF;
  PERFORM 1 FROM tasker.workflow_steps c
   WHERE c.step_uuid = ANY (p_to) ORDER BY c.step_uuid FOR NO KEY UPDATE;
  UPDATE tasker.workflow_steps c
     SET parent_count = c.parent_count + n.total, pending_parents = c.pending_parents + n.pending
    FROM (SELECT e.t, count(*) AS total,
                 count(*) FILTER (WHERE p.state NOT IN ('complete', 'resolved_manually')) AS pending
            FROM unnest(p_from, p_to) AS e(f, t)
            JOIN tasker.workflow_steps p ON p.step_uuid = e.f
           WHERE p.step_uuid = ANY (p_from)
           GROUP BY e.t) n
   WHERE c.step_uuid = ANY (p_to) AND c.step_uuid = n.t AND c.pending_parents IS NOT NULL;
  RETURN cardinality(p_from);
END;
$$;

-- Steps that just became complete or resolved: each of their children has one parent fewer
-- to wait for. One statement for the batch; children locked in key order.
CREATE FUNCTION tasker.parents_done(p_steps uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  v_children uuid[];
BEGIN
  SELECT array_agg(DISTINCT e.to_step_uuid) INTO v_children
    FROM tasker.workflow_step_edges e WHERE e.from_step_uuid = ANY (p_steps);
  IF v_children IS NULL THEN
    RETURN;
  END IF;
  PERFORM 1 FROM tasker.workflow_steps c
   WHERE c.step_uuid = ANY (v_children) AND c.pending_parents IS NOT NULL
   ORDER BY c.step_uuid FOR NO KEY UPDATE;
  UPDATE tasker.workflow_steps c
     SET pending_parents = c.pending_parents - d.n
    FROM (SELECT e.to_step_uuid, count(*) AS n FROM tasker.workflow_step_edges e
           WHERE e.from_step_uuid = ANY (p_steps) GROUP BY 1) d
   WHERE c.step_uuid = ANY (v_children) AND c.step_uuid = d.to_step_uuid
     AND c.pending_parents IS NOT NULL;
END;
$$;

-- As before, but a step with counters is ready from them alone; only steps without (tasks
-- with a fixed DAG) count their edges, and then only theirs.
CREATE OR REPLACE FUNCTION tasker.get_step_readiness_status(p_task uuid)
RETURNS TABLE (
  step_uuid uuid,
  task_uuid uuid,
  name text,
  current_state text,
  dependencies_satisfied boolean,
  retry_eligible boolean,
  ready_for_execution boolean,
  attempts integer,
  max_attempts integer,
  retryable boolean,
  next_retry_at timestamptz,
  total_parents integer,
  completed_parents integer
) LANGUAGE sql STABLE AS $$
  SELECT s.step_uuid,
         s.task_uuid,
         s.name,
         s.state,
         p.total = p.done,
         s.attempts < s.max_attempts AND (s.retryable OR s.attempts = 0),
         s.state IN ('pending', 'waiting_for_retry')
           AND p.total = p.done
           AND s.attempts < s.max_attempts
           AND (s.retryable OR s.attempts = 0)
           AND (s.next_retry_at IS NULL OR s.next_retry_at <= clock_timestamp()),
         s.attempts,
         s.max_attempts,
         s.retryable,
         s.next_retry_at,
         p.total::integer,
         p.done::integer
    FROM tasker.workflow_steps s
    CROSS JOIN LATERAL (
      SELECT coalesce(s.parent_count, count(*)) AS total,
             coalesce(s.parent_count - s.pending_parents,
                      count(*) FILTER (WHERE ps.state IN ('complete', 'resolved_manually'))) AS done
        FROM tasker.workflow_step_edges e
        JOIN tasker.workflow_steps ps ON ps.step_uuid = e.from_step_uuid
       WHERE e.to_step_uuid = s.step_uuid AND s.pending_parents IS NULL
    ) p
   WHERE s.task_uuid = p_task
   ORDER BY s.position
$$;

-- Creates every step of a dynamic task that should exist now and is missing, with its
-- edges and first transition: steps whose dependencies all exist (and whose decision
-- parents chose them), and convergence steps with an edge from each created dependency (a
-- batch worker's copies) and a gate edge from the nearest created decision or batchable step
-- whose outcome may still create a missing one. Repeated until nothing more is created (a
-- chosen branch's own descendants, steps after a convergence). Idempotent. Loops run over
-- the template's steps, never over batch copies. Returns the number of steps created.
CREATE FUNCTION tasker.expand_steps(p_task uuid, p_actor text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  v_all   uuid[] := ARRAY[]::uuid[];
  v_round uuid[];
  v_ids   uuid[];
  v_deps  uuid[];
  v_gates uuid[];
  v_conv  uuid;
  v_edges integer;
  c       record;
  d       text;
  g       text;
  gs      record;
BEGIN
  -- The task row first, as result processing and operator actions take it: parents cannot
  -- finish (and be counted down) between reading their states and counting the edges added.
  PERFORM 1 FROM tasker.tasks WHERE task_uuid = p_task FOR NO KEY UPDATE;
  LOOP
    v_round := ARRAY[]::uuid[];
    LOOP
      WITH created AS (
        INSERT INTO tasker.workflow_steps
          (task_uuid, name, position, step_type, handler_callable, handler_initialization,
           max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, timeout_seconds,
           publishes_events, parent_count, pending_parents)
        SELECT p_task, b.name, b.position, b.step_type, b.handler_callable,
               b.handler_initialization, b.max_attempts, b.retryable, b.backoff,
               b.backoff_base_ms, b.max_backoff_ms, b.timeout_seconds, b.publishes_events, 0, 0
          FROM tasker.step_blueprints b
         WHERE b.task_uuid = p_task
           AND b.step_type NOT IN ('batch_worker', 'deferred_convergence')
           AND NOT EXISTS (SELECT 1 FROM tasker.workflow_steps s
                            WHERE s.task_uuid = p_task AND s.name = b.name)
           AND NOT EXISTS (
             SELECT 1 FROM unnest(b.dependencies) AS dep(name)
               LEFT JOIN tasker.workflow_steps ps ON ps.task_uuid = p_task AND ps.name = dep.name
              WHERE ps.step_uuid IS NULL
                 OR (ps.step_type = 'decision'
                     AND NOT coalesce(ps.outcome->'next_steps' ? b.name, false)))
         ORDER BY b.position
        ON CONFLICT (task_uuid, name) DO NOTHING
        RETURNING step_uuid
      )
      SELECT array_agg(step_uuid) INTO v_ids FROM created;
      EXIT WHEN v_ids IS NULL;
      v_round := v_round || v_ids;
    END LOOP;
    IF cardinality(v_round) > 0 THEN
      WITH added AS (
        INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
        SELECT p_task, ps.step_uuid, s.step_uuid
          FROM tasker.workflow_steps s
          JOIN tasker.step_blueprints b ON b.task_uuid = p_task AND b.name = s.name
          CROSS JOIN unnest(b.dependencies) AS dep(name)
          JOIN tasker.workflow_steps ps ON ps.task_uuid = p_task AND ps.name = dep.name
         WHERE s.step_uuid = ANY (v_round)
        ON CONFLICT DO NOTHING
        RETURNING from_step_uuid, to_step_uuid
      )
      SELECT tasker.count_new_parents(array_agg(from_step_uuid), array_agg(to_step_uuid))
        INTO v_edges FROM added;
    END IF;

    FOR c IN SELECT b.* FROM tasker.step_blueprints b
              WHERE b.task_uuid = p_task AND b.step_type = 'deferred_convergence'
              ORDER BY b.position LOOP
      v_deps := ARRAY[]::uuid[];
      v_gates := ARRAY[]::uuid[];
      FOREACH d IN ARRAY c.dependencies LOOP
        SELECT array_agg(s.step_uuid) INTO v_ids FROM tasker.workflow_steps s
         WHERE s.task_uuid = p_task AND (s.name = d OR s.template_step = d);
        IF v_ids IS NOT NULL THEN
          v_deps := v_deps || v_ids;
          CONTINUE;
        END IF;
        -- Not created: wait for the nearest created gate that has not decided yet. A gate
        -- that has decided without creating it means it never will be.
        g := d;
        LOOP
          SELECT b.gate INTO g FROM tasker.step_blueprints b
           WHERE b.task_uuid = p_task AND b.name = g;
          EXIT WHEN g IS NULL;
          SELECT s.step_uuid, s.outcome INTO gs FROM tasker.workflow_steps s
           WHERE s.task_uuid = p_task AND s.name = g;
          IF FOUND THEN
            IF gs.outcome IS NULL THEN
              v_gates := v_gates || gs.step_uuid;
            END IF;
            EXIT;
          END IF;
        END LOOP;
      END LOOP;
      SELECT s.step_uuid INTO v_conv FROM tasker.workflow_steps s
       WHERE s.task_uuid = p_task AND s.name = c.name;
      IF v_conv IS NULL THEN
        -- Created once anything it waits for exists.
        CONTINUE WHEN cardinality(v_deps) = 0 AND cardinality(v_gates) = 0;
        INSERT INTO tasker.workflow_steps
          (task_uuid, name, position, step_type, handler_callable, handler_initialization,
           max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, timeout_seconds,
           publishes_events, parent_count, pending_parents)
        VALUES (p_task, c.name, c.position, c.step_type, c.handler_callable,
                c.handler_initialization, c.max_attempts, c.retryable, c.backoff,
                c.backoff_base_ms, c.max_backoff_ms, c.timeout_seconds, c.publishes_events, 0, 0)
        ON CONFLICT (task_uuid, name) DO NOTHING
        RETURNING step_uuid INTO v_conv;
        CONTINUE WHEN v_conv IS NULL;
        v_round := v_round || v_conv;
      END IF;
      WITH added AS (
        INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid, gate)
        SELECT p_task, f, v_conv, false FROM unnest(v_deps) AS f
        UNION ALL
        SELECT p_task, f, v_conv, true FROM unnest(v_gates) AS f
         WHERE NOT (f = ANY (v_deps))
        ON CONFLICT DO NOTHING
        RETURNING from_step_uuid, to_step_uuid
      )
      SELECT tasker.count_new_parents(array_agg(from_step_uuid), array_agg(to_step_uuid))
        INTO v_edges FROM added;
    END LOOP;

    EXIT WHEN cardinality(v_round) = 0;
    v_all := v_all || v_round;
  END LOOP;

  IF cardinality(v_all) > 0 THEN
    INSERT INTO tasker.workflow_step_transitions
      (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
    SELECT id, p_task, NULL, 'pending', 0, true, p_actor, '{"created_by": "expand_steps"}'::jsonb
      FROM unnest(v_all) AS id;
  END IF;
  RETURN cardinality(v_all);
END;
$$;

-- Stores a new dynamic task's blueprints (p_blueprints: [{name, position, step_type,
-- handler_callable, handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
-- max_backoff_ms, timeout_seconds, publishes_events, dependencies, gate, batch_worker,
-- max_workers}]) and creates the steps that are certain. Returns the number created.
CREATE FUNCTION tasker.create_dynamic_steps(
  p_task uuid, p_blueprints jsonb, p_max_steps integer, p_actor text
) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  UPDATE tasker.tasks SET max_steps = p_max_steps WHERE task_uuid = p_task;
  INSERT INTO tasker.step_blueprints
    (task_uuid, name, position, step_type, handler_callable, handler_initialization,
     max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, timeout_seconds,
     publishes_events, dependencies, gate, batch_worker, max_workers)
  SELECT p_task, b.name, b.position, b.step_type, b.handler_callable,
         coalesce(b.handler_initialization, '{}'::jsonb), b.max_attempts, b.retryable, b.backoff,
         b.backoff_base_ms, b.max_backoff_ms, b.timeout_seconds,
         coalesce(b.publishes_events, '[]'::jsonb),
         ARRAY(SELECT jsonb_array_elements_text(coalesce(b.dependencies, '[]'::jsonb))),
         b.gate, b.batch_worker, b.max_workers
    FROM jsonb_to_recordset(p_blueprints) AS b(
      name text, position integer, step_type text, handler_callable text,
      handler_initialization jsonb, max_attempts integer, retryable boolean, backoff text,
      backoff_base_ms bigint, max_backoff_ms bigint, timeout_seconds integer,
      publishes_events jsonb, dependencies jsonb, gate text, batch_worker text,
      max_workers integer);
  RETURN tasker.expand_steps(p_task, p_actor);
END;
$$;

-- What is wrong with a successful step's outcome, as the error recorded in its place, or
-- NULL when it may be applied. Permanent failures: the same handler would say it again.
CREATE FUNCTION tasker.outcome_error(p_task uuid, p_step text, p_type text, p_outcome jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_outcome jsonb := CASE WHEN jsonb_typeof(p_outcome) = 'object' THEN p_outcome END;
  v_kind    text;
  v_list    jsonb;
  v_bad     jsonb;
  v_index   bigint;
  v_bp      record;
  v_choices text;
  v_room    bigint;
BEGIN
  v_kind := CASE WHEN v_outcome ? 'batches' OR (v_outcome IS NULL AND p_type = 'batchable')
                 THEN 'invalid_batch' ELSE 'invalid_decision' END;
  IF v_outcome IS NULL THEN
    IF p_type = 'decision' THEN
      RETURN tasker.outcome_failure(v_kind, format(
        'decision step ''%s'' returned no next_steps (return [] to choose none)', p_step));
    ELSIF p_type = 'batchable' THEN
      RETURN tasker.outcome_failure(v_kind, format(
        'batchable step ''%s'' returned no batches (return [] for none)', p_step));
    ELSIF p_outcome IS NULL OR jsonb_typeof(p_outcome) = 'null' THEN
      RETURN NULL;
    END IF;
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'': malformed outcome %s', p_step, left(p_outcome::text, 200)));
  END IF;
  IF (SELECT count(*) FROM jsonb_object_keys(v_outcome)) <> 1
     OR NOT (v_outcome ? 'next_steps' OR v_outcome ? 'batches') THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'': malformed outcome %s (expected next_steps or batches)', p_step,
      left(v_outcome::text, 200)));
  END IF;
  IF v_outcome ? 'next_steps' AND p_type <> 'decision' THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'' is %s: only a decision step may return next_steps (got %s)', p_step, p_type,
      left((v_outcome->'next_steps')::text, 200)));
  END IF;
  IF v_outcome ? 'batches' AND p_type <> 'batchable' THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'step ''%s'' is %s: only a batchable step may return batches', p_step, p_type));
  END IF;

  IF p_type = 'decision' THEN
    v_list := v_outcome->'next_steps';
    IF jsonb_typeof(v_list) <> 'array' THEN
      RETURN tasker.outcome_failure(v_kind, format(
        'decision step ''%s'': next_steps must be an array of step names, got %s', p_step,
        left(v_list::text, 200)));
    END IF;
    SELECT e INTO v_bad FROM jsonb_array_elements(v_list) AS e
     WHERE jsonb_typeof(e) <> 'string'
        OR NOT EXISTS (SELECT 1 FROM tasker.step_blueprints b
                        WHERE b.task_uuid = p_task AND b.name = e #>> '{}'
                          AND p_step = ANY (b.dependencies))
     LIMIT 1;
    IF FOUND THEN
      SELECT string_agg(b.name, ', ' ORDER BY b.position) INTO v_choices
        FROM tasker.step_blueprints b
       WHERE b.task_uuid = p_task AND p_step = ANY (b.dependencies);
      RETURN tasker.outcome_failure(v_kind, format(
        'decision step ''%s'' chose %s, which is not one of its direct dependents (%s)',
        p_step, left(v_bad::text, 200), v_choices));
    END IF;
    RETURN NULL;
  END IF;

  v_list := v_outcome->'batches';
  IF jsonb_typeof(v_list) <> 'array' THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'': batches must be an array of objects, got %s', p_step,
      left(v_list::text, 200)));
  END IF;
  SELECT b.max_workers, b.batch_worker INTO v_bp FROM tasker.step_blueprints b
   WHERE b.task_uuid = p_task AND b.name = p_step;
  IF jsonb_array_length(v_list) > v_bp.max_workers THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'' returned %s batches, more than batch.max_workers (%s)', p_step,
      jsonb_array_length(v_list), v_bp.max_workers));
  END IF;
  SELECT e.value, e.i - 1 INTO v_bad, v_index
    FROM jsonb_array_elements(v_list) WITH ORDINALITY AS e(value, i)
   WHERE jsonb_typeof(e.value) <> 'object' LIMIT 1;
  IF FOUND THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'': batches[%s] is %s, not an object', p_step, v_index,
      left(v_bad::text, 200)));
  END IF;
  -- Room left under the task's ceiling, keeping enough for every template step still to
  -- come, so a later decision can never be the one that passes it.
  SELECT t.max_steps
         - (SELECT count(*) FROM tasker.workflow_steps s WHERE s.task_uuid = p_task)
         - (SELECT count(*) FROM tasker.step_blueprints b
             WHERE b.task_uuid = p_task AND b.step_type <> 'batch_worker'
               AND NOT EXISTS (SELECT 1 FROM tasker.workflow_steps s
                                WHERE s.task_uuid = p_task AND s.name = b.name))
    INTO v_room
    FROM tasker.tasks t WHERE t.task_uuid = p_task;
  IF v_room IS NOT NULL AND jsonb_array_length(v_list) > v_room THEN
    RETURN tasker.outcome_failure(v_kind, format(
      'batchable step ''%s'' returned %s batches, but the task has room for %s more steps (orchestration.max_steps_per_task)',
      p_step, jsonb_array_length(v_list), greatest(v_room, 0)));
  END IF;
  RETURN NULL;
END;
$$;

CREATE FUNCTION tasker.outcome_failure(p_type text, p_message text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object('message', p_message, 'error_type', p_type, 'retryable', false)
$$;

-- Creates one copy of the batch_worker step per batch of each given batchable step (their
-- outcomes already stored), in one statement however many batches: named <worker>_000,
-- _001, ... in batch order, each with its batch as inputs.batch, an edge from the batchable
-- step and a first transition.
CREATE FUNCTION tasker.create_batch_workers(p_steps uuid[], p_actor text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  v_n integer;
BEGIN
  WITH copies AS (
    INSERT INTO tasker.workflow_steps
      (task_uuid, name, position, step_type, template_step, handler_callable,
       handler_initialization, max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms,
       timeout_seconds, publishes_events, inputs, parent_count, pending_parents)
    SELECT s.task_uuid,
           w.name || '_' || lpad((o.i - 1)::text, greatest(3, length((o.i - 1)::text)), '0'),
           w.position, 'batch_worker', w.name, w.handler_callable, w.handler_initialization,
           w.max_attempts, w.retryable, w.backoff, w.backoff_base_ms, w.max_backoff_ms,
           w.timeout_seconds, w.publishes_events, jsonb_build_object('batch', o.batch),
           -- The batchable step, being recorded now, is the one parent.
           1, 1
      FROM tasker.workflow_steps s
      JOIN tasker.step_blueprints pb ON pb.task_uuid = s.task_uuid AND pb.name = s.name
      JOIN tasker.step_blueprints w ON w.task_uuid = s.task_uuid AND w.name = pb.batch_worker
     CROSS JOIN LATERAL jsonb_array_elements(s.outcome->'batches') WITH ORDINALITY AS o(batch, i)
     WHERE s.step_uuid = ANY (p_steps) AND s.step_type = 'batchable'
     ORDER BY s.step_uuid, o.i
    ON CONFLICT (task_uuid, name) DO NOTHING
    RETURNING step_uuid, task_uuid, template_step
  ), edges AS (
    INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
    SELECT c.task_uuid, s.step_uuid, c.step_uuid
      FROM copies c
      JOIN tasker.step_blueprints pb ON pb.task_uuid = c.task_uuid AND pb.batch_worker = c.template_step
      JOIN tasker.workflow_steps s ON s.task_uuid = c.task_uuid AND s.name = pb.name
     WHERE s.step_uuid = ANY (p_steps)
  ), logged AS (
    INSERT INTO tasker.workflow_step_transitions
      (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, actor, metadata)
    SELECT c.step_uuid, c.task_uuid, NULL, 'pending', 0, true, p_actor,
           '{"created_by": "batch"}'::jsonb
      FROM copies c
  )
  SELECT count(*) INTO v_n FROM copies;
  RETURN v_n;
END;
$$;

-- As before, plus outcomes: a success whose outcome is wrong for its step (a name that is
-- not a direct dependent, too many batches, a malformed outcome, an outcome on a step that
-- takes none) is recorded as a permanent invalid_decision / invalid_batch failure instead;
-- a valid outcome is stored on the step and applied in this same transaction (batch copies,
-- chosen branches, convergence edges).
CREATE OR REPLACE FUNCTION tasker.record_step_results(p_worker text, p_results jsonb)
RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
  v_ids       uuid[];
  v_steps     uuid[];
  v_tasks     uuid[];
  v_from      text[];
  v_to        text[];
  v_meta      jsonb[];
  v_decided   uuid[];
  v_dyn_tasks uuid[];
  t           uuid;
  q           record;
BEGIN
  SELECT array_agg(DISTINCT (x->>'step_uuid')::uuid) INTO v_ids
    FROM jsonb_array_elements(p_results) AS x;
  -- An outcome changes its task (expand_steps locks the task row), so the tasks of decision
  -- and batchable steps are locked first, in order, as result processing, cancellation and
  -- operator actions lock a task before its steps. A step's type never changes, so reading
  -- it unlocked is safe.
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid IN (SELECT s.task_uuid FROM tasker.workflow_steps s
                          WHERE s.step_uuid = ANY (v_ids)
                            AND s.step_type IN ('decision', 'batchable'))
   ORDER BY t.task_uuid FOR NO KEY UPDATE;
  -- Sorted, so concurrent recorders, claimers and cancellations lock rows in one order.
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (v_ids) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  WITH r AS (
    SELECT DISTINCT ON ((x->>'step_uuid')::uuid)
           (x->>'step_uuid')::uuid AS step_uuid, (x->>'attempt')::integer AS attempt,
           (x->>'success')::boolean AS success, x->'result' AS result,
           CASE WHEN jsonb_typeof(x->'error') = 'object' THEN x->'error' END AS error,
           (x->>'execution_ms')::bigint AS execution_ms,
           CASE WHEN jsonb_typeof(x->'metadata') = 'object' THEN x->'metadata' ELSE '{}'::jsonb END AS metadata,
           CASE WHEN jsonb_typeof(x->'outcome') <> 'null' THEN x->'outcome' END AS outcome
      FROM jsonb_array_elements(p_results) AS x
     ORDER BY (x->>'step_uuid')::uuid
  ), checked AS (
    SELECT r.*,
           CASE WHEN r.success AND (r.outcome IS NOT NULL
                                    OR s.step_type IN ('decision', 'batchable'))
                THEN tasker.outcome_error(s.task_uuid, s.name, s.step_type, r.outcome) END AS bad
      FROM r JOIN tasker.workflow_steps s ON s.step_uuid = r.step_uuid
     WHERE s.step_uuid = ANY (v_ids)
  ), applied AS (
    UPDATE tasker.workflow_steps s
       SET state = CASE WHEN r.success AND r.bad IS NULL THEN 'enqueued_for_orchestration'
                        ELSE 'enqueued_as_error_for_orchestration' END,
           updated_at = now(),
           results = CASE WHEN r.success AND r.bad IS NULL THEN r.result ELSE s.results END,
           last_error = CASE WHEN r.success AND r.bad IS NULL THEN NULL
                             ELSE coalesce(r.bad, r.error) END,
           outcome = CASE WHEN r.success AND r.bad IS NULL
                           AND s.step_type IN ('decision', 'batchable')
                          THEN r.outcome ELSE s.outcome END,
           claim_owner = NULL, lease_expires_at = NULL
      FROM checked r
     WHERE s.step_uuid = ANY (v_ids) AND s.step_uuid = r.step_uuid AND s.state = 'in_progress'
       AND s.claim_owner = p_worker AND s.attempts = r.attempt
    RETURNING s.step_uuid, s.task_uuid, s.state, r.attempt, r.success AND r.bad IS NULL AS ok,
              r.result, coalesce(r.bad, r.error) AS error, r.execution_ms, r.metadata,
              r.success AND r.bad IS NULL AND s.step_type IN ('decision', 'batchable') AS decided
  ), audited AS (
    INSERT INTO tasker.step_result_audits
      (step_uuid, task_uuid, attempt, worker_id, success, result, error, execution_time_ms, metadata)
    SELECT a.step_uuid, a.task_uuid, a.attempt, p_worker, a.ok,
           CASE WHEN a.ok THEN a.result END, CASE WHEN NOT a.ok THEN a.error END,
           a.execution_ms, a.metadata
      FROM applied a
  ), sent AS (
    INSERT INTO pgmq.q_orchestration_step_results (vt, message)
    SELECT clock_timestamp(), jsonb_build_object(
             'task_uuid', a.task_uuid, 'step_uuid', a.step_uuid, 'attempt', a.attempt,
             'success', a.ok, 'worker_id', p_worker)
      FROM applied a
  )
  SELECT array_agg(a.step_uuid), array_agg(a.task_uuid), array_agg('in_progress'::text),
         array_agg(a.state),
         array_agg(jsonb_build_object('attempt', a.attempt, 'execution_time_ms', a.execution_ms)),
         array_agg(a.step_uuid) FILTER (WHERE a.decided),
         array_agg(DISTINCT a.task_uuid) FILTER (WHERE a.decided)
    INTO v_steps, v_tasks, v_from, v_to, v_meta, v_decided, v_dyn_tasks
    FROM applied a;
  IF v_steps IS NOT NULL THEN
    PERFORM tasker.record_step_transitions(v_steps, v_tasks, v_from, v_to, p_worker, v_meta);
    -- A cancelled task gets no new steps: its in-flight results still land, nothing more.
    IF v_decided IS NOT NULL THEN
      SELECT array_agg(s.step_uuid ORDER BY s.step_uuid), array_agg(DISTINCT s.task_uuid)
        INTO v_decided, v_dyn_tasks
        FROM tasker.workflow_steps s JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
       WHERE s.step_uuid = ANY (v_decided) AND t.task_uuid = ANY (v_dyn_tasks)
         AND t.state <> 'cancelled';
    END IF;
    IF v_decided IS NOT NULL THEN
      PERFORM tasker.create_batch_workers(v_decided, p_worker);
      FOREACH t IN ARRAY v_dyn_tasks LOOP
        PERFORM tasker.expand_steps(t, p_worker);
      END LOOP;
    END IF;
    -- Worker messages of recorded results only: a refused result's message belongs to
    -- whoever holds the step now.
    FOR q IN SELECT x->>'queue' AS queue, array_agg((x->>'msg_id')::bigint) AS ids
               FROM jsonb_array_elements(p_results) AS x
              WHERE x->>'queue' IS NOT NULL AND x->>'msg_id' IS NOT NULL
                AND (x->>'step_uuid')::uuid = ANY (v_steps)
              GROUP BY 1 LOOP
      PERFORM pgmq.delete(q.queue, q.ids);
    END LOOP;
  END IF;
  RETURN QUERY
    SELECT id FROM unnest(v_ids) AS id WHERE NOT (id = ANY (coalesce(v_steps, ARRAY[]::uuid[])));
END;
$$;

-- One result in one transaction: a batch of one, now with an optional outcome.
CREATE FUNCTION tasker.record_step_result(
  p_step uuid, p_attempt integer, p_worker text, p_success boolean, p_result jsonb,
  p_error jsonb, p_execution_ms bigint, p_metadata jsonb, p_worker_queue text, p_msg_id bigint,
  p_outcome jsonb
) RETURNS boolean LANGUAGE sql AS $$
  SELECT NOT EXISTS (
    SELECT 1 FROM tasker.record_step_results(p_worker, jsonb_build_array(jsonb_build_object(
      'step_uuid', p_step, 'attempt', p_attempt, 'success', p_success, 'result', p_result,
      'error', p_error, 'execution_ms', p_execution_ms, 'metadata', p_metadata,
      'queue', p_worker_queue, 'msg_id', p_msg_id, 'outcome', p_outcome))))
$$;

-- As before, except that a gate edge passes no result: a convergence step's
-- dependency_results hold only the steps it depends on (and a batch worker's copies).
CREATE OR REPLACE FUNCTION tasker.claim_steps(p_steps uuid[], p_worker text, p_lease_seconds integer)
RETURNS TABLE (
  step_uuid uuid,
  outcome text,
  lease_expires_at timestamptz,
  task_uuid uuid,
  step_name text,
  namespace text,
  task_name text,
  task_version text,
  attempt integer,
  max_attempts integer,
  handler_callable text,
  handler_initialization jsonb,
  timeout_seconds integer,
  publishes_events jsonb,
  inputs jsonb,
  task_context jsonb,
  dependency_results jsonb
) LANGUAGE plpgsql AS $$
DECLARE
  v_id      uuid;
  v_claimed uuid[];
  v_tasks   uuid[];
  v_from    text[];
  v_to      text[];
  v_meta    jsonb[];
BEGIN
  -- Sorted, so concurrent claimers and cancellations lock rows in one order.
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (p_steps) ORDER BY s.step_uuid FOR NO KEY UPDATE;
  -- A step whose worker died (lease expired) is handed back first, then claimed afresh.
  FOR v_id IN SELECT s.step_uuid FROM tasker.workflow_steps s
               WHERE s.step_uuid = ANY (p_steps) AND s.state = 'in_progress'
                 AND s.lease_expires_at <= clock_timestamp()
               ORDER BY s.step_uuid LOOP
    PERFORM tasker.transition_step(v_id, 'in_progress', 'enqueued', p_worker,
                                   jsonb_build_object('reason', 'lease_expired'));
  END LOOP;
  WITH claimed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'in_progress', updated_at = now(), attempts = s.attempts + 1,
           claim_owner = p_worker,
           lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           started_at = clock_timestamp()
     WHERE s.step_uuid = ANY (p_steps) AND s.state = 'enqueued'
    RETURNING s.step_uuid, s.task_uuid
  )
  SELECT array_agg(c.step_uuid), array_agg(c.task_uuid), array_agg('enqueued'::text),
         array_agg('in_progress'::text), array_agg('{}'::jsonb)
    INTO v_claimed, v_tasks, v_from, v_to, v_meta
    FROM claimed c;
  IF v_claimed IS NOT NULL THEN
    PERFORM tasker.record_step_transitions(v_claimed, v_tasks, v_from, v_to, p_worker, v_meta);
  END IF;
  RETURN QUERY
    SELECT u.id,
           CASE WHEN s.step_uuid IS NULL THEN 'missing'
                WHEN c.step_uuid IS NOT NULL THEN 'claimed'
                WHEN s.state = 'in_progress' THEN 'busy'
                ELSE 'finished' END,
           CASE WHEN s.state = 'in_progress' THEN s.lease_expires_at END,
           c.task_uuid, c.name, c.namespace, c.task_name, c.version, c.attempts, c.max_attempts,
           c.handler_callable, c.handler_initialization, c.timeout_seconds,
           c.publishes_events, c.inputs, c.context, c.dependency_results
      FROM (SELECT DISTINCT x AS id FROM unnest(p_steps) AS x) u
      LEFT JOIN tasker.workflow_steps s ON s.step_uuid = u.id AND s.step_uuid = ANY (p_steps)
      LEFT JOIN LATERAL (
        SELECT s.step_uuid, s.task_uuid, s.name, n.name AS namespace, nt.name AS task_name,
               nt.version, s.attempts, s.max_attempts, s.handler_callable,
               s.handler_initialization, s.timeout_seconds, s.publishes_events, s.inputs,
               t.context,
               coalesce((SELECT jsonb_object_agg(ps.name, ps.results)
                           FROM tasker.workflow_step_edges e
                           JOIN tasker.workflow_steps ps ON ps.step_uuid = e.from_step_uuid
                          WHERE e.to_step_uuid = s.step_uuid AND NOT e.gate), '{}'::jsonb)
                 AS dependency_results
          FROM tasker.tasks t
          JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
          JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
         WHERE s.step_uuid = ANY (v_claimed) AND t.task_uuid = s.task_uuid
      ) c ON true
     ORDER BY u.id;
END;
$$;

-- As before, and each completed step counts itself off its children's pending parents.
CREATE OR REPLACE FUNCTION tasker.process_step_results(
  p_messages jsonb, p_actor text, p_jitter_ratio float8, p_max_retry_after_ms bigint
) RETURNS TABLE (msg_id bigint, task_uuid uuid, namespace text, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
  v_m_msgs     bigint[];
  v_m_tasks    uuid[];
  v_m_steps    uuid[];
  v_m_attempts integer[];
  v_m_workers  text[];
  v_task_ids   uuid[];
  v_step_ids   uuid[];
  v_msgs       bigint[];
  v_steps      uuid[];
  v_tasks      uuid[];
  v_from       text[];
  v_to         text[];
  v_meta       jsonb[];
  v_outcomes   jsonb := '{}'::jsonb;
  f            record;
  v_err        jsonb;
  v_delay      bigint;
BEGIN
  -- The batch decoded once, in the order its rows are returned.
  SELECT array_agg(m.msg_id ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.task_uuid ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.step_uuid ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.attempt ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(m.worker_id ORDER BY m.task_uuid, m.step_uuid, m.msg_id),
         array_agg(DISTINCT m.task_uuid), array_agg(DISTINCT m.step_uuid)
    INTO v_m_msgs, v_m_tasks, v_m_steps, v_m_attempts, v_m_workers, v_task_ids, v_step_ids
    FROM (SELECT (x->>'msg_id')::bigint AS msg_id, (x->>'task_uuid')::uuid AS task_uuid,
                 (x->>'step_uuid')::uuid AS step_uuid, (x->>'attempt')::integer AS attempt,
                 x->>'worker_id' AS worker_id
            FROM jsonb_array_elements(p_messages) AS x) AS m;
  -- Every task of the batch first, then every step, each in one order, so concurrent
  -- batches cannot deadlock.
  PERFORM 1 FROM tasker.tasks t
   WHERE t.task_uuid = ANY (v_task_ids) ORDER BY t.task_uuid FOR NO KEY UPDATE;
  PERFORM 1 FROM tasker.workflow_steps s
   WHERE s.step_uuid = ANY (v_step_ids) ORDER BY s.step_uuid FOR NO KEY UPDATE;

  WITH m AS (
    SELECT DISTINCT ON (s.step_uuid) u.msg_id, s.step_uuid, u.worker_id
      FROM unnest(v_m_msgs, v_m_tasks, v_m_steps, v_m_attempts, v_m_workers)
             AS u(msg_id, task_uuid, step_uuid, attempt, worker_id)
      JOIN tasker.workflow_steps s ON s.step_uuid = u.step_uuid AND s.task_uuid = u.task_uuid
     WHERE s.step_uuid = ANY (v_step_ids) AND s.attempts = u.attempt
       AND s.state = 'enqueued_for_orchestration'
     ORDER BY s.step_uuid, u.msg_id
  ), completed AS (
    UPDATE tasker.workflow_steps s
       SET state = 'complete', updated_at = now(), completed_at = clock_timestamp()
      FROM m
     WHERE s.step_uuid = ANY (v_step_ids) AND s.step_uuid = m.step_uuid
    RETURNING s.step_uuid, s.task_uuid, s.attempts, m.msg_id, m.worker_id
  )
  SELECT array_agg(c.msg_id), array_agg(c.step_uuid), array_agg(c.task_uuid),
         array_agg('enqueued_for_orchestration'::text), array_agg('complete'::text),
         array_agg(jsonb_build_object('attempt', c.attempts, 'worker_id', c.worker_id))
    INTO v_msgs, v_steps, v_tasks, v_from, v_to, v_meta
    FROM completed c;
  IF v_steps IS NOT NULL THEN
    PERFORM tasker.record_step_transitions(v_steps, v_tasks, v_from, v_to, p_actor, v_meta);
    PERFORM tasker.parents_done(v_steps);
    SELECT jsonb_object_agg(id::text, 'completed') INTO v_outcomes FROM unnest(v_msgs) AS id;
  END IF;

  FOR f IN SELECT DISTINCT ON (s.step_uuid)
                  u.msg_id, s.step_uuid, s.task_uuid, s.state, s.attempts, s.max_attempts,
                  s.retryable, s.backoff, s.backoff_base_ms, s.max_backoff_ms,
                  coalesce(s.last_error, '{}'::jsonb) AS last_error
             FROM unnest(v_m_msgs, v_m_tasks, v_m_steps, v_m_attempts)
                    AS u(msg_id, task_uuid, step_uuid, attempt)
             JOIN tasker.workflow_steps s
               ON s.step_uuid = u.step_uuid AND s.task_uuid = u.task_uuid
            WHERE s.step_uuid = ANY (v_step_ids) AND s.attempts = u.attempt
              AND s.state = 'enqueued_as_error_for_orchestration'
            ORDER BY s.step_uuid, u.msg_id LOOP
    v_err := f.last_error;
    IF coalesce((v_err->>'retryable')::boolean, true) AND f.retryable
       AND f.attempts < f.max_attempts THEN
      v_delay := tasker.retry_delay_ms(f.backoff, f.backoff_base_ms, f.max_backoff_ms,
                                       f.attempts, v_err, p_jitter_ratio, p_max_retry_after_ms);
      PERFORM tasker.transition_step(f.step_uuid, f.state, 'waiting_for_retry', p_actor,
        jsonb_build_object('attempt', f.attempts, 'retry_in_ms', v_delay));
      UPDATE tasker.workflow_steps
         SET next_retry_at = clock_timestamp() + make_interval(secs => v_delay / 1000.0)
       WHERE workflow_steps.step_uuid = f.step_uuid;
      v_outcomes := v_outcomes || jsonb_build_object(f.msg_id::text, 'retry_scheduled');
    ELSE
      PERFORM tasker.transition_step(f.step_uuid, f.state, 'error', p_actor,
        jsonb_build_object('attempt', f.attempts, 'reason',
          CASE WHEN NOT coalesce((v_err->>'retryable')::boolean, true) THEN 'not retryable (handler)'
               WHEN NOT f.retryable THEN 'not retryable (template)'
               ELSE 'out of attempts' END));
      UPDATE tasker.workflow_steps SET completed_at = clock_timestamp()
       WHERE workflow_steps.step_uuid = f.step_uuid;
      v_outcomes := v_outcomes || jsonb_build_object(f.msg_id::text, 'failed');
    END IF;
    v_tasks := v_tasks || f.task_uuid;
  END LOOP;

  PERFORM tasker.finalize_task(t, p_actor)
     FROM (SELECT DISTINCT t FROM unnest(v_tasks) AS t) AS touched ORDER BY t;
  DELETE FROM pgmq.q_orchestration_step_results q WHERE q.msg_id = ANY (v_m_msgs);

  RETURN QUERY
    SELECT u.msg_id, u.task_uuid, tasker.task_namespace(u.task_uuid),
           coalesce(v_outcomes->>u.msg_id::text, 'ignored')
      FROM unnest(v_m_msgs, v_m_tasks) WITH ORDINALITY AS u(msg_id, task_uuid, i)
     ORDER BY u.i;
END;
$$;

ALTER FUNCTION tasker.claim_steps(uuid[], text, integer) SET enable_seqscan = off;
ALTER FUNCTION tasker.record_step_results(text, jsonb) SET enable_seqscan = off;
ALTER FUNCTION tasker.expand_steps(uuid, text) SET enable_seqscan = off;
ALTER FUNCTION tasker.create_dynamic_steps(uuid, jsonb, integer, text) SET enable_seqscan = off;
ALTER FUNCTION tasker.create_batch_workers(uuid[], text) SET enable_seqscan = off;
ALTER FUNCTION tasker.outcome_error(uuid, text, text, jsonb) SET enable_seqscan = off;
ALTER FUNCTION tasker.count_new_parents(uuid[], uuid[]) SET enable_seqscan = off;
ALTER FUNCTION tasker.parents_done(uuid[]) SET enable_seqscan = off;
ALTER FUNCTION tasker.process_step_results(jsonb, text, float8, bigint) SET enable_seqscan = off;

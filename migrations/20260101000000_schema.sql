-- Tasker's tables. Everything lives in the `tasker` schema; PGMQ installs into `pgmq`.

CREATE SCHEMA IF NOT EXISTS tasker;

-- Time-ordered UUIDs (version 7): a 48-bit millisecond timestamp, then random bits, so new
-- rows land at the end of primary-key indexes.
CREATE FUNCTION tasker.uuid_v7() RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  ms    bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
  raw   bytea  := uuid_send(gen_random_uuid());
BEGIN
  FOR i IN 0..5 LOOP
    raw := set_byte(raw, i, ((ms >> ((5 - i) * 8)) & 255)::int);
  END LOOP;
  -- Version nibble 0111; the variant bits come from gen_random_uuid unchanged.
  raw := set_byte(raw, 6, (get_byte(raw, 6) & 15) | 112);
  RETURN encode(raw, 'hex')::uuid;
END;
$$;

-- The allowed state transitions, mirrored from the Rust tables (a test checks they agree).
CREATE TABLE tasker.task_state_transitions (
  from_state text NOT NULL,
  to_state   text NOT NULL,
  PRIMARY KEY (from_state, to_state)
);

CREATE TABLE tasker.step_state_transitions (
  from_state text NOT NULL,
  to_state   text NOT NULL,
  PRIMARY KEY (from_state, to_state)
);

INSERT INTO tasker.task_state_transitions (from_state, to_state) VALUES
  ('pending', 'initializing'), ('pending', 'cancelled'),
  ('initializing', 'enqueuing_steps'), ('initializing', 'error'), ('initializing', 'cancelled'),
  ('enqueuing_steps', 'steps_in_process'), ('enqueuing_steps', 'waiting_for_dependencies'),
  ('enqueuing_steps', 'complete'), ('enqueuing_steps', 'error'), ('enqueuing_steps', 'cancelled'),
  ('steps_in_process', 'evaluating_results'), ('steps_in_process', 'waiting_for_dependencies'),
  ('steps_in_process', 'waiting_for_retry'), ('steps_in_process', 'blocked_by_failures'),
  ('steps_in_process', 'complete'), ('steps_in_process', 'cancelled'),
  ('evaluating_results', 'steps_in_process'), ('evaluating_results', 'waiting_for_dependencies'),
  ('evaluating_results', 'waiting_for_retry'), ('evaluating_results', 'blocked_by_failures'),
  ('evaluating_results', 'complete'), ('evaluating_results', 'cancelled'),
  ('waiting_for_dependencies', 'steps_in_process'), ('waiting_for_dependencies', 'waiting_for_retry'),
  ('waiting_for_dependencies', 'blocked_by_failures'), ('waiting_for_dependencies', 'complete'),
  ('waiting_for_dependencies', 'cancelled'),
  ('waiting_for_retry', 'steps_in_process'), ('waiting_for_retry', 'waiting_for_dependencies'),
  ('waiting_for_retry', 'blocked_by_failures'), ('waiting_for_retry', 'complete'),
  ('waiting_for_retry', 'cancelled'),
  ('blocked_by_failures', 'error'), ('blocked_by_failures', 'evaluating_results'),
  ('blocked_by_failures', 'cancelled'),
  ('error', 'evaluating_results'), ('error', 'resolved_manually');

INSERT INTO tasker.step_state_transitions (from_state, to_state) VALUES
  ('pending', 'enqueued'), ('pending', 'cancelled'), ('pending', 'resolved_manually'),
  ('pending', 'complete'),
  ('enqueued', 'in_progress'), ('enqueued', 'cancelled'),
  ('in_progress', 'enqueued_for_orchestration'), ('in_progress', 'enqueued_as_error_for_orchestration'),
  ('in_progress', 'enqueued'),
  ('enqueued_for_orchestration', 'complete'),
  ('enqueued_as_error_for_orchestration', 'waiting_for_retry'),
  ('enqueued_as_error_for_orchestration', 'error'),
  ('waiting_for_retry', 'enqueued'), ('waiting_for_retry', 'cancelled'),
  ('waiting_for_retry', 'resolved_manually'), ('waiting_for_retry', 'complete'),
  ('waiting_for_retry', 'error'),
  ('error', 'pending'), ('error', 'resolved_manually'), ('error', 'complete');

CREATE TABLE tasker.namespaces (
  namespace_uuid uuid PRIMARY KEY DEFAULT tasker.uuid_v7(),
  name           text NOT NULL UNIQUE,
  created_at     timestamptz NOT NULL DEFAULT now()
);

-- A registered template. Orchestration reads templates only from here.
CREATE TABLE tasker.named_tasks (
  named_task_uuid uuid PRIMARY KEY DEFAULT tasker.uuid_v7(),
  namespace_uuid  uuid NOT NULL REFERENCES tasker.namespaces,
  name            text NOT NULL,
  version         text NOT NULL,
  description     text,
  template        jsonb NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (namespace_uuid, name, version)
);

CREATE TABLE tasker.tasks (
  task_uuid       uuid PRIMARY KEY DEFAULT tasker.uuid_v7(),
  named_task_uuid uuid NOT NULL REFERENCES tasker.named_tasks,
  state           text NOT NULL DEFAULT 'pending',
  context         jsonb NOT NULL DEFAULT '{}'::jsonb,
  correlation_id  uuid NOT NULL DEFAULT tasker.uuid_v7(),
  idempotency_key text,
  initiator       text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  completed_at    timestamptz,
  UNIQUE (named_task_uuid, idempotency_key)
);

CREATE INDEX tasks_active_idx ON tasker.tasks (state)
  WHERE state NOT IN ('complete', 'error', 'cancelled', 'resolved_manually');
CREATE INDEX tasks_created_idx ON tasker.tasks (created_at DESC);

CREATE TABLE tasker.workflow_steps (
  step_uuid              uuid PRIMARY KEY DEFAULT tasker.uuid_v7(),
  task_uuid              uuid NOT NULL REFERENCES tasker.tasks ON DELETE CASCADE,
  name                   text NOT NULL,
  position               integer NOT NULL,
  handler_callable       text NOT NULL,
  handler_initialization jsonb NOT NULL DEFAULT '{}'::jsonb,
  state                  text NOT NULL DEFAULT 'pending',
  attempts               integer NOT NULL DEFAULT 0,
  max_attempts           integer NOT NULL,
  retryable              boolean NOT NULL,
  backoff                text NOT NULL,
  backoff_base_ms        bigint NOT NULL,
  max_backoff_ms         bigint NOT NULL,
  timeout_seconds        integer,
  publishes_events       jsonb NOT NULL DEFAULT '[]'::jsonb,
  inputs                 jsonb NOT NULL DEFAULT '{}'::jsonb,
  results                jsonb,
  last_error             jsonb,
  next_retry_at          timestamptz,
  claim_owner            text,
  lease_expires_at       timestamptz,
  queue_msg_id           bigint,
  enqueued_at            timestamptz,
  started_at             timestamptz,
  completed_at           timestamptz,
  created_at             timestamptz NOT NULL DEFAULT now(),
  updated_at             timestamptz NOT NULL DEFAULT now(),
  UNIQUE (task_uuid, name),
  CHECK (attempts >= 0),
  CHECK (max_attempts >= 1),
  CHECK (backoff IN ('none', 'linear', 'exponential'))
);

CREATE INDEX workflow_steps_task_idx ON tasker.workflow_steps (task_uuid);
CREATE INDEX workflow_steps_retry_idx ON tasker.workflow_steps (next_retry_at)
  WHERE state = 'waiting_for_retry';
CREATE INDEX workflow_steps_lease_idx ON tasker.workflow_steps (lease_expires_at)
  WHERE state = 'in_progress';

CREATE TABLE tasker.workflow_step_edges (
  task_uuid      uuid NOT NULL REFERENCES tasker.tasks ON DELETE CASCADE,
  from_step_uuid uuid NOT NULL REFERENCES tasker.workflow_steps ON DELETE CASCADE,
  to_step_uuid   uuid NOT NULL REFERENCES tasker.workflow_steps ON DELETE CASCADE,
  PRIMARY KEY (from_step_uuid, to_step_uuid),
  CHECK (from_step_uuid <> to_step_uuid)
);

CREATE INDEX workflow_step_edges_to_idx ON tasker.workflow_step_edges (to_step_uuid);

-- Every transition is kept; exactly one row per task / step is flagged most_recent
-- (deferred, so the flag can move within one transaction).
CREATE TABLE tasker.task_transitions (
  transition_uuid uuid PRIMARY KEY DEFAULT tasker.uuid_v7(),
  task_uuid       uuid NOT NULL REFERENCES tasker.tasks ON DELETE CASCADE,
  from_state      text,
  to_state        text NOT NULL,
  sort_key        integer NOT NULL,
  most_recent     boolean NOT NULL,
  actor           text NOT NULL,
  metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (task_uuid, sort_key),
  EXCLUDE USING btree (task_uuid WITH =) WHERE (most_recent) DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE tasker.workflow_step_transitions (
  transition_uuid uuid PRIMARY KEY DEFAULT tasker.uuid_v7(),
  step_uuid       uuid NOT NULL REFERENCES tasker.workflow_steps ON DELETE CASCADE,
  task_uuid       uuid NOT NULL REFERENCES tasker.tasks ON DELETE CASCADE,
  from_state      text,
  to_state        text NOT NULL,
  sort_key        integer NOT NULL,
  most_recent     boolean NOT NULL,
  actor           text NOT NULL,
  metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (step_uuid, sort_key),
  EXCLUDE USING btree (step_uuid WITH =) WHERE (most_recent) DEFERRABLE INITIALLY DEFERRED
);

CREATE INDEX workflow_step_transitions_task_idx ON tasker.workflow_step_transitions (task_uuid);

-- One row per recorded handler result. (step, attempt) is unique: a result is recorded once.
CREATE TABLE tasker.step_result_audits (
  audit_uuid        uuid PRIMARY KEY DEFAULT tasker.uuid_v7(),
  step_uuid         uuid NOT NULL REFERENCES tasker.workflow_steps ON DELETE CASCADE,
  task_uuid         uuid NOT NULL REFERENCES tasker.tasks ON DELETE CASCADE,
  attempt           integer NOT NULL,
  worker_id         text NOT NULL,
  success           boolean NOT NULL,
  result            jsonb,
  error             jsonb,
  execution_time_ms bigint NOT NULL,
  metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
  recorded_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (step_uuid, attempt)
);

CREATE INDEX step_result_audits_task_idx ON tasker.step_result_audits (task_uuid);

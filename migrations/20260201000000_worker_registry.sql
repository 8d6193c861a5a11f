-- Worker registry: every worker process lists itself here while it runs.
--
-- A worker holds a session-level advisory lock on its lock_key on a dedicated connection for
-- as long as it lives. When the process dies (SIGKILL, lost connection) Postgres ends that
-- session and the lock goes with it, so a dead worker is detected exactly: anyone who can
-- take the lock knows its owner is gone and releases its claims. last_seen_at is renewed by
-- the worker's heartbeat and covers a worker whose session lingers while it cannot reach the
-- database (a partition): it is treated as dead once its row is stale, and its late results
-- are refused by the claim check at recording.
CREATE SEQUENCE tasker.worker_lock_keys;

CREATE TABLE tasker.workers (
  worker_id    text PRIMARY KEY,
  host         text NOT NULL,
  pid          integer NOT NULL,
  namespaces   text[] NOT NULL,
  lock_key     bigint NOT NULL UNIQUE DEFAULT nextval('tasker.worker_lock_keys'),
  started_at   timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz NOT NULL DEFAULT now()
);

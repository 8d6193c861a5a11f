//! Gauges of what only the database knows (blocked tasks, waiting steps, live workers), so
//! Prometheus alert rules can see them. Every orchestrator exports the same figures; rules
//! aggregate with `max`.

use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Tasks a permanently failed step has stopped (`blocked_by_failures` or `error`), waiting for
/// an operator to reset or resolve the step.
pub const TASKS_BLOCKED: &str = "tasker_tasks_blocked_by_failures";
/// Steps enqueued for a worker and not yet claimed, found through their messages in the
/// worker queues (`tasker.waiting_steps`).
pub const STEPS_WAITING: &str = "tasker_steps_waiting";
/// How long the message visible longest in the worker queues has been visible (0 when none
/// waits).
pub const STEPS_WAITING_OLDEST: &str = "tasker_steps_waiting_oldest_seconds";
/// Registered workers whose heartbeat was seen within [`LIVE_WITHIN`].
pub const WORKERS_LIVE: &str = "tasker_workers_live";
/// Registered workers whose heartbeat is older than [`LIVE_WITHIN`].
pub const WORKERS_STALE: &str = "tasker_workers_stale";

/// A worker is live when its heartbeat (`tasker.workers.last_seen_at`) is this recent.
pub const LIVE_WITHIN: Duration = Duration::from_secs(30);

/// How often the gauges are refreshed: well under Prometheus' usual 15-60 s scrape interval
/// would only add queries, well over it would hide short outages.
pub const INTERVAL: Duration = Duration::from_secs(15);

#[derive(Debug, sqlx::FromRow)]
struct Figures {
    blocked: i64,
    waiting: i64,
    oldest_seconds: f64,
    live: i64,
    stale: i64,
}

/// Refreshes the gauges every `interval` until `shutdown` fires.
pub async fn run(pool: PgPool, interval: Duration, shutdown: CancellationToken) {
    crate::periodic::every(
        "refreshing the state gauges",
        interval,
        interval,
        shutdown,
        || refresh(&pool),
    )
    .await
}

/// Reads the figures once and sets the gauges.
pub async fn refresh(pool: &PgPool) -> Result<(), sqlx::Error> {
    let f: Figures = sqlx::query_as(
        "SELECT
           (SELECT count(*) FROM tasker.tasks
             WHERE state IN ('blocked_by_failures', 'error')) AS blocked,
           w.waiting, w.oldest_seconds,
           (SELECT count(*) FROM tasker.workers
             WHERE last_seen_at > now() - make_interval(secs => $1)) AS live,
           (SELECT count(*) FROM tasker.workers
             WHERE last_seen_at <= now() - make_interval(secs => $1)) AS stale
           FROM tasker.waiting_steps() AS w",
    )
    .bind(LIVE_WITHIN.as_secs_f64())
    .fetch_one(pool)
    .await?;
    metrics::gauge!(TASKS_BLOCKED).set(f.blocked as f64);
    metrics::gauge!(STEPS_WAITING).set(f.waiting as f64);
    metrics::gauge!(STEPS_WAITING_OLDEST).set(f.oldest_seconds.max(0.0));
    metrics::gauge!(WORKERS_LIVE).set(f.live as f64);
    metrics::gauge!(WORKERS_STALE).set(f.stale as f64);
    Ok(())
}

//! Gauges of what only the database knows (blocked tasks, waiting steps, live workers), so
//! Prometheus alert rules can see them. Every orchestrator exports the same figures; rules
//! aggregate with `max`.

use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Tasks a permanently failed step has stopped (`blocked_by_failures` or `error`), waiting for
/// an operator to reset or resolve the step; counted up to 10,000, where the dashboard's
/// counts stop too.
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

/// What one refresh read and set the gauges to.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StateFigures {
    pub blocked: i64,
    pub waiting: i64,
    pub oldest_seconds: f64,
    pub live: i64,
    pub stale: i64,
}

/// Refreshes the gauges every `interval` until `shutdown` fires.
pub async fn run(pool: PgPool, interval: Duration, shutdown: CancellationToken) {
    crate::periodic::every(
        "refreshing the state gauges",
        interval,
        interval,
        shutdown,
        || async { refresh(&pool).await.map(drop) },
    )
    .await
}

/// Reads the figures once, sets the gauges and returns what it set. The blocked tasks are
/// counted only up to the cap: `error` is a final state, and retention keeps such tasks for
/// `error_after` (30 days by default), so an uncapped count would read more index the more
/// failures are kept, every refresh; the alert only asks whether there are any.
pub async fn refresh(pool: &PgPool) -> Result<StateFigures, sqlx::Error> {
    let f: StateFigures = sqlx::query_as(
        "SELECT
           (SELECT count(*) FROM (SELECT 1 FROM tasker.tasks
                                   WHERE state IN ('blocked_by_failures', 'error')
                                   LIMIT $2) capped) AS blocked,
           w.waiting, w.oldest_seconds,
           (SELECT count(*) FROM tasker.workers
             WHERE last_seen_at > now() - make_interval(secs => $1)) AS live,
           (SELECT count(*) FROM tasker.workers
             WHERE last_seen_at <= now() - make_interval(secs => $1)) AS stale
           FROM tasker.waiting_steps() AS w",
    )
    .bind(LIVE_WITHIN.as_secs_f64())
    .bind(crate::COUNT_CAP)
    .fetch_one(pool)
    .await?;
    metrics::gauge!(TASKS_BLOCKED).set(f.blocked as f64);
    metrics::gauge!(STEPS_WAITING).set(f.waiting as f64);
    metrics::gauge!(STEPS_WAITING_OLDEST).set(f.oldest_seconds.max(0.0));
    metrics::gauge!(WORKERS_LIVE).set(f.live as f64);
    metrics::gauge!(WORKERS_STALE).set(f.stale as f64);
    Ok(f)
}

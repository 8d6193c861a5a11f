//! The worker registry: the worker processes alive now, and the reaping of dead ones.
//!
//! A worker registers at start (see tasker-worker's `registration` module) and renews its
//! row while it lives; [`reap_dead_workers`] (run by orchestration and by every live
//! worker) releases the steps of workers that died and removes them from the list, and,
//! every [`ExpiredClaimSweep`] interval, the claims whose lease ran out.

use super::StoreError;
use crate::config::WorkerConfig;
use crate::queue::{QueueClient, QueueName};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// A registered worker and the steps it holds now.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct WorkerRow {
    pub worker_id: String,
    pub host: String,
    pub pid: i32,
    pub namespaces: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub steps_held: i64,
}

impl WorkerRow {
    /// Oldest first.
    pub async fn list(pool: &PgPool) -> Result<Vec<Self>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT w.worker_id, w.host, w.pid, w.namespaces, w.started_at, w.last_seen_at,
                    (SELECT count(*) FROM tasker.held_steps h
                      WHERE h.worker_id = w.worker_id) AS steps_held
               FROM tasker.workers w
              ORDER BY w.started_at, w.worker_id",
        )
        .fetch_all(pool)
        .await?)
    }
}

/// A dead worker found by [`reap_dead_workers`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReapedWorker {
    pub worker_id: String,
    /// Its in-progress steps, now enqueued again.
    pub released: i32,
    /// Worker queues whose consumers should be woken for those steps.
    pub queues: Vec<String>,
    /// Tasks that steps lost on their last attempt failed (`worker_lost`).
    pub failed_tasks: Vec<uuid::Uuid>,
}

/// Claims whose lease expired that one run of [`reap_dead_workers`] releases at most.
const EXPIRED_CLAIMS_PER_RUN: i32 = 1000;

/// The longest a process waits between looks at the claims (see [`ExpiredClaimSweep`]).
const CLAIMS_LOOKED_AT_EVERY: Duration = Duration::from_secs(5);

/// When a process looks for claims whose lease ran out under a live worker: every
/// [`CLAIMS_LOOKED_AT_EVERY`], or every quarter of the claim lease if that is sooner. A look
/// reads the rows of `tasker.step_claims` due (each a few seconds after its claim) and
/// deletes those whose steps were recorded, so how often it looks bounds that table.
pub struct ExpiredClaimSweep {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl ExpiredClaimSweep {
    pub fn new(config: &WorkerConfig) -> Self {
        Self {
            every: (Duration::from_secs(u64::from(config.claim_lease_seconds)) / 4)
                .min(CLAIMS_LOOKED_AT_EVERY),
            last: Mutex::new(None),
        }
    }

    /// True, and the time noted, when a look is due.
    fn due(&self) -> bool {
        let mut last = self.last.lock();
        if last.is_some_and(|t| t.elapsed() < self.every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// Releases the steps of every dead worker (see the `[worker] liveness_*` keys) and removes
/// it from the registry, in one transaction, then, when `expired` says a look is due, the
/// claims whose lease ran out although their worker lives (`tasker.release_expired_claims`:
/// a claimed step has no queue message, so nothing else would run it again; the look also
/// deletes the claims' rows whose steps are done), and wakes the
/// consumers of the queues that got messages and the waiters of the tasks that failed.
pub async fn reap_dead_workers(
    pool: &PgPool,
    queues: &QueueClient,
    config: &WorkerConfig,
    expired: &ExpiredClaimSweep,
    actor: &str,
) -> Result<Vec<ReapedWorker>, StoreError> {
    // Registered before any reap, so the alert rules see the series at zero.
    let dead_workers = metrics::counter!("tasker_dead_workers_total");
    let reaped: Vec<ReapedWorker> = sqlx::query_as(
        "SELECT worker_id, released, queues, failed_tasks FROM tasker.reap_dead_workers($1, $2, $3)",
    )
    .bind(config.liveness_grace_ms as i64)
    .bind(config.liveness_timeout_ms as i64)
    .bind(actor)
    .fetch_all(pool)
    .await?;
    for w in &reaped {
        tracing::warn!(
            worker_id = %w.worker_id,
            released = w.released,
            "worker is gone; its steps were released to run elsewhere"
        );
        dead_workers.increment(1);
        metrics::counter!("tasker_steps_released_from_dead_workers_total")
            .increment(w.released as u64);
        for queue in &w.queues {
            if let Ok(q) = QueueName::new(queue.clone()) {
                queues.notify(&q);
            }
        }
        if !w.failed_tasks.is_empty() {
            queues.notifier().task_finished(w.failed_tasks.clone());
        }
    }
    if expired.due() {
        release_expired_claims(pool, queues, actor).await?;
    }
    Ok(reaped)
}

/// `tasker.release_expired_claims`, then wakes the queues that got messages and the waiters
/// of the tasks that failed.
async fn release_expired_claims(
    pool: &PgPool,
    queues: &QueueClient,
    actor: &str,
) -> Result<(), StoreError> {
    let (released, woken, failed): (i32, Vec<String>, Vec<uuid::Uuid>) = sqlx::query_as(
        "SELECT released, queues, failed_tasks FROM tasker.release_expired_claims($1, $2)",
    )
    .bind(actor)
    .bind(EXPIRED_CLAIMS_PER_RUN)
    .fetch_one(pool)
    .await?;
    if released > 0 || !failed.is_empty() {
        tracing::warn!(
            released,
            failed = failed.len(),
            "claims whose lease expired were released to run elsewhere"
        );
        metrics::counter!("tasker_expired_claims_released_total").increment(released as u64);
    }
    for queue in woken {
        if let Ok(q) = QueueName::new(queue) {
            queues.notify(&q);
        }
    }
    if !failed.is_empty() {
        queues.notifier().task_finished(failed);
    }
    Ok(())
}

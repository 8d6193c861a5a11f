//! DeadWorkerReaper: every `orchestration.dead_worker_check_interval_ms`, releases the steps
//! of workers that died (see `tasker_shared::models::reap_dead_workers`) and wakes the
//! consumers of their queues, so those steps run elsewhere within seconds.

use sqlx::PgPool;
use std::time::Duration;
use tasker_shared::config::WorkerConfig;
use tasker_shared::models::{reap_dead_workers, ExpiredClaimSweep};
use tasker_shared::queue::QueueClient;
use tokio_util::sync::CancellationToken;

pub async fn run(
    pool: PgPool,
    queues: QueueClient,
    liveness: WorkerConfig,
    actor: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let limit = interval.max(Duration::from_secs(30));
    let expired = ExpiredClaimSweep::new(&liveness);
    crate::periodic::every(
        "looking for dead workers",
        interval,
        limit,
        shutdown,
        || async {
            reap_dead_workers(&pool, &queues, &liveness, &expired, &actor)
                .await
                .map(drop)
        },
    )
    .await
}

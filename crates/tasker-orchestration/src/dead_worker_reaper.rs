//! DeadWorkerReaper: every `orchestration.dead_worker_check_interval_ms`, releases the steps
//! of workers that died (see `tasker_shared::models::reap_dead_workers`) and wakes the
//! consumers of their queues, so those steps run elsewhere within seconds.

use sqlx::PgPool;
use std::time::Duration;
use tasker_shared::config::WorkerConfig;
use tasker_shared::models::reap_dead_workers;
use tasker_shared::queue::{QueueClient, QueueName};
use tokio_util::sync::CancellationToken;

pub async fn run(
    pool: PgPool,
    queues: QueueClient,
    liveness: WorkerConfig,
    actor: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let reap = reap_dead_workers(&pool, &liveness, &actor);
        match tokio::time::timeout(interval.max(Duration::from_secs(30)), reap).await {
            Ok(Ok(reaped)) => {
                for queue in reaped.iter().flat_map(|w| &w.queues) {
                    if let Ok(q) = QueueName::new(queue.clone()) {
                        queues.notify(&q);
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "looking for dead workers failed"),
            Err(_) => tracing::warn!("looking for dead workers timed out"),
        }
    }
}

//! QueueMaintenance: vacuums queue tables that have piled up dead rows, every
//! `queues.vacuum_interval_ms`, so queue reads stay cheap on a database where autovacuum is
//! off or slow to reach them (see `tasker_shared::queue::vacuum_queues`).

use sqlx::PgPool;
use std::time::Duration;
use tasker_shared::queue::{vacuum_queues, VACUUM_DEAD_ROWS_THRESHOLD};
use tokio_util::sync::CancellationToken;

pub async fn run(pool: PgPool, interval: Duration, shutdown: CancellationToken) {
    // A vacuum runs to its end once started; shutdown only stops the next one.
    let limit = interval.max(Duration::from_secs(60));
    crate::periodic::every(
        "vacuuming queue tables",
        interval,
        limit,
        shutdown,
        || async {
            let tables = vacuum_queues(&pool, VACUUM_DEAD_ROWS_THRESHOLD).await?;
            if !tables.is_empty() {
                metrics::counter!("tasker_queue_vacuums_total").increment(tables.len() as u64);
                tracing::debug!(?tables, "vacuumed queue tables");
            }
            Ok::<_, sqlx::Error>(())
        },
    )
    .await
}

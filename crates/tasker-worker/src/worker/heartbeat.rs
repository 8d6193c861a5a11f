//! Keeps in-flight steps ours: renews their leases, so a long handler is not re-claimed.
//! (A claimed step has no queue message to keep hidden: the claim deleted it.)

use super::in_flight::InFlight;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct Heartbeat {
    pub pool: PgPool,
    pub in_flight: Arc<InFlight>,
    pub worker_id: String,
    pub interval: Duration,
    pub lease_seconds: i32,
}

impl Heartbeat {
    pub async fn beat(&self) -> Result<Vec<Uuid>, sqlx::Error> {
        let steps = self.in_flight.snapshot();
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = steps.iter().map(|(id, _)| *id).collect();
        let lost: Vec<Uuid> = sqlx::query_scalar("SELECT tasker.renew_leases($1, $2, $3)")
            .bind(&ids)
            .bind(&self.worker_id)
            .bind(self.lease_seconds)
            .fetch_all(&self.pool)
            .await?;
        for id in &lost {
            tracing::warn!(step = %id, "lease lost; this worker's result for it will be refused");
        }
        Ok(lost)
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.beat().await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
            }
        }
    }
}

//! Keeps in-flight steps ours: renews their leases and pushes their queue messages'
//! visibility out, so a long handler is neither re-claimed nor redelivered.

use super::in_flight::InFlight;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tasker_shared::queue::{QueueClient, QueueName};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct Heartbeat {
    pub pool: PgPool,
    pub queues: QueueClient,
    pub in_flight: Arc<InFlight>,
    pub worker_id: String,
    pub interval: Duration,
    pub lease_seconds: i32,
    pub visibility_timeout_seconds: i32,
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
        let mut by_queue: HashMap<QueueName, Vec<i64>> = HashMap::new();
        for (_, s) in &steps {
            by_queue.entry(s.queue.clone()).or_default().push(s.msg_id);
        }
        for (queue, msgs) in by_queue {
            if let Err(e) = self
                .queues
                .extend_visibility(&queue, &msgs, self.visibility_timeout_seconds)
                .await
            {
                tracing::warn!(queue = %queue, error = %e, "extending message visibility failed");
            }
        }
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

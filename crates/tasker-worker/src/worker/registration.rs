//! The worker's entry in the worker registry, and its proof of life.
//!
//! At start the worker takes a fresh key and holds a session-level advisory lock on it on a
//! connection of its own, then lists itself in `tasker.workers`. The lock lives exactly as
//! long as that Postgres session: when the process dies, Postgres ends the session and any
//! live worker or orchestrator can take the lock, which proves the worker is gone (see
//! `tasker.reap_dead_workers`). The row's `last_seen_at` is renewed every
//! `liveness_interval_ms`; each renewal also reaps dead workers, so recovery does not depend
//! on an orchestrator running.

use sqlx::{Connection, PgConnection, PgPool};
use tasker_shared::config::WorkerConfig;
use tasker_shared::models::{reap_dead_workers, ExpiredClaimSweep};
use tasker_shared::queue::QueueClient;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("worker registry: {0}")]
    Database(#[from] sqlx::Error),
    #[error("worker {worker_id}: liveness lock {lock_key} is held by another session")]
    LockHeld { worker_id: String, lock_key: i64 },
}

pub struct Registration {
    pool: PgPool,
    queues: QueueClient,
    config: WorkerConfig,
    worker_id: String,
    namespaces: Vec<String>,
    lock_key: i64,
    expired_claims: ExpiredClaimSweep,
    /// The session holding the lock; `None` after it was lost, until re-established.
    session: Option<PgConnection>,
}

impl Registration {
    /// Takes the lock and lists the worker. Fails if the database cannot be reached.
    pub async fn register(
        pool: PgPool,
        queues: QueueClient,
        config: WorkerConfig,
        worker_id: String,
        namespaces: Vec<String>,
    ) -> Result<Self, RegistrationError> {
        let mut session = PgConnection::connect_with(&pool.connect_options()).await?;
        let lock_key: i64 = sqlx::query_scalar("SELECT nextval('tasker.worker_lock_keys')")
            .fetch_one(&mut session)
            .await?;
        // A fresh key: nobody else holds it, so this does not wait.
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(lock_key)
            .execute(&mut session)
            .await?;
        let mut me = Self {
            pool,
            queues,
            expired_claims: ExpiredClaimSweep::new(&config),
            config,
            worker_id,
            namespaces,
            lock_key,
            session: Some(session),
        };
        me.renew().await?;
        Ok(me)
    }

    /// Lists the worker (again, if a reaper removed it meanwhile) and marks it seen now.
    async fn renew(&mut self) -> Result<(), RegistrationError> {
        if self.session.is_none() {
            let mut session = PgConnection::connect_with(&self.pool.connect_options()).await?;
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(self.lock_key)
                .fetch_one(&mut session)
                .await?;
            if !locked {
                // A reaper holds it for the moment; try again at the next beat.
                return Err(RegistrationError::LockHeld {
                    worker_id: self.worker_id.clone(),
                    lock_key: self.lock_key,
                });
            }
            self.session = Some(session);
        }
        let session = self.session.as_mut().expect("session was just established");
        let renewed = sqlx::query(
            "INSERT INTO tasker.workers (worker_id, host, pid, namespaces, lock_key)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (worker_id) DO UPDATE SET last_seen_at = now()",
        )
        .bind(&self.worker_id)
        .bind(tasker_shared::host::hostname())
        .bind(std::process::id() as i32)
        .bind(&self.namespaces)
        .bind(self.lock_key)
        .execute(&mut *session)
        .await;
        if renewed.is_err() {
            // Treat the session as lost: its lock may be gone with it.
            self.session = None;
        }
        renewed?;
        Ok(())
    }

    /// Releases the steps of workers that died and wakes their queues' consumers.
    async fn reap(&self) {
        if let Err(e) = reap_dead_workers(
            &self.pool,
            &self.queues,
            &self.config,
            &self.expired_claims,
            &self.worker_id,
        )
        .await
        {
            tracing::debug!(error = %e, "looking for dead workers failed");
        }
    }

    /// Renews and reaps every `liveness_interval_ms` until `shutdown`, then removes the
    /// worker from the registry.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.liveness_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = self.renew().await {
                        tracing::warn!(worker_id = %self.worker_id, error = %e, "worker registry renewal failed");
                    }
                    self.reap().await;
                }
            }
        }
        self.deregister().await;
    }

    async fn deregister(mut self) {
        let removed = sqlx::query("DELETE FROM tasker.workers WHERE worker_id = $1")
            .bind(&self.worker_id)
            .execute(&self.pool)
            .await;
        if let Err(e) = removed {
            tracing::warn!(worker_id = %self.worker_id, error = %e, "could not leave the worker registry; it will be reaped");
        }
        if let Some(session) = self.session.take() {
            // Closing the session releases the lock.
            let _ = session.close().await;
        }
    }
}

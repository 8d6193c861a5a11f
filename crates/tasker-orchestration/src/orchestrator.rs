//! The orchestration process: the result processor (woken by NOTIFY on the results queue,
//! with a fallback poll), the step enqueuer's sweep, queue maintenance and retention, each
//! with a shutdown path.

use crate::result_processor::ResultProcessor;
use crate::step_enqueuer::StepEnqueuer;
use crate::TaskInitializer;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::Duration;
use tasker_shared::queue::{notify_channel, QueueClient, QueueName, ORCHESTRATION_RESULTS_QUEUE};
use tasker_shared::{TaskWaiter, TaskerConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Everything orchestration needs, shared by the loops and the REST API.
#[derive(Clone)]
pub struct OrchestrationCore {
    pub pool: PgPool,
    pub config: TaskerConfig,
    pub queues: QueueClient,
    pub initializer: TaskInitializer,
    pub results: ResultProcessor,
    pub actor: String,
    /// Shared by every request that waits for a task (one listening connection).
    pub waiter: TaskWaiter,
    /// The dashboard's session secret and revoked sessions.
    pub sessions: crate::dashboard::Sessions,
}

/// A running orchestrator; `shutdown` stops its loops and waits for them.
pub struct OrchestrationHandle {
    token: CancellationToken,
    tasks: JoinSet<()>,
}

impl OrchestrationHandle {
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub async fn shutdown(mut self, deadline: Duration) {
        self.token.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, drain).await.is_err() {
            tracing::warn!("orchestration loops did not stop in time; aborting them");
            self.tasks.abort_all();
        }
    }
}

impl OrchestrationCore {
    pub async fn new(pool: PgPool, config: TaskerConfig) -> Self {
        tasker_shared::observability::prometheus();
        let queues = QueueClient::new(pool.clone()).await;
        let actor = format!(
            "orchestrator:{}:{}",
            tasker_shared::host::hostname(),
            std::process::id()
        );
        let queue =
            QueueName::new(ORCHESTRATION_RESULTS_QUEUE).expect("constant queue name is valid");
        let results = ResultProcessor::new(
            pool.clone(),
            queues.clone(),
            queue,
            config.backoff.clone(),
            actor.clone(),
            config.orchestration.result_processing_concurrency,
        );
        let initializer = TaskInitializer::new(pool.clone(), config.backoff.clone())
            .with_limits(&config.orchestration);
        let waiter = TaskWaiter::new(
            pool.clone(),
            config.orchestration.wait_fallback_poll_interval(),
            config.database.reconnect_backoff(),
        );
        Self {
            sessions: crate::dashboard::Sessions::new(&config.orchestration),
            waiter,
            pool,
            config,
            queues,
            initializer,
            results,
            actor,
        }
    }

    /// Starts the loops; they run until the handle is shut down.
    pub fn start(&self) -> OrchestrationHandle {
        let token = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(result_loop(self.clone(), token.clone()));
        let enqueuer = StepEnqueuer::new(
            self.pool.clone(),
            self.queues.notifier().clone(),
            self.config.orchestration.fallback_poll_interval(),
            self.config.orchestration.enqueue_batch_size,
            self.actor.clone(),
        );
        tasks.spawn(enqueuer.run(token.clone()));
        tasks.spawn(crate::state_gauges::run(
            self.pool.clone(),
            crate::state_gauges::INTERVAL,
            token.clone(),
        ));
        if let Some(interval) = self.config.queues.vacuum_interval() {
            tasks.spawn(crate::queue_maintenance::run(
                self.pool.clone(),
                interval,
                token.clone(),
            ));
        }
        if self.config.retention.enabled {
            tasks.spawn(crate::retention::run(
                self.pool.clone(),
                self.config.retention.clone(),
                token.clone(),
            ));
        }
        tasks.spawn(crate::dead_worker_reaper::run(
            self.pool.clone(),
            self.queues.clone(),
            self.config.worker.clone(),
            self.actor.clone(),
            self.config.orchestration.dead_worker_check_interval(),
            token.clone(),
        ));
        OrchestrationHandle { token, tasks }
    }

    /// Reads and processes result messages until the queue is empty. Returns how many.
    pub async fn drain_results(&self) -> Result<usize, crate::OrchestrationError> {
        let batch = self.config.orchestration.result_batch_size as i32;
        let vt = self.config.orchestration.result_visibility_timeout_seconds as i32;
        let mut total = 0;
        loop {
            let messages = self.queues.read(self.results.queue(), vt, batch).await?;
            if messages.is_empty() {
                return Ok(total);
            }
            total += messages.len();
            let full = messages.len() as i32 == batch;
            self.results.process_batch(&messages).await?;
            if !full {
                return Ok(total);
            }
        }
    }
}

async fn result_loop(core: OrchestrationCore, shutdown: CancellationToken) {
    let channel = notify_channel(core.results.queue());
    let interval = core.config.orchestration.fallback_poll_interval();
    let reconnect = core.config.database.reconnect_backoff();
    let mut listener: Option<PgListener> = None;
    loop {
        if listener.is_none() {
            listener = connect_listener(&core.pool, &channel).await;
        }
        if let Err(e) = core.drain_results().await {
            tracing::warn!(error = %e, "reading orchestration results failed");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(reconnect) => {}
            }
            continue;
        }
        let wake = async {
            match listener.as_mut() {
                Some(l) => match tokio::time::timeout(interval, l.recv()).await {
                    Ok(Ok(_)) | Err(_) => true,
                    Ok(Err(_)) => false,
                },
                None => {
                    tokio::time::sleep(interval).await;
                    true
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            healthy = wake => if !healthy { listener = None; }
        }
    }
}

async fn connect_listener(pool: &PgPool, channel: &str) -> Option<PgListener> {
    let mut l = PgListener::connect_with(pool).await.ok()?;
    l.listen(channel).await.ok()?;
    Some(l)
}

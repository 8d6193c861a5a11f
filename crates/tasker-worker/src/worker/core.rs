//! WorkerCore: wires the pipeline together and owns its shutdown.

use super::actor_command_processor::ActorCommandProcessor;
use super::actors::step_executor_actor::StepExecutorActor;
use super::commands::{WorkerCommand, WorkerStatus};
use super::creation_claims::CreationClaims;
use super::domain_event_callback::DomainEventCallback;
use super::event_system::{EventSystemConfig, WorkerEventSystem};
use super::handlers::completion_processor::{
    ChildClaims, CompletionProcessorService, CompletionSettings,
};
use super::handlers::dispatch_service::{HandlerDispatchService, PostHandlerCallback};
use super::handlers::ffi_dispatch_channel::FfiDispatchChannel;
use super::handlers::registry::HandlerRegistry;
use super::heartbeat::Heartbeat;
use super::in_flight::InFlight;
use super::registration::{Registration, RegistrationError};
use crate::step::DispatchedStep;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::config::ResultsVia;
use tasker_shared::local_worker::{self, LocalWorker};
use tasker_shared::messages::DomainEvent;
use tasker_shared::queue::{domain_events_queue, worker_queue, QueueClient, QueueName};
use tasker_shared::TaskerConfig;
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Who runs the handlers.
#[derive(Clone)]
pub enum Dispatch {
    /// Rust handlers from the registry, run by the HandlerDispatchService.
    Rust(Arc<HandlerRegistry>),
    /// A foreign-language runtime polls the FfiDispatchChannel.
    Ffi,
}

#[derive(Clone)]
pub struct WorkerOptions {
    pub namespaces: Vec<String>,
    pub dispatch: Dispatch,
    /// Defaults to `<host>:<pid>:<random>`.
    pub worker_id: Option<String>,
    /// Extra callbacks run after each recorded result, after domain events.
    pub callbacks: Vec<Arc<dyn PostHandlerCallback>>,
}

pub struct WorkerCore;

/// A running worker.
pub struct WorkerHandle {
    pub worker_id: String,
    pub ffi: Option<Arc<FfiDispatchChannel>>,
    events: DomainEventCallback,
    commands: mpsc::Sender<WorkerCommand>,
    semaphore: Arc<Semaphore>,
    in_flight: Arc<InFlight>,
    pool: PgPool,
    shutdown: CancellationToken,
    shutdown_timeout: Duration,
    intake: Vec<JoinHandle<()>>,
    dispatcher: Option<JoinHandle<()>>,
    abandon: Option<CancellationToken>,
    completion: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    registration: Option<(CancellationToken, JoinHandle<()>)>,
    /// Listed (weakly) as the local worker of its namespaces while the handle lives.
    _creation_claims: Arc<dyn LocalWorker>,
}

impl WorkerCore {
    pub async fn start(
        pool: PgPool,
        config: &TaskerConfig,
        options: WorkerOptions,
    ) -> Result<WorkerHandle, WorkerStartError> {
        tasker_shared::observability::prometheus();
        let worker_id = options.worker_id.clone().unwrap_or_else(default_worker_id);
        let wc = &config.worker;
        let hd = &wc.mpsc_channels.handler_dispatch;
        let queues = QueueClient::new(pool.clone()).await;
        let mut queue_names = Vec::new();
        for ns in &options.namespaces {
            let q = worker_queue(ns).map_err(|reason| WorkerStartError::Namespace {
                namespace: ns.clone(),
                reason,
            })?;
            queues.ensure_queue(&q).await?;
            let events = domain_events_queue(ns).map_err(|reason| WorkerStartError::Namespace {
                namespace: ns.clone(),
                reason,
            })?;
            queues.ensure_queue(&events).await?;
            queue_names.push(q);
        }
        // Listed before the first claim, so no step of this worker outlives it unnoticed.
        let registration = Registration::register(
            pool.clone(),
            queues.clone(),
            wc.clone(),
            worker_id.clone(),
            options.namespaces.clone(),
        )
        .await?;
        let registration_stop = CancellationToken::new();
        let registration = (
            registration_stop.clone(),
            tokio::spawn(registration.run(registration_stop)),
        );

        let (dispatch_tx, dispatch_rx) = mpsc::channel::<DispatchedStep>(hd.dispatch_buffer_size);
        let (completion_tx, completion_rx) = mpsc::channel(hd.completion_buffer_size);
        let (command_tx, command_rx) = mpsc::channel(wc.command_buffer_size);
        let semaphore = Arc::new(Semaphore::new(hd.max_concurrent_handlers));
        let in_flight = Arc::new(InFlight::default());
        let shutdown = CancellationToken::new();
        let events = DomainEventCallback::new(wc.mpsc_channels.ffi_dispatch.dispatch_buffer_size);

        let mut callbacks: Vec<Arc<dyn PostHandlerCallback>> = vec![Arc::new(events.clone())];
        callbacks.extend(options.callbacks.iter().cloned());
        let child_claims = ChildClaims {
            dispatch: dispatch_tx.downgrade(),
            handlers: hd.max_concurrent_handlers,
            max_in_flight: wc.max_steps_in_flight,
            lease_seconds: wc.claim_lease_seconds as i32,
            stop: shutdown.clone(),
        };
        // Roots of tasks created in this process go straight to this worker where it has
        // room; it lives as long as the handle (the registry holds it weakly).
        let creation_claims: Arc<dyn LocalWorker> = Arc::new(CreationClaims {
            worker_id: worker_id.clone(),
            in_flight: in_flight.clone(),
            claims: child_claims.clone(),
        });
        for ns in &options.namespaces {
            local_worker::register(&pool, ns, Arc::downgrade(&creation_claims));
        }
        let completion = CompletionProcessorService::new(
            pool.clone(),
            queues.notifier().clone(),
            worker_id.clone(),
            in_flight.clone(),
            callbacks,
            CompletionSettings {
                callback_timeout: wc.mpsc_channels.ffi_dispatch.callback_timeout(),
                retry_deadline: wc.completion_retry_deadline(),
                concurrency: wc.max_concurrent_completions,
                backoff: config.backoff.clone(),
                // The orchestrator applies the results, and enqueues their children itself.
                child_claims: (wc.results_via == ResultsVia::Direct).then_some(child_claims),
                max_payload_bytes: wc.max_payload_bytes,
                results_via: wc.results_via,
            },
        );
        let completion = tokio::spawn(completion.run(completion_rx));

        let mut background = Vec::new();
        let mut abandon = None;
        let (dispatcher, ffi) = match &options.dispatch {
            Dispatch::Rust(registry) => {
                let svc = HandlerDispatchService::new(
                    dispatch_rx,
                    completion_tx.clone(),
                    registry.clone(),
                    semaphore.clone(),
                    hd.handler_timeout(),
                    worker_id.clone(),
                );
                abandon = Some(svc.abandon_token());
                (tokio::spawn(svc.run()), None)
            }
            Dispatch::Ffi => {
                let ffi = FfiDispatchChannel::new(
                    wc.mpsc_channels.ffi_dispatch.clone(),
                    wc.mpsc_channels.handler_dispatch.handler_timeout(),
                    completion_tx.clone(),
                    tokio::runtime::Handle::current(),
                    worker_id.clone(),
                );
                background.push(tokio::spawn(ffi.clone().run_sweeper(shutdown.clone())));
                (tokio::spawn(ffi.clone().pump(dispatch_rx)), Some(ffi))
            }
        };
        let executor = StepExecutorActor::new(
            pool.clone(),
            queues.clone(),
            worker_id.clone(),
            wc.claim_lease_seconds,
            config.queues.archive_malformed,
            dispatch_tx.clone(),
            in_flight.clone(),
        );
        // A weak sender: sampling depth must not keep the completion channel open.
        let completion_probe = {
            let weak = completion_tx.downgrade();
            Arc::new(move || match weak.upgrade() {
                Some(tx) => (tx.max_capacity() - tx.capacity(), tx.max_capacity()),
                None => (0, 0),
            }) as Arc<dyn Fn() -> (usize, usize) + Send + Sync>
        };
        drop(completion_tx);
        let processor = ActorCommandProcessor {
            executor,
            in_flight: in_flight.clone(),
            semaphore: semaphore.clone(),
            completion_depth: completion_probe,
            worker_id: worker_id.clone(),
            namespaces: options.namespaces.clone(),
            visibility_timeout_seconds: config.queues.visibility_timeout_seconds as i32,
        };
        let actor = tokio::spawn(processor.run(command_rx));

        let es_config = EventSystemConfig {
            mode: wc.deployment_mode,
            poll_interval: wc.fallback_poll_interval(),
            read_batch_size: config.queues.read_batch_size as usize,
            reconnect_backoff: config.database.reconnect_backoff(),
            max_in_flight: wc.max_steps_in_flight,
        };
        let mut intake = Vec::new();
        for q in queue_names {
            let es = WorkerEventSystem::new(
                pool.clone(),
                queues.notifier().clone(),
                es_config.clone(),
                command_tx.clone(),
                dispatch_tx.clone(),
                in_flight.clone(),
            );
            intake.push(tokio::spawn(es.run_queue(q, shutdown.clone())));
        }
        drop(dispatch_tx);
        intake.push(actor);

        let heartbeat = Heartbeat {
            pool: pool.clone(),
            in_flight: in_flight.clone(),
            worker_id: worker_id.clone(),
            interval: wc.heartbeat_interval(),
            lease_seconds: wc.claim_lease_seconds as i32,
        };
        background.push(tokio::spawn(heartbeat.run(shutdown.clone())));
        tracing::info!(worker_id = %worker_id, namespaces = ?options.namespaces, "worker started");

        Ok(WorkerHandle {
            worker_id,
            ffi,
            events,
            commands: command_tx,
            semaphore,
            in_flight,
            pool,
            shutdown,
            shutdown_timeout: wc.shutdown_timeout(),
            intake,
            dispatcher: Some(dispatcher),
            abandon,
            completion,
            background,
            registration: Some(registration),
            _creation_claims: creation_claims,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerStartError {
    #[error("namespace '{namespace}': {reason}")]
    Namespace { namespace: String, reason: String },
    #[error(transparent)]
    Queue(#[from] tasker_shared::queue::QueueError),
    #[error(transparent)]
    Registration(#[from] RegistrationError),
}

impl WorkerHandle {
    /// Receives `fast` domain events published by this worker.
    pub fn subscribe(&self) -> broadcast::Receiver<DomainEvent> {
        self.events.subscribe()
    }

    pub fn command_sender(&self) -> mpsc::Sender<WorkerCommand> {
        self.commands.clone()
    }

    pub fn semaphore(&self) -> &Arc<Semaphore> {
        &self.semaphore
    }

    pub async fn status(&self) -> Option<WorkerStatus> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(WorkerCommand::GetStatus { reply: tx })
            .await
            .ok()?;
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .ok()?
            .ok()
    }

    /// Graceful shutdown with the configured deadline.
    pub async fn shutdown(self) {
        let deadline = self.shutdown_timeout;
        self.shutdown_within(deadline).await
    }

    /// Stops claiming, lets in-flight handlers finish until `deadline`, records their
    /// results, and hands back (re-enqueues) any step still unfinished.
    pub async fn shutdown_within(mut self, deadline: Duration) {
        let start = Instant::now();
        self.shutdown.cancel();
        drop(self.commands);
        for h in self.intake.drain(..) {
            let _ = h.await;
        }
        let remaining = deadline.saturating_sub(start.elapsed());
        if let Some(ffi) = &self.ffi {
            // Let Ruby finish what it polled; stop handing out more.
            ffi.stop_polling();
            let wait = async {
                while !ffi.in_process_steps().is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            let _ = tokio::time::timeout(remaining, wait).await;
            ffi.close();
        }
        if let Some(mut dispatcher) = self.dispatcher.take() {
            let remaining = deadline.saturating_sub(start.elapsed());
            if tokio::time::timeout(remaining, &mut dispatcher)
                .await
                .is_err()
            {
                tracing::warn!(
                    "handlers still running at the shutdown deadline; handing their steps back"
                );
                if let Some(abandon) = &self.abandon {
                    abandon.cancel();
                }
                if tokio::time::timeout(Duration::from_secs(5), &mut dispatcher)
                    .await
                    .is_err()
                {
                    dispatcher.abort();
                }
            }
        }
        if tokio::time::timeout(Duration::from_secs(30), &mut self.completion)
            .await
            .is_err()
        {
            self.completion.abort();
        }
        let unfinished: Vec<uuid::Uuid> = self
            .in_flight
            .snapshot()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if !unfinished.is_empty() {
            // Released steps get new messages (a claim deleted theirs); their queues'
            // consumers are woken.
            match sqlx::query_scalar::<_, String>("SELECT unnest(tasker.release_steps($1, $2))")
                .bind(&unfinished)
                .bind(&self.worker_id)
                .fetch_all(&self.pool)
                .await
            {
                Ok(queues) => {
                    tracing::info!(steps = unfinished.len(), "handed unfinished steps back");
                    let client = QueueClient::new(self.pool.clone()).await;
                    for queue in queues.into_iter().filter_map(|q| QueueName::new(q).ok()) {
                        client.notify(&queue);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not hand steps back; their leases will expire")
                }
            }
        }
        for h in self.background.drain(..) {
            h.abort();
        }
        // Last: the worker stays listed (and its steps its own) until everything is handed back.
        if let Some((stop, handle)) = self.registration.take() {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
        }
        tracing::info!(worker_id = %self.worker_id, "worker stopped");
    }
}

fn default_worker_id() -> String {
    format!(
        "{}:{}:{}",
        tasker_shared::host::hostname(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

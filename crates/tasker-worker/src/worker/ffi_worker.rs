//! A worker core dispatching through the [`FfiDispatchChannel`]: what a language binding
//! (the Ruby and the Python extension) embeds. Starting, status, domain events and the
//! handing over of the shutdown live here once; the bindings only wrap them in their
//! language's waiting and error conventions.

use crate::worker::commands::{WorkerCommand, WorkerStatus};
use crate::worker::core::WorkerStartError;
use crate::worker::handlers::ffi_dispatch_channel::FfiDispatchChannel;
use crate::{Dispatch, WorkerCore, WorkerHandle, WorkerOptions};
use parking_lot::Mutex;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tasker_shared::database::{self, DatabaseError};
use tasker_shared::messages::DomainEvent;
use tasker_shared::models::{StoreError, TemplateRegistry};
use tasker_shared::template::TaskTemplate;
use tasker_shared::TaskerConfig;
use tokio::sync::{broadcast, mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum FfiWorkerError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("registering template {template}: {source}")]
    Template {
        template: String,
        source: StoreError,
    },
    #[error("starting the worker: {0}")]
    Start(#[from] WorkerStartError),
    #[error("the worker started without an FFI dispatch channel")]
    NoChannel,
}

/// What a binding asks for.
#[derive(Debug, Clone, Default)]
pub struct FfiWorkerOptions {
    pub namespaces: Vec<String>,
    /// Registered before the worker starts, as they apply in the configured environment.
    pub templates: Vec<TaskTemplate>,
    pub worker_id: Option<String>,
}

pub struct FfiWorker {
    pub ffi: Arc<FfiDispatchChannel>,
    pub worker_id: String,
    handle: Mutex<Option<WorkerHandle>>,
    /// Kept apart from the handle so `status` never waits on a shutdown. Dropped when the
    /// shutdown starts: it waits for every command sender to go.
    commands: Mutex<Option<mpsc::Sender<WorkerCommand>>>,
    events: tokio::sync::Mutex<broadcast::Receiver<DomainEvent>>,
    events_dropped: AtomicU64,
}

impl FfiWorker {
    /// Connects, registers `options.templates`, and starts a worker claiming steps of
    /// `options.namespaces` for a foreign language to poll. Also returns the worker's pool,
    /// for embedded orchestration to share; it is not kept here, so the connections go
    /// once the worker has shut down, whenever the binding's object is collected.
    pub async fn start(
        config: &TaskerConfig,
        options: FfiWorkerOptions,
    ) -> Result<(Self, PgPool), FfiWorkerError> {
        let pool = database::connect(&config.database).await?;
        let registry = TemplateRegistry::new(pool.clone());
        for template in &options.templates {
            registry
                .register(template)
                .await
                .map_err(|source| FfiWorkerError::Template {
                    template: template.identity(),
                    source,
                })?;
        }
        let handle = WorkerCore::start(
            pool.clone(),
            config,
            WorkerOptions {
                namespaces: options.namespaces,
                dispatch: Dispatch::Ffi,
                worker_id: options.worker_id,
                callbacks: Vec::new(),
            },
        )
        .await?;
        let ffi = handle.ffi.clone().ok_or(FfiWorkerError::NoChannel)?;
        let worker = Self {
            ffi,
            worker_id: handle.worker_id.clone(),
            commands: Mutex::new(Some(handle.command_sender())),
            events: tokio::sync::Mutex::new(handle.subscribe()),
            events_dropped: AtomicU64::new(0),
            handle: Mutex::new(Some(handle)),
        };
        Ok((worker, pool))
    }

    /// The worker's own counters; None once its shutdown has begun.
    pub async fn status(&self) -> Option<WorkerStatus> {
        let sender = self.commands.lock().clone()?;
        let (tx, rx) = oneshot::channel();
        sender
            .send(WorkerCommand::GetStatus { reply: tx })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// The next `fast` domain event; None once the worker has stopped and every event has
    /// been taken. Events a slow reader missed are counted in [`Self::events_dropped`].
    pub async fn next_event(&self) -> Option<DomainEvent> {
        let mut rx = self.events.lock().await;
        loop {
            match rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.events_dropped.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.load(Ordering::Relaxed)
    }

    /// Takes the handle for a shutdown (`WorkerHandle::shutdown_within`), which the caller
    /// runs (spawned, so an interrupted wait does not abandon it). None when a shutdown
    /// was already taken.
    pub fn take_for_shutdown(&self) -> Option<WorkerHandle> {
        self.commands.lock().take();
        self.handle.lock().take()
    }

    /// True once a shutdown was taken or the channel stopped handing out steps.
    pub fn is_stopped(&self) -> bool {
        self.ffi.is_closed() || self.handle.lock().is_none()
    }
}

//! The client calls a language binding offers its users (Ruby's and Python's `Client`):
//! create a task, read it, wait for it (woken by the database), cancel it. Tasks come back
//! as [`TaskView`]s (the task row, `terminal`, and its steps), which each binding turns
//! into its own objects: straight from the rows, or from their JSON form (`to_json`).

use crate::{task_operations, CreatedTask, OrchestrationError, TaskInitializer, TaskRequest};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tasker_shared::database::{self, DatabaseError, HotConnection};
use tasker_shared::models::{StepRow, StoreError, TaskRow};
use tasker_shared::{Classify, ErrorKind, TaskState, TaskWaiter, TaskerConfig};
use uuid::Uuid;

/// Client pools are for occasional calls beside a worker, not for throughput.
const CLIENT_MAX_CONNECTIONS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A request a binding passed that cannot be a task (names the field).
    #[error("task request.{field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Orchestration(#[from] OrchestrationError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl Classify for ClientError {
    fn kind(&self) -> ErrorKind {
        match self {
            ClientError::InvalidRequest { .. } => ErrorKind::InvalidRequest,
            ClientError::Database(e) => e.kind(),
            ClientError::Orchestration(e) => e.kind(),
            ClientError::Store(e) => e.kind(),
            ClientError::Sql(_) => ErrorKind::Database,
            ClientError::Serialize { .. } => ErrorKind::Internal,
        }
    }
}

#[derive(Clone)]
pub struct TaskClient {
    pool: PgPool,
    initializer: TaskInitializer,
    /// One listening connection for every thread of the process that waits for a task.
    waiter: TaskWaiter,
    /// For creations and the waits' reads, one at a time, beside the pool (a caller
    /// finding it busy takes a pooled connection): a thread creating and waiting for task
    /// after task skips the ping sqlx sends as each pooled connection goes back.
    kept: Arc<HotConnection>,
    initiator: &'static str,
}

impl TaskClient {
    /// Connects with a small pool. Call inside the runtime: the initializer spawns on it.
    /// `initiator` is recorded on tasks created without one (`ruby`, `python`).
    pub async fn connect(
        config: &TaskerConfig,
        initiator: &'static str,
    ) -> Result<Self, ClientError> {
        let mut db = config.database.clone();
        db.max_connections = db.max_connections.min(CLIENT_MAX_CONNECTIONS);
        db.min_connections = db.min_connections.min(db.max_connections);
        let pool = database::connect(&db).await?;
        let kept = Arc::new(HotConnection::new(pool.clone()));
        Ok(Self {
            // A worker this process started takes the roots of the tasks created here that
            // it has room for, claimed in the creating transaction.
            initializer: TaskInitializer::new(pool.clone(), config.backoff.clone())
                .with_limits(&config.orchestration)
                .with_local_claims()
                .with_kept_connection(kept.clone()),
            waiter: TaskWaiter::new(
                pool.clone(),
                config.orchestration.wait_fallback_poll_interval(),
                config.database.reconnect_backoff(),
            ),
            kept,
            pool,
            initiator,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the task: what the creation did (`created` is false when the idempotency
    /// key was taken) and the task, as [`Self::get`] returns it. The statement that creates
    /// the task also reads it back: one round trip per creation.
    pub async fn create(&self, mut request: TaskRequest) -> Result<CreatedView, ClientError> {
        if request.initiator.is_none() {
            request.initiator = Some(self.initiator.into());
        }
        for (field, value) in [
            ("namespace", &request.namespace),
            ("name", &request.name),
            ("version", &request.version),
        ] {
            if value.trim().is_empty() {
                return Err(ClientError::InvalidRequest {
                    field,
                    reason: "must not be empty".into(),
                });
            }
        }
        if !request.context.is_object() {
            return Err(ClientError::InvalidRequest {
                field: "context",
                reason: "must be a JSON object (a Hash, a dict)".into(),
            });
        }
        let (created, task, steps) = self.initializer.create_and_read_task(&request).await?;
        Ok(CreatedView {
            created,
            task: TaskView::new(task, Some(steps)),
        })
    }

    /// The task row, `terminal`, and its steps.
    pub async fn get(&self, id: Uuid) -> Result<TaskView, ClientError> {
        let (task, steps) = self.read(id).await?;
        Ok(TaskView::new(task, Some(steps)))
    }

    /// Waits until the task is terminal or `timeout` passes (woken by the database, not
    /// by polling; cut to the waiter's maximum), then returns it as [`Self::get`] does.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Result<TaskView, ClientError> {
        let timeout = timeout.min(tasker_shared::task_waiter::MAX_WAIT);
        // A read that finds the task finished brings its steps along, and is what this
        // returns; one that does not reads only the task.
        let read = || async {
            let mut lease = self.kept.lease().await?;
            let found = TaskRow::find_with_steps_if_terminal(&mut *lease, id).await?;
            lease.release();
            let state = found.as_ref().and_then(|(t, _)| t.task_state().ok());
            Ok::<_, ClientError>((found, state))
        };
        let (task, steps) = match self.waiter.wait_with(id, timeout, read).await? {
            Some((task, Some(steps))) => (task, steps),
            // Still running at the deadline: the caller reports its steps' states.
            Some((_, None)) => self.read(id).await?,
            None => return Err(self.not_found(id).await),
        };
        Ok(TaskView::new(task, Some(steps)))
    }

    /// Cancels the task; the task row as it now stands (without steps).
    pub async fn cancel(&self, id: Uuid, by: &str) -> Result<TaskView, ClientError> {
        let task = task_operations::cancel_task(&self.pool, id, by).await?;
        Ok(TaskView::new(task, None))
    }

    /// A task's row and steps, in one round trip.
    async fn read(&self, id: Uuid) -> Result<(TaskRow, Vec<StepRow>), ClientError> {
        match TaskRow::find_with_steps(&self.pool, id).await? {
            Some(found) => Ok(found),
            None => Err(self.not_found(id).await),
        }
    }

    /// Not found, or removed by retention (the message says which).
    async fn not_found(&self, id: Uuid) -> ClientError {
        tasker_shared::models::missing_task(&self.pool, id)
            .await
            .into()
    }
}

/// A task as the calls return it: its row's fields, `terminal`, and `steps` (none from
/// [`TaskClient::cancel`]). Serialized flat, as its JSON form has it. The fields are
/// private so `terminal` is always the row's state's, as `new` derives it.
#[derive(Debug, Serialize)]
pub struct TaskView {
    #[serde(flatten)]
    task: TaskRow,
    terminal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<StepRow>>,
}

impl TaskView {
    fn new(task: TaskRow, steps: Option<Vec<StepRow>>) -> Self {
        let terminal = task
            .task_state()
            .map(TaskState::is_terminal)
            .unwrap_or(false);
        Self {
            task,
            terminal,
            steps,
        }
    }

    pub fn to_json(&self) -> Result<Value, ClientError> {
        to_json(self, "the task")
    }
}

/// What [`TaskClient::create`] returns: `task_uuid`, `created` (false when the idempotency
/// key was taken), `state`, and `task`.
#[derive(Debug, Serialize)]
pub struct CreatedView {
    #[serde(flatten)]
    created: CreatedTask,
    task: TaskView,
}

impl CreatedView {
    pub fn to_json(&self) -> Result<Value, ClientError> {
        to_json(self, "the created task")
    }
}

fn to_json(value: &impl Serialize, what: &'static str) -> Result<Value, ClientError> {
    serde_json::to_value(value).map_err(|source| ClientError::Serialize { what, source })
}

use tasker_shared::models::StoreError;
use tasker_shared::queue::QueueError;
use tasker_shared::{Classify, ErrorKind};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum OrchestrationError {
    #[error("no template {namespace}/{name}@{version} is registered")]
    TemplateNotFound {
        namespace: String,
        name: String,
        version: String,
    },
    #[error("context for {template} does not match its input_schema: {}", problems.join("; "))]
    InvalidContext {
        template: String,
        problems: Vec<String>,
    },
    /// A context Tasker cannot store (see `tasker_shared::payload`): too large, too deep, or
    /// holding a NUL character.
    #[error("context for {template} cannot be stored: {problem}")]
    UnstorableContext {
        template: String,
        problem: tasker_shared::payload::PayloadProblem,
    },
    #[error("{template} has {steps} steps, more than orchestration.max_steps_per_task ({max})")]
    TooManySteps {
        template: String,
        steps: usize,
        max: u32,
    },
    #[error("task {0} not found")]
    TaskNotFound(Uuid),
    #[error("task {task} has no step '{step}'")]
    StepNotFound { task: Uuid, step: String },
    #[error("task {task} is {state}: {action} is not possible")]
    TaskFinished {
        task: Uuid,
        state: String,
        action: &'static str,
    },
    #[error("step '{step}' of task {task} is {state}: {action} is not possible")]
    StepActionRefused {
        task: Uuid,
        step: String,
        state: String,
        action: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl OrchestrationError {
    /// For a task that is not in the live tables: removed by retention (the error says so
    /// and when), else [`OrchestrationError::TaskNotFound`].
    pub async fn missing_task(pool: &sqlx::PgPool, task: Uuid) -> Self {
        match tasker_shared::models::missing_task(pool, task).await {
            StoreError::NotFound { .. } => OrchestrationError::TaskNotFound(task),
            other => OrchestrationError::Store(other),
        }
    }
}

impl Classify for OrchestrationError {
    fn kind(&self) -> ErrorKind {
        match self {
            OrchestrationError::TemplateNotFound { .. } => ErrorKind::TemplateNotFound,
            OrchestrationError::InvalidContext { .. }
            | OrchestrationError::UnstorableContext { .. } => ErrorKind::InvalidContext,
            OrchestrationError::TaskNotFound(_) | OrchestrationError::StepNotFound { .. } => {
                ErrorKind::NotFound
            }
            OrchestrationError::TaskFinished { .. }
            | OrchestrationError::StepActionRefused { .. } => ErrorKind::InvalidState,
            OrchestrationError::Store(s) => s.kind(),
            // A template over max_steps_per_task is no database failure, but the bindings'
            // exception contract raises it as one.
            OrchestrationError::TooManySteps { .. }
            | OrchestrationError::Queue(_)
            | OrchestrationError::Database(_) => ErrorKind::Database,
        }
    }
}

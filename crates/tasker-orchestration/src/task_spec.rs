//! A task to create as the creating SQL functions take it: one `tasker.task_spec` per task,
//! its fixed steps as `tasker.step_spec` values, rather than a column array per field.

use crate::task_request::TaskRequest;
use chrono::{DateTime, Utc};
use tasker_shared::claim::ClaimedStep;
use tasker_shared::config::BackoffConfig;
use tasker_shared::template::TaskTemplate;
use uuid::Uuid;

/// A fixed DAG's step: the template's step with its retry settings resolved and its parents
/// by name. Its position is its place in [`TaskSpec::steps`].
#[derive(Clone, Debug, sqlx::Type)]
#[sqlx(type_name = "tasker.step_spec")]
pub(crate) struct StepSpec {
    pub name: String,
    pub handler_callable: String,
    pub handler_initialization: serde_json::Value,
    pub max_attempts: i32,
    pub retryable: bool,
    pub backoff: String,
    pub backoff_base_ms: i64,
    pub max_backoff_ms: i64,
    pub timeout_seconds: Option<i32>,
    pub publishes_events: serde_json::Value,
    /// Its parents by name: its edges, and the count of parents each completing parent
    /// counts itself off (readiness never reads the edges).
    pub dependencies: Vec<String>,
}

/// `tasker.task_spec`: what `tasker.create_task` and `tasker.create_tasks` create.
#[derive(Clone, Debug, sqlx::Type)]
#[sqlx(type_name = "tasker.task_spec")]
pub(crate) struct TaskSpec {
    pub named_task_uuid: Uuid,
    pub context: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub initiator: Option<String>,
    /// Empty for a dynamic template: its blueprints go instead.
    pub steps: Vec<StepSpec>,
}

impl TaskSpec {
    pub(crate) fn new(
        named_task_uuid: Uuid,
        request: &TaskRequest,
        template: &TaskTemplate,
        defaults: &BackoffConfig,
    ) -> Self {
        let steps = if template.is_dynamic() {
            Vec::new()
        } else {
            template
                .steps
                .iter()
                .map(|step| {
                    let retry = step.retry.resolve(defaults);
                    StepSpec {
                        name: step.name.clone(),
                        handler_callable: step.handler.callable.clone(),
                        handler_initialization: serde_json::Value::Object(
                            step.handler.initialization.clone(),
                        ),
                        max_attempts: retry.max_attempts as i32,
                        retryable: retry.retryable,
                        backoff: retry.backoff.as_str().to_string(),
                        backoff_base_ms: retry.backoff_base_ms as i64,
                        max_backoff_ms: retry.max_backoff_ms as i64,
                        timeout_seconds: step.timeout_seconds.map(|t| t as i32),
                        publishes_events: serde_json::to_value(&step.publishes_events)
                            .expect("events serialize"),
                        dependencies: step.dependencies.clone(),
                    }
                })
                .collect()
        };
        Self {
            named_task_uuid,
            context: request.context.clone(),
            idempotency_key: request.idempotency_key.clone(),
            initiator: request.initiator.clone(),
            steps,
        }
    }

    /// Steps with no parent: those the task starts with.
    pub(crate) fn roots(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.dependencies.is_empty())
            .count()
    }

    /// Whether the task starts as soon as it is created: a fixed DAG with a root step.
    /// Only such tasks are created together (`tasker.create_tasks`).
    pub(crate) fn starts_at_once(&self) -> bool {
        self.roots() > 0
    }

    /// The roots the creation of `task` claimed (id and name of each), as the local worker
    /// runs them: what they need is the request's and the template's.
    pub(crate) fn claimed_roots(
        &self,
        request: &TaskRequest,
        task: Uuid,
        lease_expires_at: DateTime<Utc>,
        claimed: sqlx::types::Json<Vec<(Uuid, String)>>,
    ) -> Vec<ClaimedStep> {
        claimed
            .0
            .into_iter()
            .filter_map(|(step_uuid, name)| {
                let step = self.steps.iter().find(|s| s.name == name)?;
                Some(ClaimedStep {
                    step_uuid,
                    task_uuid: task,
                    step_name: name,
                    namespace: request.namespace.clone(),
                    task_name: request.name.clone(),
                    task_version: request.version.clone(),
                    attempt: 1,
                    max_attempts: step.max_attempts,
                    handler_callable: step.handler_callable.clone(),
                    handler_initialization: step.handler_initialization.clone(),
                    timeout_seconds: step.timeout_seconds,
                    publishes_events: step.publishes_events.clone(),
                    // The column's default: a fixed DAG's steps have no inputs.
                    inputs: serde_json::Value::Object(Default::default()),
                    task_context: request.context.clone(),
                    dependency_results: serde_json::Value::Object(Default::default()),
                    lease_expires_at,
                })
            })
            .collect()
    }
}

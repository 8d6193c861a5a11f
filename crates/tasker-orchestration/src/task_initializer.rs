//! Creates a task, its steps, edges and first transitions in one transaction, and enqueues
//! its root steps in that same transaction.

use crate::OrchestrationError;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use tasker_shared::config::BackoffConfig;
use tasker_shared::models::{RegisteredTemplate, TemplateRegistry};
use tasker_shared::queue::{worker_queue, Notifier};
use tasker_shared::template::TaskTemplate;
use uuid::Uuid;

/// What a caller asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    pub namespace: String,
    pub name: String,
    pub version: String,
    #[serde(default = "empty_object")]
    pub context: serde_json::Value,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub initiator: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedTask {
    pub task_uuid: Uuid,
    /// False when an existing task was returned for the request's idempotency key.
    pub created: bool,
    pub state: String,
}

type Validators = HashMap<Uuid, Arc<jsonschema::Validator>>;

#[derive(Clone)]
pub struct TaskInitializer {
    pool: PgPool,
    registry: TemplateRegistry,
    backoff: BackoffConfig,
    actor: String,
    validators: Arc<Mutex<Validators>>,
    notifier: Notifier,
    max_steps_per_task: u32,
}

/// `[orchestration] max_steps_per_task`'s default.
pub const DEFAULT_MAX_STEPS_PER_TASK: u32 = 10_000;

impl TaskInitializer {
    /// Must be called inside a tokio runtime (it starts the queue notifier).
    pub fn new(pool: PgPool, backoff: BackoffConfig) -> Self {
        Self {
            registry: TemplateRegistry::new(pool.clone()),
            notifier: Notifier::spawn(pool.clone()),
            pool,
            backoff,
            actor: "task_initializer".into(),
            validators: Arc::default(),
            max_steps_per_task: DEFAULT_MAX_STEPS_PER_TASK,
        }
    }

    /// The ceiling on one task's steps, including those its outcomes create.
    pub fn with_max_steps_per_task(mut self, max: u32) -> Self {
        self.max_steps_per_task = max;
        self
    }

    pub async fn create_task(
        &self,
        request: &TaskRequest,
    ) -> Result<CreatedTask, OrchestrationError> {
        let registered = self
            .registry
            .find(&request.namespace, &request.name, &request.version)
            .await?
            .ok_or_else(|| OrchestrationError::TemplateNotFound {
                namespace: request.namespace.clone(),
                name: request.name.clone(),
                version: request.version.clone(),
            })?;
        self.check_context(&registered, &request.context)?;
        let template = &registered.template;
        if template.steps.len() > self.max_steps_per_task as usize {
            return Err(OrchestrationError::TooManySteps {
                template: template.identity(),
                steps: template.steps.len(),
                max: self.max_steps_per_task,
            });
        }

        let mut tx = self.pool.begin().await?;
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO tasker.tasks (named_task_uuid, context, idempotency_key, initiator)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (named_task_uuid, idempotency_key) DO NOTHING
             RETURNING task_uuid",
        )
        .bind(registered.named_task_uuid)
        .bind(&request.context)
        .bind(&request.idempotency_key)
        .bind(&request.initiator)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(task) = inserted else {
            // The key was taken (possibly by a concurrent identical request, which we waited
            // for): hand back that task.
            let (task, state): (Uuid, String) = sqlx::query_as(
                "SELECT task_uuid, state FROM tasker.tasks WHERE named_task_uuid = $1 AND idempotency_key = $2",
            )
            .bind(registered.named_task_uuid)
            .bind(&request.idempotency_key)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(CreatedTask {
                task_uuid: task,
                created: false,
                state,
            });
        };

        if template.is_dynamic() {
            // Only what is certain is created now; the rest waits for outcomes.
            sqlx::query("SELECT tasker.create_dynamic_steps($1, $2, $3, $4)")
                .bind(task)
                .bind(self.blueprints(template))
                .bind(self.max_steps_per_task as i32)
                .bind(&self.actor)
                .execute(&mut *tx)
                .await?;
        } else {
            self.insert_steps(&mut tx, task, template).await?;
        }
        let state: String = sqlx::query_scalar("SELECT tasker.start_task($1, $2)")
            .bind(task)
            .bind(&self.actor)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        if let Ok(queue) = worker_queue(&request.namespace) {
            self.notifier.notify(&queue);
        }
        metrics::counter!("tasker_tasks_created_total", "namespace" => request.namespace.clone())
            .increment(1);
        tracing::debug!(task = %task, template = %template.identity(), "task created");
        Ok(CreatedTask {
            task_uuid: task,
            created: true,
            state,
        })
    }

    /// A dynamic template's steps as `tasker.create_dynamic_steps` takes them: resolved
    /// retry settings, dependencies, and each step's gate.
    fn blueprints(&self, template: &TaskTemplate) -> serde_json::Value {
        template
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let retry = step.retry.resolve(&self.backoff);
                serde_json::json!({
                    "name": step.name,
                    "position": i,
                    "step_type": step.step_type.as_str(),
                    "handler_callable": step.handler.callable,
                    "handler_initialization": step.handler.initialization,
                    "max_attempts": retry.max_attempts,
                    "retryable": retry.retryable,
                    "backoff": retry.backoff.as_str(),
                    "backoff_base_ms": retry.backoff_base_ms,
                    "max_backoff_ms": retry.max_backoff_ms,
                    "timeout_seconds": step.timeout_seconds,
                    "publishes_events": step.publishes_events,
                    "dependencies": step.dependencies,
                    "gate": template.gate_of(&step.name),
                    "batch_worker": step.batch.as_ref().map(|b| &b.worker),
                    "max_workers": step.batch.as_ref().map(|b| b.max_workers),
                })
            })
            .collect()
    }

    /// A fixed DAG's steps with their first transitions (one statement), then its edges.
    async fn insert_steps(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        task: Uuid,
        template: &TaskTemplate,
    ) -> Result<(), OrchestrationError> {
        let n = template.steps.len();
        let mut names = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut callables = Vec::with_capacity(n);
        let mut inits = Vec::with_capacity(n);
        let mut max_attempts = Vec::with_capacity(n);
        let mut retryable = Vec::with_capacity(n);
        let mut backoff = Vec::with_capacity(n);
        let mut base_ms = Vec::with_capacity(n);
        let mut max_ms = Vec::with_capacity(n);
        let mut timeouts: Vec<Option<i32>> = Vec::with_capacity(n);
        let mut events = Vec::with_capacity(n);
        // Parents not yet complete: a step is ready from this counter alone, without
        // reading its edges, and each completing parent counts itself off.
        let mut parents = Vec::with_capacity(n);
        for (i, step) in template.steps.iter().enumerate() {
            let retry = step.retry.resolve(&self.backoff);
            names.push(step.name.clone());
            positions.push(i as i32);
            callables.push(step.handler.callable.clone());
            inits.push(serde_json::Value::Object(
                step.handler.initialization.clone(),
            ));
            max_attempts.push(retry.max_attempts as i32);
            retryable.push(retry.retryable);
            backoff.push(retry.backoff.as_str().to_string());
            base_ms.push(retry.backoff_base_ms as i64);
            max_ms.push(retry.max_backoff_ms as i64);
            timeouts.push(step.timeout_seconds.map(|t| t as i32));
            events.push(serde_json::to_value(&step.publishes_events).expect("events serialize"));
            parents.push(step.dependencies.len() as i32);
        }
        let ids: Vec<(Uuid, String)> = sqlx::query_as(
            "WITH created AS (
               INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
                 handler_initialization, max_attempts, retryable, backoff, backoff_base_ms,
                 max_backoff_ms, timeout_seconds, publishes_events, parent_count, pending_parents)
               SELECT $1, u.*, u.parents FROM unnest($2::text[], $3::int[], $4::text[],
                 $5::jsonb[], $6::int[], $7::bool[], $8::text[], $9::bigint[], $10::bigint[],
                 $11::int[], $12::jsonb[], $13::int[]) AS u(name, position, callable, init,
                 max_attempts, retryable, backoff, base_ms, max_ms, timeout, events, parents)
               RETURNING step_uuid, name
             ), logged AS (
               INSERT INTO tasker.workflow_step_transition_log
                 (step_uuid, task_uuid, from_state, to_state, sort_key, actor)
               SELECT c.step_uuid, $1, NULL, 'pending', 0, $14 FROM created c
             )
             SELECT step_uuid, name FROM created",
        )
        .bind(task)
        .bind(&names)
        .bind(&positions)
        .bind(&callables)
        .bind(&inits)
        .bind(&max_attempts)
        .bind(&retryable)
        .bind(&backoff)
        .bind(&base_ms)
        .bind(&max_ms)
        .bind(&timeouts)
        .bind(&events)
        .bind(&parents)
        .bind(&self.actor)
        .fetch_all(&mut **tx)
        .await?;
        let by_name: HashMap<&str, Uuid> =
            ids.iter().map(|(id, name)| (name.as_str(), *id)).collect();
        let (mut from, mut to) = (Vec::new(), Vec::new());
        for step in &template.steps {
            for dep in &step.dependencies {
                from.push(by_name[dep.as_str()]);
                to.push(by_name[step.name.as_str()]);
            }
        }
        if !from.is_empty() {
            sqlx::query(
                "INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
                 SELECT $1, f, t FROM unnest($2::uuid[], $3::uuid[]) AS e(f, t)",
            )
            .bind(task)
            .bind(&from)
            .bind(&to)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    fn check_context(
        &self,
        registered: &RegisteredTemplate,
        context: &serde_json::Value,
    ) -> Result<(), OrchestrationError> {
        let Some(schema) = &registered.template.input_schema else {
            return Ok(());
        };
        let validator = {
            let mut cache = self.validators.lock();
            match cache.get(&registered.named_task_uuid) {
                Some(v) => v.clone(),
                None => {
                    let v = Arc::new(jsonschema::validator_for(schema).map_err(|e| {
                        OrchestrationError::InvalidContext {
                            template: registered.template.identity(),
                            problems: vec![format!("registered input_schema is invalid: {e}")],
                        }
                    })?);
                    cache.insert(registered.named_task_uuid, v.clone());
                    v
                }
            }
        };
        let problems: Vec<String> = validator
            .iter_errors(context)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(OrchestrationError::InvalidContext {
                template: registered.template.identity(),
                problems,
            })
        }
    }
}

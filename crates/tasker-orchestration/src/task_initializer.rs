//! Creates a task, its steps, edges and first transitions in one transaction, and enqueues
//! its root steps in that same transaction.

use crate::creation_batcher::{BatchItem, CreationBatcher};
use crate::task_request::{CreatedTask, TaskRequest, TASKS_CREATED};
use crate::task_spec::TaskSpec;
use crate::OrchestrationError;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::sync::Arc;
use tasker_shared::config::{BackoffConfig, OrchestrationConfig};
use tasker_shared::database::HotConnection;
use tasker_shared::local_worker::{self, LocalWorker, RootReservation};
use tasker_shared::models::{RegisteredTemplate, StepRow, StoreError, TaskRow, TemplateRegistry};
use tasker_shared::queue::{worker_queue, Notifier, QueueName};
use tasker_shared::template::TaskTemplate;
use uuid::Uuid;

type Validators = HashMap<Uuid, Arc<jsonschema::Validator>>;

#[derive(Clone)]
pub struct TaskInitializer {
    pool: PgPool,
    registry: TemplateRegistry,
    backoff: BackoffConfig,
    actor: String,
    validators: Arc<Mutex<Validators>>,
    notifier: Notifier,
    batcher: CreationBatcher,
    max_steps_per_task: u32,
    max_payload_bytes: usize,
    /// Whether a worker of this process serving the task's namespace gets its roots
    /// claimed at creation (see [`with_local_claims`](Self::with_local_claims)).
    local_claims: bool,
    /// A connection kept for one creation at a time (see
    /// [`with_kept_connection`](Self::with_kept_connection)).
    kept: Option<Arc<HotConnection>>,
}

/// `[orchestration] max_steps_per_task`'s default.
pub const DEFAULT_MAX_STEPS_PER_TASK: u32 = 10_000;

impl TaskInitializer {
    /// Must be called inside a tokio runtime (it starts the queue notifier and the creation
    /// batcher).
    pub fn new(pool: PgPool, backoff: BackoffConfig) -> Self {
        let actor = "task_initializer".to_string();
        let notifier = Notifier::spawn(pool.clone());
        Self {
            registry: TemplateRegistry::new(pool.clone()),
            batcher: CreationBatcher::spawn(pool.clone(), actor.clone(), notifier.clone()),
            notifier,
            pool,
            backoff,
            actor,
            validators: Arc::default(),
            max_steps_per_task: DEFAULT_MAX_STEPS_PER_TASK,
            max_payload_bytes: tasker_shared::payload::DEFAULT_MAX_PAYLOAD_BYTES,
            local_claims: false,
            kept: None,
        }
    }

    /// Creations (those not folded into a batch) go through `kept`, a connection kept
    /// beside the pool, while it is free, and through the pool otherwise: for a client
    /// creating task after task, whose every pooled statement also cost a ping as the
    /// connection went back (see HotConnection).
    pub fn with_kept_connection(mut self, kept: Arc<HotConnection>) -> Self {
        self.kept = Some(kept);
        self
    }

    /// Tasks created by this initializer hand their root steps to a worker running in this
    /// process for their namespace (`tasker_shared::local_worker`), claimed in the creating
    /// transaction, as many as that worker has room for; the rest are enqueued as usual. For a process that creates tasks one by one for its own worker, this saves a
    /// queue read and a claim transaction per task.
    pub fn with_local_claims(mut self) -> Self {
        self.local_claims = true;
        self
    }

    /// The limits of `[orchestration]` that apply to creation: `max_steps_per_task` (the
    /// ceiling on one task's steps, including those its outcomes create) and
    /// `max_payload_bytes` (the largest context).
    pub fn with_limits(mut self, config: &OrchestrationConfig) -> Self {
        self.max_steps_per_task = config.max_steps_per_task;
        self.max_payload_bytes = config.max_payload_bytes;
        self
    }

    pub async fn create_task(
        &self,
        request: &TaskRequest,
    ) -> Result<CreatedTask, OrchestrationError> {
        Ok(self.create(request, Statement::Create).await?.0)
    }

    /// Creates the task as [`create_task`](Self::create_task) does and reads it back, row
    /// and steps, in the same round trip (`tasker.create_task` with `p_read`): what a client that
    /// returns the created task needs, without waiting on the database twice.
    pub async fn create_and_read_task(
        &self,
        request: &TaskRequest,
    ) -> Result<(CreatedTask, TaskRow, Vec<StepRow>), OrchestrationError> {
        let (created, rows) = self.create(request, Statement::CreateRead).await?;
        let (task, steps) = rows.ok_or_else(|| StoreError::NotFound {
            what: "task",
            id: created.task_uuid.to_string(),
        })?;
        Ok((created, task, steps))
    }

    async fn create(
        &self,
        request: &TaskRequest,
        statement: Statement,
    ) -> Result<(CreatedTask, Option<(TaskRow, Vec<StepRow>)>), OrchestrationError> {
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

        let spec = TaskSpec::new(registered.named_task_uuid, request, template, &self.backoff);
        let queue = worker_queue(&request.namespace).ok();
        let local = match &queue {
            Some(_) if self.local_claims && spec.starts_at_once() && !request.is_scheduled() => {
                self.reserve_local(&request.namespace, &spec)
            }
            _ => None,
        };
        // A fixed DAG that only needs creating goes with whatever other requests are being
        // created meanwhile (see CreationBatcher), unless a local worker takes its roots.
        let spec = if local.is_none()
            && matches!(statement, Statement::Create)
            && spec.starts_at_once()
            && request.run_at.is_none()
        {
            let item = BatchItem {
                namespace: request.namespace.clone(),
                task: spec,
            };
            match self.batcher.create(item).await {
                Some(Ok(created)) => return Ok((created, None)),
                Some(Err(item)) => item.task,
                None => TaskSpec::new(registered.named_task_uuid, request, template, &self.backoff),
            }
        } else {
            spec
        };
        // One round trip: the task (or the one holding its idempotency key), its steps,
        // edges and first transitions, and its start (tasker.create_task).
        let blueprints = template.is_dynamic().then(|| self.blueprints(template));
        let sql = statement.sql(queue.as_ref());
        let mut query = sqlx::query(&sql)
            .bind(&self.actor)
            .bind(&spec)
            .bind(blueprints)
            .bind(self.max_steps_per_task as i32);
        if queue.is_some() {
            let worker = local.as_ref().map(|l| l.worker.clone());
            query = query
                .bind(worker.as_ref().map(|w| w.worker_id().to_string()))
                .bind(local.as_ref().map_or(0, |l| l.reservation.room() as i32))
                .bind(worker.as_ref().map_or(0, |w| w.lease_seconds()));
        }
        let query = query.bind(request.run_at);
        let row = match &self.kept {
            Some(kept) => {
                let mut lease = kept.lease().await?;
                let row = query.fetch_one(&mut *lease).await;
                lease.settle(row)?
            }
            None => query.fetch_one(&self.pool).await?,
        };
        // The task, whether this call created it, its state, and the roots it claimed for a
        // local worker: their lease's expiry, their ids and names. The task row and its
        // steps (Statement::CreateRead only) are decoded after the hand-over: the
        // task exists, and its claimed roots run, whatever their decoding reports.
        let task: Uuid = row.try_get(0)?;
        let created: bool = row.try_get(1)?;
        let state: String = row.try_get(2)?;
        let lease: Option<DateTime<Utc>> = row.try_get(5)?;
        let claimed: Option<sqlx::types::Json<Vec<(Uuid, String)>>> = row.try_get(6)?;
        let claimed = match (lease, claimed) {
            (Some(lease), Some(claimed)) => spec.claimed_roots(request, task, lease, claimed),
            _ => Vec::new(),
        };
        let all_claimed = !claimed.is_empty() && claimed.len() == spec.roots();
        if let Some(local) = local {
            local.reservation.hand_over(claimed);
        }
        if created {
            // Roots claimed for a local worker were handed to it; the rest wait in the queue
            // (hidden until its run_at when the task is scheduled: nobody to wake yet).
            if let Some(queue) = queue
                .as_ref()
                .filter(|_| !all_claimed && !request.is_scheduled())
            {
                self.notifier.notify(queue);
            }
            metrics::counter!(TASKS_CREATED, "namespace" => request.namespace.clone()).increment(1);
            tracing::debug!(task = %task, template = %template.identity(), "task created");
        }
        let decoded = |e| StoreError::undecodable(e, "created task", task);
        let task_row: Option<TaskRow> = row.try_get(3).map_err(decoded)?;
        let step_rows: Option<Vec<StepRow>> = row.try_get(4).map_err(decoded)?;
        let rows = task_row.zip(step_rows);
        let created = CreatedTask {
            task_uuid: task,
            created,
            state,
        };
        Ok((created, rows))
    }

    /// Room with the local worker serving `namespace`, for as many of these roots as it
    /// has room for.
    fn reserve_local(&self, namespace: &str, spec: &TaskSpec) -> Option<LocalClaim> {
        let worker = local_worker::find(&self.pool, namespace)?;
        let reservation = worker.reserve(spec.roots())?;
        Some(LocalClaim {
            worker,
            reservation,
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

    fn check_context(
        &self,
        registered: &RegisteredTemplate,
        context: &serde_json::Value,
    ) -> Result<(), OrchestrationError> {
        tasker_shared::payload::check(context, "context", self.max_payload_bytes).map_err(
            |problem| OrchestrationError::UnstorableContext {
                template: registered.template.identity(),
                problem,
            },
        )?;
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

/// A local worker, and the room it holds for the roots the creation is about to claim.
struct LocalClaim {
    worker: Arc<dyn LocalWorker>,
    reservation: Box<dyn RootReservation>,
}

/// Which creating statement runs; both take the same arguments.
#[derive(Clone, Copy)]
enum Statement {
    Create,
    CreateRead,
}

impl Statement {
    /// With `queue`, the namespace's worker queue, the statement inserts the new task's
    /// root messages itself, with a static INSERT prepared once per connection, rather than
    /// by `send_step_messages`' dynamic SQL (planned on every call) in `tasker.create_task`.
    /// It then also takes the claim of roots for a local worker ($5 worker, $6 how many
    /// roots, $7 lease seconds; NULL, 0, 0 for none): those get no message (a claimed step
    /// has none) and come back with their ids and names. The last parameter is the task's
    /// run_at: the other roots' messages stay hidden until then.
    fn sql(self, queue: Option<&QueueName>) -> String {
        let read = matches!(self, Statement::CreateRead);
        match queue {
            Some(queue) => format!(
                "WITH c AS MATERIALIZED (
                   SELECT * FROM tasker.create_task($1, $2, $3, $4, true, $5, $6, $7, $8,
                                                    p_read => {read})),
                 roots AS (
                   SELECT m, coalesce((m->>'step_uuid')::uuid = ANY (c.claimed), false) AS claimed
                     FROM c, jsonb_array_elements(c.messages) AS m),
                 sent AS (
                   INSERT INTO {table} (vt, message)
                   SELECT greatest(clock_timestamp(), $8), r.m FROM roots r WHERE NOT r.claimed)
                 SELECT c.task_uuid, c.created, c.state, c.task, c.steps, c.lease_expires_at,
                        (SELECT json_agg(json_build_array(r.m->'step_uuid', r.m->'step_name'))
                           FROM roots r WHERE r.claimed)
                   FROM c",
                table = queue.table()
            ),
            None => format!(
                "SELECT c.task_uuid, c.created, c.state, c.task, c.steps, NULL::timestamptz,
                        NULL::json
                   FROM tasker.create_task($1, $2, $3, $4, p_run_at => $5, p_read => {read}) AS c"
            ),
        }
    }
}

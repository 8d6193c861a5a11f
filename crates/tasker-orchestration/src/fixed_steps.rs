//! A fixed DAG's steps in the column arrays the creating SQL functions take.

use crate::task_request::TaskRequest;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::Postgres;
use tasker_shared::claim::ClaimedStep;
use tasker_shared::config::BackoffConfig;
use tasker_shared::local_worker::ClaimedRoot;
use tasker_shared::template::TaskTemplate;
use uuid::Uuid;

/// A fixed DAG's steps as `tasker.create_task` takes them: one array per column, retry
/// settings resolved, and the edges by step name. Empty for a dynamic template (its
/// blueprints go instead).
#[derive(Default)]
pub(crate) struct FixedSteps {
    pub names: Vec<String>,
    pub positions: Vec<i32>,
    pub callables: Vec<String>,
    pub inits: Vec<serde_json::Value>,
    pub max_attempts: Vec<i32>,
    pub retryable: Vec<bool>,
    pub backoff: Vec<String>,
    pub base_ms: Vec<i64>,
    pub max_ms: Vec<i64>,
    pub timeouts: Vec<Option<i32>>,
    pub events: Vec<serde_json::Value>,
    /// Parents not yet complete: a step is ready from this counter alone, without reading
    /// its edges, and each completing parent counts itself off.
    pub parents: Vec<i32>,
    pub edge_from: Vec<String>,
    pub edge_to: Vec<String>,
}

impl FixedSteps {
    /// Another task's steps after these (`tasker.create_tasks` takes every task's steps in
    /// one set of arrays).
    pub(crate) fn append(&mut self, other: &FixedSteps) {
        self.names.extend_from_slice(&other.names);
        self.positions.extend_from_slice(&other.positions);
        self.callables.extend_from_slice(&other.callables);
        self.inits.extend_from_slice(&other.inits);
        self.max_attempts.extend_from_slice(&other.max_attempts);
        self.retryable.extend_from_slice(&other.retryable);
        self.backoff.extend_from_slice(&other.backoff);
        self.base_ms.extend_from_slice(&other.base_ms);
        self.max_ms.extend_from_slice(&other.max_ms);
        self.timeouts.extend_from_slice(&other.timeouts);
        self.events.extend_from_slice(&other.events);
        self.parents.extend_from_slice(&other.parents);
        self.edge_from.extend_from_slice(&other.edge_from);
        self.edge_to.extend_from_slice(&other.edge_to);
    }

    /// Binds the per-step columns, names to parents, in the order the creating functions
    /// (`tasker.create_task`, `tasker.create_tasks`) take them.
    pub(crate) fn bind_columns<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query
            .bind(&self.names)
            .bind(&self.positions)
            .bind(&self.callables)
            .bind(&self.inits)
            .bind(&self.max_attempts)
            .bind(&self.retryable)
            .bind(&self.backoff)
            .bind(&self.base_ms)
            .bind(&self.max_ms)
            .bind(&self.timeouts)
            .bind(&self.events)
            .bind(&self.parents)
    }

    /// Steps with no parent: those the task starts with.
    pub(crate) fn roots(&self) -> usize {
        self.parents.iter().filter(|p| **p == 0).count()
    }

    /// `tasker.create_task`'s `p_claims`: the first `n` roots, in template order.
    pub(crate) fn claim_roots(&self, n: usize) -> Vec<bool> {
        let mut left = n;
        self.parents
            .iter()
            .map(|p| {
                let claim = *p == 0 && left > 0;
                left -= usize::from(claim);
                claim
            })
            .collect()
    }

    /// The roots the creation of `task` claimed (id, name and message id of each), as the
    /// local worker runs them: what they need is the request's and the template's.
    pub(crate) fn claimed_roots(
        &self,
        request: &TaskRequest,
        task: Uuid,
        lease_expires_at: DateTime<Utc>,
        claimed: sqlx::types::Json<Vec<(Uuid, String, i64)>>,
    ) -> Vec<ClaimedRoot> {
        claimed
            .0
            .into_iter()
            .filter_map(|(step_uuid, name, msg_id)| {
                let i = self.names.iter().position(|n| *n == name)?;
                Some(ClaimedRoot {
                    msg_id,
                    claim: ClaimedStep {
                        step_uuid,
                        task_uuid: task,
                        step_name: name,
                        namespace: request.namespace.clone(),
                        task_name: request.name.clone(),
                        task_version: request.version.clone(),
                        attempt: 1,
                        max_attempts: self.max_attempts[i],
                        handler_callable: self.callables[i].clone(),
                        handler_initialization: self.inits[i].clone(),
                        timeout_seconds: self.timeouts[i],
                        publishes_events: self.events[i].clone(),
                        // The column's default: a fixed DAG's steps have no inputs.
                        inputs: serde_json::Value::Object(Default::default()),
                        task_context: request.context.clone(),
                        dependency_results: serde_json::Value::Object(Default::default()),
                        lease_expires_at,
                    },
                })
            })
            .collect()
    }

    /// Whether the task starts as soon as it is created: a fixed DAG with a root step.
    /// Only such tasks are created together (`tasker.create_tasks`).
    pub(crate) fn starts_at_once(&self) -> bool {
        self.parents.contains(&0)
    }

    pub(crate) fn of(template: &TaskTemplate, defaults: &BackoffConfig) -> Self {
        let mut s = Self::default();
        if template.is_dynamic() {
            return s;
        }
        for (i, step) in template.steps.iter().enumerate() {
            let retry = step.retry.resolve(defaults);
            s.names.push(step.name.clone());
            s.positions.push(i as i32);
            s.callables.push(step.handler.callable.clone());
            s.inits.push(serde_json::Value::Object(
                step.handler.initialization.clone(),
            ));
            s.max_attempts.push(retry.max_attempts as i32);
            s.retryable.push(retry.retryable);
            s.backoff.push(retry.backoff.as_str().to_string());
            s.base_ms.push(retry.backoff_base_ms as i64);
            s.max_ms.push(retry.max_backoff_ms as i64);
            s.timeouts.push(step.timeout_seconds.map(|t| t as i32));
            s.events
                .push(serde_json::to_value(&step.publishes_events).expect("events serialize"));
            s.parents.push(step.dependencies.len() as i32);
            for dep in &step.dependencies {
                s.edge_from.push(dep.clone());
                s.edge_to.push(step.name.clone());
            }
        }
        s
    }
}

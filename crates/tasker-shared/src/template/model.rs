use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::config::BackoffConfig;

/// A named, versioned DAG of steps. Field names are the YAML contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTemplate {
    pub name: String,
    pub namespace: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema that a task's context must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
    pub steps: Vec<StepTemplate>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, EnvironmentOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTemplate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the step does to the shape of the workflow (see `StepType`).
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "StepType::is_standard"
    )]
    pub step_type: StepType,
    /// For a `batchable` step: which `batch_worker` step is copied per batch, and how many
    /// copies one outcome may create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchConfig>,
    pub handler: HandlerDefinition,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publishes_events: Vec<EventDeclaration>,
}

/// How a step shapes the workflow. Only `standard` steps exist in a fixed DAG; the others
/// let a running task decide which steps it gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    #[default]
    Standard,
    /// Its handler chooses which of its direct dependents are created (`next_steps`).
    Decision,
    /// Its handler returns batches; one copy of `batch.worker` is created per batch.
    Batchable,
    /// A template for the copies a batchable parent creates; never created by its own name.
    BatchWorker,
    /// Runs once whichever of its dependencies were created are complete.
    DeferredConvergence,
}

impl StepType {
    pub fn as_str(self) -> &'static str {
        match self {
            StepType::Standard => "standard",
            StepType::Decision => "decision",
            StepType::Batchable => "batchable",
            StepType::BatchWorker => "batch_worker",
            StepType::DeferredConvergence => "deferred_convergence",
        }
    }

    pub fn is_standard(&self) -> bool {
        *self == StepType::Standard
    }

    /// Decision and batchable steps: their outcome creates steps.
    pub fn creates_steps(self) -> bool {
        matches!(self, StepType::Decision | StepType::Batchable)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// The name of the `batch_worker` step copied once per batch.
    pub worker: String,
    /// The most batches one outcome may return.
    pub max_workers: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerDefinition {
    /// A Ruby class name or a Rust handler's registered name.
    pub callable: String,
    /// Handed to the handler as-is.
    #[serde(default)]
    pub initialization: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    None,
    Linear,
    Exponential,
}

impl BackoffKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackoffKind::None => "none",
            BackoffKind::Linear => "linear",
            BackoffKind::Exponential => "exponential",
        }
    }
}

/// Unset fields take the `[backoff]` defaults from configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default = "yes")]
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default = "exponential")]
    pub backoff: BackoffKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

fn exponential() -> BackoffKind {
    BackoffKind::Exponential
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retryable: true,
            max_attempts: None,
            backoff: BackoffKind::Exponential,
            backoff_base_ms: None,
            max_backoff_ms: None,
        }
    }
}

/// A retry policy with every default filled in: what a workflow step row stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedRetry {
    pub retryable: bool,
    pub max_attempts: u32,
    pub backoff: BackoffKind,
    pub backoff_base_ms: u64,
    pub max_backoff_ms: u64,
}

impl RetryPolicy {
    pub fn resolve(&self, defaults: &BackoffConfig) -> ResolvedRetry {
        ResolvedRetry {
            retryable: self.retryable,
            max_attempts: self.max_attempts.unwrap_or(defaults.default_max_attempts),
            backoff: self.backoff,
            backoff_base_ms: self
                .backoff_base_ms
                .unwrap_or(defaults.default_backoff_base_ms),
            max_backoff_ms: self
                .max_backoff_ms
                .unwrap_or(defaults.default_max_backoff_ms),
        }
    }
}

impl ResolvedRetry {
    /// The delay before attempt `attempts_made + 1`, before jitter: none is 0, linear is
    /// base * n, exponential is base * 2^(n-1), all capped at `max_backoff_ms`.
    pub fn base_delay_ms(&self, attempts_made: u32) -> u64 {
        let n = attempts_made.max(1);
        let raw = match self.backoff {
            BackoffKind::None => 0,
            BackoffKind::Linear => self.backoff_base_ms.saturating_mul(u64::from(n)),
            BackoffKind::Exponential => self
                .backoff_base_ms
                .saturating_mul(1u64.checked_shl(n - 1).unwrap_or(u64::MAX)),
        };
        raw.min(self.max_backoff_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventCondition {
    Success,
    Failure,
    Always,
}

impl EventCondition {
    pub fn matches(self, success: bool) -> bool {
        match self {
            EventCondition::Success => success,
            EventCondition::Failure => !success,
            EventCondition::Always => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Written to the `<namespace>_domain_events` queue.
    Durable,
    /// Broadcast in-process to subscribers.
    Fast,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventDeclaration {
    pub name: String,
    #[serde(default = "success")]
    pub condition: EventCondition,
    #[serde(default = "durable")]
    pub delivery_mode: DeliveryMode,
}

fn success() -> EventCondition {
    EventCondition::Success
}

fn durable() -> DeliveryMode {
    DeliveryMode::Durable
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentOverride {
    #[serde(default)]
    pub steps: Vec<StepOverride>,
}

/// Per-environment changes to one step's timeout and retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepOverride {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

impl TaskTemplate {
    pub fn step(&self, name: &str) -> Option<&StepTemplate> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The template as it applies in `environment`: that environment's step overrides
    /// applied, the `environments` table dropped.
    pub fn for_environment(&self, environment: &str) -> TaskTemplate {
        let mut t = self.clone();
        if let Some(env) = self.environments.get(environment) {
            for o in &env.steps {
                if let Some(step) = t.steps.iter_mut().find(|s| s.name == o.name) {
                    if let Some(timeout) = o.timeout_seconds {
                        step.timeout_seconds = Some(timeout);
                    }
                    if let Some(retry) = &o.retry {
                        step.retry = retry.clone();
                    }
                }
            }
        }
        t.environments.clear();
        t
    }

    /// `namespace/name@version`, how templates are named in messages and errors.
    pub fn identity(&self) -> String {
        format!("{}/{}@{}", self.namespace, self.name, self.version)
    }

    /// Whether any step is not `standard`: such a task's steps are created as it runs.
    pub fn is_dynamic(&self) -> bool {
        self.steps.iter().any(|s| !s.step_type.is_standard())
    }

    /// The decision or batchable step whose outcome decides whether `name` is created, or
    /// None for a step that exists whenever its dependencies do. A direct dependent of a
    /// decision is gated by it, a batch worker by its batchable parent, and any other step
    /// by the first gated dependency it has (it cannot exist before that one does).
    /// Convergence steps have no gate: they are created as soon as anything they wait for
    /// exists. The template must have been validated.
    pub fn gate_of(&self, name: &str) -> Option<&str> {
        let step = self.step(name)?;
        let parent_of = |t: StepType| {
            step.dependencies
                .iter()
                .find(|d| self.step(d).is_some_and(|p| p.step_type == t))
                .map(String::as_str)
        };
        match step.step_type {
            StepType::DeferredConvergence => None,
            StepType::BatchWorker => parent_of(StepType::Batchable),
            _ => parent_of(StepType::Decision)
                .or_else(|| step.dependencies.iter().find_map(|d| self.gate_of(d))),
        }
    }

    /// Steps in an order where every step comes after its dependencies (the template must
    /// have been validated).
    pub fn topological_order(&self) -> Vec<&StepTemplate> {
        let mut done: Vec<&str> = Vec::with_capacity(self.steps.len());
        let mut out = Vec::with_capacity(self.steps.len());
        while out.len() < self.steps.len() {
            let before = out.len();
            for s in &self.steps {
                if !done.contains(&s.name.as_str())
                    && s.dependencies.iter().all(|d| done.contains(&d.as_str()))
                {
                    done.push(&s.name);
                    out.push(s);
                }
            }
            if out.len() == before {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: BackoffKind) -> ResolvedRetry {
        ResolvedRetry {
            retryable: true,
            max_attempts: 5,
            backoff,
            backoff_base_ms: 100,
            max_backoff_ms: 500,
        }
    }

    #[test]
    fn backoff_shapes_and_cap() {
        let e = policy(BackoffKind::Exponential);
        assert_eq!(
            (1..=5).map(|n| e.base_delay_ms(n)).collect::<Vec<_>>(),
            [100, 200, 400, 500, 500]
        );
        let l = policy(BackoffKind::Linear);
        assert_eq!(
            (1..=5).map(|n| l.base_delay_ms(n)).collect::<Vec<_>>(),
            [100, 200, 300, 400, 500]
        );
        assert_eq!(policy(BackoffKind::None).base_delay_ms(3), 0);
        assert_eq!(e.base_delay_ms(200), 500);
    }
}

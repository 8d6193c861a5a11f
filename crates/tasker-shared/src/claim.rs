//! The claim of a step: what every claiming statement says of each step it was asked for
//! (SQL type `tasker.step_claim`, built for claimed steps by `tasker.claimed_steps` alone)
//! and what a creation that claimed a root for a worker of its process hands over. One
//! type in SQL, one here.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{Decode, Postgres, Type};
use uuid::Uuid;

/// What became of a request to claim a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepClaim {
    /// Claimed for the caller, with everything its handler needs.
    Claimed(Box<ClaimedStep>),
    /// Another worker holds a live lease on it, until then (look again then, in case that
    /// worker died; None: in progress without a lease, looked at again after one).
    Busy {
        lease_expires_at: Option<DateTime<Utc>>,
    },
    /// Its task's `run_at` is later.
    Scheduled { run_at: Option<DateTime<Utc>> },
    /// Nothing to run: complete, failed, cancelled, or not ready.
    Finished,
    /// No such step.
    Missing,
}

/// A step claimed for a worker: its attempt counted, its lease running.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedStep {
    pub step_uuid: Uuid,
    pub task_uuid: Uuid,
    pub step_name: String,
    pub namespace: String,
    pub task_name: String,
    pub task_version: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub handler_callable: String,
    pub handler_initialization: Value,
    pub timeout_seconds: Option<i32>,
    /// The template's `publishes_events` declarations, as stored.
    pub publishes_events: Value,
    /// A dynamic step's inputs (`{}` for a fixed DAG's).
    pub inputs: Value,
    pub task_context: Value,
    /// Each parent's result by parent name (`{}` for a root).
    pub dependency_results: Value,
    pub lease_expires_at: DateTime<Utc>,
}

/// The columns of `tasker.step_claim`, in order.
#[derive(sqlx::Type)]
#[sqlx(type_name = "tasker.step_claim")]
struct Row {
    step_uuid: Option<Uuid>,
    outcome: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    task_uuid: Option<Uuid>,
    step_name: Option<String>,
    namespace: Option<String>,
    task_name: Option<String>,
    task_version: Option<String>,
    attempt: Option<i32>,
    max_attempts: Option<i32>,
    handler_callable: Option<String>,
    handler_initialization: Option<Value>,
    timeout_seconds: Option<i32>,
    publishes_events: Option<Value>,
    inputs: Option<Value>,
    task_context: Option<Value>,
    dependency_results: Option<Value>,
}

/// A `tasker.step_claim` that breaks the type's rules (a field a claim must have is NULL,
/// or an outcome this code does not know): the SQL and this reader disagree.
#[derive(Debug, thiserror::Error)]
#[error("tasker.step_claim of step {step:?}: {problem}")]
pub struct MalformedClaim {
    step: Option<Uuid>,
    problem: String,
}

impl TryFrom<Row> for StepClaim {
    type Error = MalformedClaim;

    fn try_from(r: Row) -> Result<Self, MalformedClaim> {
        let step = r.step_uuid;
        let missing = |field: &str| MalformedClaim {
            step,
            problem: format!("{field} is NULL"),
        };
        match r.outcome.as_deref() {
            Some("claimed") => Ok(Self::Claimed(Box::new(ClaimedStep {
                step_uuid: step.ok_or_else(|| missing("step_uuid"))?,
                task_uuid: r.task_uuid.ok_or_else(|| missing("task_uuid"))?,
                step_name: r.step_name.ok_or_else(|| missing("step_name"))?,
                namespace: r.namespace.ok_or_else(|| missing("namespace"))?,
                task_name: r.task_name.ok_or_else(|| missing("task_name"))?,
                task_version: r.task_version.ok_or_else(|| missing("task_version"))?,
                attempt: r.attempt.ok_or_else(|| missing("attempt"))?,
                max_attempts: r.max_attempts.ok_or_else(|| missing("max_attempts"))?,
                handler_callable: r
                    .handler_callable
                    .ok_or_else(|| missing("handler_callable"))?,
                handler_initialization: r.handler_initialization.unwrap_or(Value::Null),
                timeout_seconds: r.timeout_seconds,
                publishes_events: r.publishes_events.unwrap_or(Value::Null),
                inputs: r.inputs.unwrap_or_else(empty_object),
                task_context: r.task_context.unwrap_or(Value::Null),
                dependency_results: r.dependency_results.unwrap_or_else(empty_object),
                lease_expires_at: r
                    .lease_expires_at
                    .ok_or_else(|| missing("lease_expires_at"))?,
            }))),
            Some("busy") => Ok(Self::Busy {
                lease_expires_at: r.lease_expires_at,
            }),
            Some("scheduled") => Ok(Self::Scheduled {
                run_at: r.lease_expires_at,
            }),
            Some("finished") => Ok(Self::Finished),
            Some("missing") => Ok(Self::Missing),
            other => Err(MalformedClaim {
                step,
                problem: format!("unknown outcome {other:?}"),
            }),
        }
    }
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl Type<Postgres> for StepClaim {
    fn type_info() -> PgTypeInfo {
        <Row as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Row as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for StepClaim {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Row::decode(value)?.try_into()?)
    }
}

impl StepClaim {
    /// The claimed step, if this worker got it.
    pub fn into_claimed(self) -> Option<ClaimedStep> {
        match self {
            Self::Claimed(step) => Some(*step),
            _ => None,
        }
    }

    /// The outcome's name, as SQL spells it (for logs and metrics).
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Claimed(_) => "claimed",
            Self::Busy { .. } => "busy",
            Self::Scheduled { .. } => "scheduled",
            Self::Finished => "finished",
            Self::Missing => "missing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(outcome: Option<&str>) -> Row {
        Row {
            step_uuid: Some(Uuid::nil()),
            outcome: outcome.map(str::to_string),
            lease_expires_at: None,
            task_uuid: None,
            step_name: None,
            namespace: None,
            task_name: None,
            task_version: None,
            attempt: None,
            max_attempts: None,
            handler_callable: None,
            handler_initialization: None,
            timeout_seconds: None,
            publishes_events: None,
            inputs: None,
            task_context: None,
            dependency_results: None,
        }
    }

    #[test]
    fn a_claim_row_that_breaks_the_types_rules_is_an_error_naming_what() {
        let unknown = StepClaim::try_from(row(Some("stolen"))).unwrap_err();
        assert!(unknown.to_string().contains("unknown outcome"), "{unknown}");
        let no_outcome = StepClaim::try_from(row(None)).unwrap_err();
        assert!(no_outcome.to_string().contains("None"), "{no_outcome}");
        let bare = StepClaim::try_from(row(Some("claimed"))).unwrap_err();
        assert!(bare.to_string().contains("task_uuid is NULL"), "{bare}");
    }

    #[test]
    fn outcomes_without_work_need_no_fields() {
        assert_eq!(
            StepClaim::try_from(row(Some("busy"))).unwrap(),
            StepClaim::Busy {
                lease_expires_at: None
            }
        );
        assert_eq!(
            StepClaim::try_from(row(Some("scheduled"))).unwrap(),
            StepClaim::Scheduled { run_at: None }
        );
        assert_eq!(
            StepClaim::try_from(row(Some("missing"))).unwrap(),
            StepClaim::Missing
        );
    }
}

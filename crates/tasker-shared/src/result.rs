//! What a step handler run produced: the contract between workers and orchestration.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a step failed. The first six are produced by the worker core itself; a handler may
/// name its own type, which travels as `Custom`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorType {
    HandlerTimeout,
    HandlerPanic,
    HandlerError,
    HandlerNotFound,
    SemaphoreAcquisitionFailed,
    FfiCompletionTimeout,
    /// A result the worker could not record or convert (bad payload from a foreign handler).
    InvalidResult,
    /// The step's worker was lost (died, or lost the database) on its last attempt.
    WorkerLost,
    /// The step could not be claimed, for its own data (set by SQL `fail_unclaimable_step`).
    ClaimFailed,
    Custom(String),
}

impl ErrorType {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorType::HandlerTimeout => "handler_timeout",
            ErrorType::HandlerPanic => "handler_panic",
            ErrorType::HandlerError => "handler_error",
            ErrorType::HandlerNotFound => "handler_not_found",
            ErrorType::SemaphoreAcquisitionFailed => "semaphore_acquisition_failed",
            ErrorType::FfiCompletionTimeout => "ffi_completion_timeout",
            ErrorType::InvalidResult => "invalid_result",
            ErrorType::WorkerLost => "worker_lost",
            ErrorType::ClaimFailed => "claim_failed",
            ErrorType::Custom(s) => s,
        }
    }

    /// The retryability DESIGN.md assigns to failures the core produces; handler types default
    /// to retryable.
    pub fn default_retryable(&self) -> bool {
        !matches!(
            self,
            ErrorType::HandlerPanic
                | ErrorType::HandlerNotFound
                | ErrorType::InvalidResult
                | ErrorType::WorkerLost
                | ErrorType::ClaimFailed
        )
    }
}

impl From<&str> for ErrorType {
    fn from(s: &str) -> Self {
        match s {
            "handler_timeout" => ErrorType::HandlerTimeout,
            "handler_panic" => ErrorType::HandlerPanic,
            "handler_error" => ErrorType::HandlerError,
            "handler_not_found" => ErrorType::HandlerNotFound,
            "semaphore_acquisition_failed" => ErrorType::SemaphoreAcquisitionFailed,
            "ffi_completion_timeout" => ErrorType::FfiCompletionTimeout,
            "invalid_result" => ErrorType::InvalidResult,
            "worker_lost" => ErrorType::WorkerLost,
            "claim_failed" => ErrorType::ClaimFailed,
            other => ErrorType::Custom(other.to_string()),
        }
    }
}

impl std::fmt::Display for ErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ErrorType::from(s.as_str()))
    }
}

/// A failed step's error as recorded and shown to users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepError {
    pub message: String,
    pub error_type: ErrorType,
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<Vec<String>>,
    /// The handler's hint for when to try again; orchestration caps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl StepError {
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        let retryable = error_type.default_retryable();
        Self {
            message: message.into(),
            error_type,
            retryable,
            error_class: None,
            backtrace: None,
            retry_after_ms: None,
        }
    }
}

/// Timing and provenance of one handler run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionMetadata {
    pub execution_time_ms: u64,
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    /// Whatever the handler chose to report beside its result.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub custom: serde_json::Value,
}

/// What a decision or batchable step's handler decided, besides its result. Serialized as
/// `{"next_steps": [...]}` or `{"batches": [...]}`; orchestration checks it against the
/// template when the result is recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// A decision's choice among its direct dependents; empty chooses none.
    NextSteps(Vec<String>),
    /// One JSON object per batch, in order; empty creates no batch workers.
    Batches(Vec<serde_json::Value>),
}

impl StepOutcome {
    /// The outcome from a foreign handler's `next_steps` / `batches` values (either may be
    /// absent or null). A value of the wrong shape is a permanent `invalid_decision` /
    /// `invalid_batch` failure that quotes it.
    pub fn from_parts(
        next_steps: Option<serde_json::Value>,
        batches: Option<serde_json::Value>,
    ) -> Result<Option<StepOutcome>, StepError> {
        let present = |v: Option<serde_json::Value>| v.filter(|v| !v.is_null());
        let quote = |v: &serde_json::Value| {
            let text = v.to_string();
            match text.char_indices().nth(200) {
                Some((i, _)) => format!("{}...", &text[..i]),
                None => text,
            }
        };
        let invalid = |kind: &str, message: String| {
            let mut e = StepError::new(ErrorType::Custom(kind.into()), message);
            e.retryable = false;
            e
        };
        match (present(next_steps), present(batches)) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(invalid(
                "invalid_decision",
                "a result cannot carry both next_steps and batches".into(),
            )),
            (Some(v), None) => serde_json::from_value::<Vec<String>>(v.clone())
                .map(|names| Some(StepOutcome::NextSteps(names)))
                .map_err(|_| {
                    invalid(
                        "invalid_decision",
                        format!(
                            "next_steps must be an array of step names, got {}",
                            quote(&v)
                        ),
                    )
                }),
            (None, Some(v)) => match v {
                serde_json::Value::Array(items) => {
                    if let Some((i, bad)) = items.iter().enumerate().find(|(_, b)| !b.is_object()) {
                        return Err(invalid(
                            "invalid_batch",
                            format!("batches[{i}] must be an object, got {}", quote(bad)),
                        ));
                    }
                    Ok(Some(StepOutcome::Batches(items)))
                }
                other => Err(invalid(
                    "invalid_batch",
                    format!("batches must be an array of objects, got {}", quote(&other)),
                )),
            },
        }
    }
}

/// The outcome of running one step's handler once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepExecutionResult {
    pub step_uuid: Uuid,
    pub success: bool,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    pub metadata: ExecutionMetadata,
    /// A decision's or batchable step's outcome (successes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<StepOutcome>,
}

/// Postgres refuses a NUL character in text and in JSON strings.
fn without_nul(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn clean_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => *s = without_nul(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(clean_json),
        serde_json::Value::Object(map) => {
            let keys: Vec<String> = map.keys().filter(|k| k.contains('\0')).cloned().collect();
            for key in keys {
                if let Some(v) = map.remove(&key) {
                    map.insert(without_nul(&key), v);
                }
            }
            map.values_mut().for_each(clean_json);
        }
        _ => {}
    }
}

/// A failure's message is cut to this many bytes when its result is over the size limit.
const OVERSIZED_MESSAGE_BYTES: usize = 64 * 1024;

impl StepExecutionResult {
    /// The result as it can be stored. A success whose payload breaks the limits of
    /// [`crate::payload`] (nesting, NUL characters, `max_bytes`) becomes a permanent
    /// `invalid_result` failure naming what was wrong and where: the same handler would
    /// produce it again. A failure is stored cleaned: NUL characters replaced, and its
    /// payload dropped and message cut when it is over the limit.
    pub fn within_limits(self, max_bytes: usize) -> Self {
        use crate::payload::check;
        if !self.success {
            return self.failure_within_limits(max_bytes);
        }
        let outcome = match &self.outcome {
            Some(StepOutcome::Batches(b)) => check(&serde_json::json!(b), "batches", max_bytes),
            Some(StepOutcome::NextSteps(n)) => {
                check(&serde_json::json!(n), "next_steps", max_bytes)
            }
            None => Ok(()),
        };
        let problem = check(&self.result, "result", max_bytes)
            .and(check(&self.metadata.custom, "metadata", max_bytes))
            .and(outcome)
            .err();
        match problem {
            None => self,
            Some(problem) => {
                let mut metadata = self.metadata;
                metadata.custom = serde_json::Value::Null;
                Self::failure(
                    self.step_uuid,
                    StepError::new(
                        ErrorType::InvalidResult,
                        format!("the handler's result cannot be stored: {problem}"),
                    ),
                    metadata,
                )
            }
        }
    }

    fn failure_within_limits(mut self, max_bytes: usize) -> Self {
        let error_text = self.error.as_ref().map_or(0, |e| {
            e.message.len()
                + e.backtrace
                    .as_ref()
                    .map_or(0, |b| b.iter().map(|l| l.len()).sum())
        });
        let payload = crate::payload::check(&self.result, "result", max_bytes).and(
            crate::payload::check(&self.metadata.custom, "metadata", max_bytes),
        );
        if error_text > max_bytes || payload.is_err() {
            self.result = serde_json::Value::Null;
            self.metadata.custom = serde_json::Value::Null;
            if let Some(e) = self.error.as_mut() {
                if e.message.len() > OVERSIZED_MESSAGE_BYTES {
                    let mut end = OVERSIZED_MESSAGE_BYTES;
                    while !e.message.is_char_boundary(end) {
                        end -= 1;
                    }
                    e.message.truncate(end);
                    e.message.push_str(" [cut: over max_payload_bytes]");
                }
                e.backtrace = None;
            }
        }
        self.without_nul_characters()
    }

    /// The result with every NUL character (in the error, the result and the metadata)
    /// replaced by U+FFFD, so a failure whose text Postgres refuses can still be stored.
    pub fn without_nul_characters(mut self) -> Self {
        if let Some(e) = self.error.as_mut() {
            e.message = without_nul(&e.message);
            e.error_class = e.error_class.as_deref().map(without_nul);
            if let Some(lines) = e.backtrace.as_mut() {
                lines.iter_mut().for_each(|l| *l = without_nul(l));
            }
            if let ErrorType::Custom(t) = &e.error_type {
                e.error_type = ErrorType::Custom(without_nul(t));
            }
        }
        clean_json(&mut self.result);
        clean_json(&mut self.metadata.custom);
        self
    }

    pub fn success(
        step_uuid: Uuid,
        result: serde_json::Value,
        metadata: ExecutionMetadata,
    ) -> Self {
        Self {
            step_uuid,
            success: true,
            result,
            error: None,
            metadata,
            outcome: None,
        }
    }

    pub fn with_outcome(mut self, outcome: Option<StepOutcome>) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn failure(step_uuid: Uuid, error: StepError, metadata: ExecutionMetadata) -> Self {
        Self {
            step_uuid,
            success: false,
            result: serde_json::Value::Null,
            error: Some(error),
            metadata,
            outcome: None,
        }
    }

    pub fn error_type(&self) -> Option<&ErrorType> {
        self.error.as_ref().map(|e| &e.error_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_type_round_trips_through_json() {
        for t in [
            ErrorType::HandlerTimeout,
            ErrorType::HandlerPanic,
            ErrorType::HandlerError,
            ErrorType::HandlerNotFound,
            ErrorType::SemaphoreAcquisitionFailed,
            ErrorType::FfiCompletionTimeout,
            ErrorType::Custom("card_declined".into()),
        ] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<ErrorType>(&json).unwrap(), t);
        }
    }

    #[test]
    fn outcomes_serialize_by_kind_and_foreign_shapes_are_checked() {
        let json = serde_json::to_value(StepOutcome::NextSteps(vec!["a".into()])).unwrap();
        assert_eq!(json, serde_json::json!({"next_steps": ["a"]}));
        let json =
            serde_json::to_value(StepOutcome::Batches(vec![serde_json::json!({"i": 0})])).unwrap();
        assert_eq!(json, serde_json::json!({"batches": [{"i": 0}]}));

        use serde_json::json;
        assert_eq!(StepOutcome::from_parts(None, Some(json!(null))), Ok(None));
        assert_eq!(
            StepOutcome::from_parts(Some(json!([])), None),
            Ok(Some(StepOutcome::NextSteps(vec![])))
        );
        let e = StepOutcome::from_parts(Some(json!("manager")), None).unwrap_err();
        assert_eq!(e.error_type.as_str(), "invalid_decision");
        assert!(!e.retryable);
        assert!(e.message.contains("\"manager\""), "{}", e.message);
        let e = StepOutcome::from_parts(None, Some(json!([{"a": 1}, 7]))).unwrap_err();
        assert_eq!(e.error_type.as_str(), "invalid_batch");
        assert!(
            e.message.contains("batches[1]") && e.message.contains('7'),
            "{}",
            e.message
        );
        let e = StepOutcome::from_parts(None, Some(json!({"a": 1}))).unwrap_err();
        assert_eq!(e.error_type.as_str(), "invalid_batch");
        let e = StepOutcome::from_parts(Some(json!([])), Some(json!([]))).unwrap_err();
        assert_eq!(e.error_type.as_str(), "invalid_decision");
    }

    #[test]
    fn core_failures_carry_design_retryability() {
        assert!(StepError::new(ErrorType::HandlerTimeout, "t").retryable);
        assert!(!StepError::new(ErrorType::HandlerPanic, "p").retryable);
        assert!(!StepError::new(ErrorType::HandlerNotFound, "n").retryable);
        assert!(StepError::new(ErrorType::SemaphoreAcquisitionFailed, "s").retryable);
        assert!(StepError::new(ErrorType::FfiCompletionTimeout, "f").retryable);
    }
}

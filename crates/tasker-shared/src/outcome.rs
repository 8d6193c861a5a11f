//! What recording a result did with its step, as the recording functions name it in their
//! `outcome` column (`tasker.complete_steps`, `tasker.process_step_results`), and the
//! worker's name for a result it sent to the orchestrator.

use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{Decode, Postgres, Type};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordingOutcome {
    /// The step completed.
    Completed,
    /// The step failed and will run again after its backoff.
    RetryScheduled,
    /// The step failed for good.
    Failed,
    /// A duplicate, or a result for an attempt that is no longer current.
    Ignored,
    /// The worker no longer held the step's claim (lease expired, re-claimed, cancelled).
    Refused,
    /// Not a result: a child the recording made ready and enqueued.
    Enqueued,
    /// Stored and sent to the orchestration results queue, for the orchestrator to apply
    /// (`[worker] results_via = "orchestration"`; `tasker.record_step_results`).
    Sent,
}

impl RecordingOutcome {
    pub const ALL: [Self; 7] = [
        Self::Completed,
        Self::RetryScheduled,
        Self::Failed,
        Self::Ignored,
        Self::Refused,
        Self::Enqueued,
        Self::Sent,
    ];

    /// The name SQL gives it (and metrics' `outcome` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::RetryScheduled => "retry_scheduled",
            Self::Failed => "failed",
            Self::Ignored => "ignored",
            Self::Refused => "refused",
            Self::Enqueued => "enqueued",
            Self::Sent => "sent",
        }
    }

    /// Whether the step reached a final state, so its task may have finished.
    pub fn settles_step(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

impl fmt::Display for RecordingOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An outcome name the recording functions do not use.
#[derive(Debug, thiserror::Error)]
#[error("unknown recording outcome {0:?}")]
pub struct UnknownOutcome(pub String);

impl std::str::FromStr for RecordingOutcome {
    type Err = UnknownOutcome;

    fn from_str(s: &str) -> Result<Self, UnknownOutcome> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_string()))
    }
}

impl Type<Postgres> for RecordingOutcome {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <String as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for RecordingOutcome {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(<&str as Decode<Postgres>>::decode(value)?.parse()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_reads_back_from_its_name() {
        for o in RecordingOutcome::ALL {
            assert_eq!(o.as_str().parse::<RecordingOutcome>().unwrap(), o);
        }
        assert!("claimed".parse::<RecordingOutcome>().is_err());
    }
}

//! Rows and the queries over them that more than one process needs.

mod dead_letter;
mod execution_context;
mod named_task;
mod removed_task;
mod task;
mod transitions;
mod worker_registry;
mod workflow_step;

pub use dead_letter::{DeadLetter, WORKER_LOST};
pub use execution_context::{ExecutionStatus, StepReadiness, TaskExecutionContext};
pub use named_task::{RegisterOutcome, RegisteredTemplate, TemplateRegistry};
pub use removed_task::{missing_task, RemovedTask, ARCHIVE_SCHEMA};
pub use task::TaskRow;
pub use transitions::{transition_step, transition_task, TransitionRow};
pub use worker_registry::{reap_dead_workers, ExpiredClaimSweep, ReapedWorker, WorkerRow};
pub use workflow_step::StepRow;

use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    IllegalTransition(#[from] crate::state::IllegalTransition),
    #[error(transparent)]
    UnknownState(#[from] crate::state::UnknownState),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// A task retention removed (or archived).
    #[error("{0}")]
    Removed(RemovedTask),
    #[error("template {identity} is already registered with a different body; bump its version")]
    TemplateVersionConflict { identity: String },
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("stored {what} {id} cannot be decoded: {reason}")]
    Corrupt {
        what: &'static str,
        id: Uuid,
        reason: String,
    },
}

impl StoreError {
    /// `error`, or, when it is a column that could not be decoded, `Corrupt` naming what
    /// was read (`what` `id`).
    pub fn undecodable(error: sqlx::Error, what: &'static str, id: Uuid) -> Self {
        match error {
            sqlx::Error::ColumnDecode { .. } => StoreError::Corrupt {
                what,
                id,
                reason: error.to_string(),
            },
            e => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undecodable_column_names_what_was_read_and_other_errors_pass_through() {
        let id = Uuid::now_v7();
        let bad = sqlx::Error::ColumnDecode {
            index: "1".into(),
            source: "a field too many".into(),
        };
        let e = StoreError::undecodable(bad, "task", id);
        assert!(
            matches!(e, StoreError::Corrupt { what: "task", id: got, .. } if got == id),
            "{e:?}"
        );
        assert!(e.to_string().contains(&id.to_string()), "{e}");
        let other = StoreError::undecodable(sqlx::Error::RowNotFound, "task", id);
        assert!(
            matches!(other, StoreError::Database(sqlx::Error::RowNotFound)),
            "{other:?}"
        );
    }
}

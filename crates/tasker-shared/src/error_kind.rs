//! What kind of failure an error is: the language-neutral half of turning a Rust error into
//! a host language's exception. Each crate says here, or beside its error type, which kind
//! each of its errors is; a language binding only maps the kinds to its own classes.

use crate::config::ConfigError;
use crate::database::DatabaseError;
use crate::models::StoreError;
use crate::template::TemplateError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Config,
    Database,
    Template,
    /// A task asked for by a template that is not registered.
    TemplateNotFound,
    /// A task's context its template refuses, or one too large to store.
    InvalidContext,
    /// A task, step or template that does not exist (or was removed).
    NotFound,
    /// An action the task's or step's state does not allow.
    InvalidState,
    /// A task request a binding passed that cannot be a task.
    InvalidRequest,
    /// A value out of range for its argument.
    InvalidArgument,
    /// A value a binding passed that has the wrong shape (an unknown field, a bad step).
    Conversion,
    /// The worker could not start, or has closed.
    Worker,
    /// An object used in a process forked from the one that made it.
    Fork,
    /// A failure inside Tasker itself.
    Internal,
}

/// An error that knows its [`ErrorKind`].
pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

impl Classify for ConfigError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Config
    }
}

impl Classify for DatabaseError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Database
    }
}

impl Classify for TemplateError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Template
    }
}

impl Classify for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound { .. } | StoreError::Removed(_) => ErrorKind::NotFound,
            StoreError::TemplateVersionConflict { .. } => ErrorKind::Template,
            StoreError::IllegalTransition(_) => ErrorKind::InvalidState,
            StoreError::Database(_)
            | StoreError::UnknownState(_)
            | StoreError::Queue(_)
            | StoreError::InvalidName(_)
            | StoreError::Corrupt { .. } => ErrorKind::Database,
        }
    }
}

//! The TaskerCore::Native::Error hierarchy, and how Rust errors map onto it.
//!
//! Errors are built as plain [`NativeError`] values anywhere (including without the GVL)
//! and become Ruby exceptions only on a Ruby thread. The Rust message is kept as-is: it
//! already names the template file, field, step or task that was wrong.

use magnus::value::{InnerValue, Opaque};
use magnus::{prelude::*, ExceptionClass, RModule, Ruby};
use std::sync::OnceLock;
use tasker_orchestration::client::ClientError;
use tasker_orchestration::OrchestrationError;
use tasker_shared::config::ConfigError;
use tasker_shared::database::DatabaseError;
use tasker_shared::models::StoreError;
use tasker_shared::template::TemplateError;
use tasker_worker::ffi::FfiWorkerError;

/// One Ruby class each, under TaskerCore::Native.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TaskerCore::Native::Error itself: internal failures.
    Native,
    Config,
    Database,
    Template,
    TemplateNotFound,
    InvalidContext,
    NotFound,
    InvalidState,
    Conversion,
    Worker,
    Fork,
    Interrupted,
    Timeout,
    /// Ruby's own ArgumentError: a value out of range for its argument.
    Argument,
    /// Ruby's own TypeError: an argument of the wrong class.
    Type,
}

const SUBCLASSES: &[(Kind, &str)] = &[
    (Kind::Config, "ConfigError"),
    (Kind::Database, "DatabaseError"),
    (Kind::Template, "TemplateError"),
    (Kind::TemplateNotFound, "TemplateNotFoundError"),
    (Kind::InvalidContext, "InvalidContextError"),
    (Kind::NotFound, "NotFoundError"),
    (Kind::InvalidState, "InvalidStateError"),
    (Kind::Conversion, "ConversionError"),
    (Kind::Worker, "WorkerError"),
    (Kind::Fork, "ForkError"),
    (Kind::Interrupted, "InterruptedError"),
    (Kind::Timeout, "TimeoutError"),
];

static CLASSES: OnceLock<Vec<(Kind, Opaque<ExceptionClass>)>> = OnceLock::new();

/// Defines TaskerCore::Error < StandardError, TaskerCore::Native::Error < TaskerCore::Error
/// and the subclasses. The classes are constants, so the GC never frees them.
pub fn define(ruby: &Ruby, tasker: RModule, native: RModule) -> Result<(), magnus::Error> {
    let base = tasker.define_error("Error", ruby.exception_standard_error())?;
    let native_error = native.define_error("Error", base)?;
    let mut classes = vec![(Kind::Native, Opaque::from(native_error))];
    for (kind, name) in SUBCLASSES {
        classes.push((
            *kind,
            Opaque::from(native.define_error(*name, native_error)?),
        ));
    }
    let _ = CLASSES.set(classes);
    Ok(())
}

fn class(ruby: &Ruby, kind: Kind) -> ExceptionClass {
    match kind {
        Kind::Argument => return ruby.exception_arg_error(),
        Kind::Type => return ruby.exception_type_error(),
        _ => {}
    }
    let classes = CLASSES
        .get()
        .expect("exception classes are defined when the extension loads");
    let found = classes
        .iter()
        .find(|(k, _)| *k == kind)
        .or_else(|| classes.first())
        .expect("TaskerCore::Native::Error is defined");
    found.1.get_inner_with(ruby)
}

/// A Rust-side error on its way to Ruby.
#[derive(Debug, Clone)]
pub struct NativeError {
    pub kind: Kind,
    pub message: String,
}

impl NativeError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn native(message: impl Into<String>) -> Self {
        Self::new(Kind::Native, message)
    }

    pub fn conversion(message: impl Into<String>) -> Self {
        Self::new(Kind::Conversion, message)
    }

    pub fn worker(message: impl Into<String>) -> Self {
        Self::new(Kind::Worker, message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(Kind::Timeout, message)
    }

    pub fn interrupted(message: impl Into<String>) -> Self {
        Self::new(Kind::Interrupted, message)
    }

    pub fn database(message: impl Into<String>) -> Self {
        Self::new(Kind::Database, message)
    }

    pub fn argument(message: impl Into<String>) -> Self {
        Self::new(Kind::Argument, message)
    }

    pub fn type_error(message: impl Into<String>) -> Self {
        Self::new(Kind::Type, message)
    }
}

impl From<NativeError> for magnus::Error {
    fn from(e: NativeError) -> Self {
        let ruby = Ruby::get().expect("Ruby exceptions are only raised on Ruby threads");
        magnus::Error::new(class(&ruby, e.kind), e.message)
    }
}

pub fn native_error(message: impl Into<String>) -> magnus::Error {
    NativeError::native(message).into()
}

impl From<ConfigError> for NativeError {
    fn from(e: ConfigError) -> Self {
        Self::new(Kind::Config, e.to_string())
    }
}

impl From<DatabaseError> for NativeError {
    fn from(e: DatabaseError) -> Self {
        Self::new(Kind::Database, e.to_string())
    }
}

impl From<sqlx::Error> for NativeError {
    fn from(e: sqlx::Error) -> Self {
        Self::new(Kind::Database, format!("database: {e}"))
    }
}

impl From<TemplateError> for NativeError {
    fn from(e: TemplateError) -> Self {
        Self::new(Kind::Template, e.to_string())
    }
}

fn store_kind(e: &StoreError) -> Kind {
    match e {
        StoreError::NotFound { .. } | StoreError::Removed(_) => Kind::NotFound,
        StoreError::TemplateVersionConflict { .. } => Kind::Template,
        StoreError::IllegalTransition(_) => Kind::InvalidState,
        _ => Kind::Database,
    }
}

impl From<StoreError> for NativeError {
    fn from(e: StoreError) -> Self {
        Self::new(store_kind(&e), e.to_string())
    }
}

impl From<OrchestrationError> for NativeError {
    fn from(e: OrchestrationError) -> Self {
        let kind = match &e {
            OrchestrationError::TemplateNotFound { .. } => Kind::TemplateNotFound,
            OrchestrationError::InvalidContext { .. }
            | OrchestrationError::UnstorableContext { .. } => Kind::InvalidContext,
            OrchestrationError::TaskNotFound(_) | OrchestrationError::StepNotFound { .. } => {
                Kind::NotFound
            }
            OrchestrationError::TaskFinished { .. }
            | OrchestrationError::StepActionRefused { .. } => Kind::InvalidState,
            OrchestrationError::Store(s) => store_kind(s),
            _ => Kind::Database,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<FfiWorkerError> for NativeError {
    fn from(e: FfiWorkerError) -> Self {
        let kind = match &e {
            FfiWorkerError::Database(_) => Kind::Database,
            FfiWorkerError::Template { source, .. } => store_kind(source),
            FfiWorkerError::Start(_) | FfiWorkerError::NoChannel => Kind::Worker,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<ClientError> for NativeError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::InvalidRequest { .. } => Self::conversion(e.to_string()),
            ClientError::Database(e) => e.into(),
            ClientError::Orchestration(e) => e.into(),
            ClientError::Store(e) => e.into(),
            ClientError::Sql(e) => e.into(),
            ClientError::Serialize { .. } => Self::native(e.to_string()),
        }
    }
}

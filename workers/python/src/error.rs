//! The exception hierarchy of `tasker_core._native`, and how Rust errors map onto it.
//!
//! Errors are built as plain [`NativeError`] values anywhere (including with the GIL
//! released) and become Python exceptions only when returned to Python. The Rust message is
//! kept as-is: it already names the template file, field, step or task that was wrong.

use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::PyErr;
use tasker_orchestration::client::ClientError;
use tasker_orchestration::OrchestrationError;
use tasker_shared::config::ConfigError as SharedConfigError;
use tasker_shared::database::DatabaseError as SharedDatabaseError;
use tasker_shared::models::StoreError;
use tasker_shared::template::TemplateError as SharedTemplateError;
use tasker_worker::ffi::{FfiWorkerError, ForkedError, LoopbackError};

pyo3::create_exception!(
    tasker_core,
    TaskerError,
    PyException,
    "Base of every error Tasker raises."
);
pyo3::create_exception!(tasker_core, ConfigError, TaskerError);
pyo3::create_exception!(tasker_core, DatabaseError, TaskerError);
pyo3::create_exception!(tasker_core, TemplateError, TaskerError);
pyo3::create_exception!(tasker_core, TemplateNotFoundError, TemplateError);
pyo3::create_exception!(tasker_core, InvalidContextError, TaskerError);
pyo3::create_exception!(tasker_core, NotFoundError, TaskerError);
pyo3::create_exception!(tasker_core, InvalidStateError, TaskerError);
pyo3::create_exception!(tasker_core, ConversionError, TaskerError);
pyo3::create_exception!(tasker_core, WorkerError, TaskerError);
pyo3::create_exception!(tasker_core, ForkError, TaskerError);
pyo3::create_exception!(tasker_core, TimeoutError, TaskerError);

/// Adds the classes to the module under their Python names.
pub fn define(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("TaskerError", py.get_type::<TaskerError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("DatabaseError", py.get_type::<DatabaseError>())?;
    m.add("TemplateError", py.get_type::<TemplateError>())?;
    m.add(
        "TemplateNotFoundError",
        py.get_type::<TemplateNotFoundError>(),
    )?;
    m.add("InvalidContextError", py.get_type::<InvalidContextError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("InvalidStateError", py.get_type::<InvalidStateError>())?;
    m.add("ConversionError", py.get_type::<ConversionError>())?;
    m.add("WorkerError", py.get_type::<WorkerError>())?;
    m.add("ForkError", py.get_type::<ForkError>())?;
    m.add("TimeoutError", py.get_type::<TimeoutError>())?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TaskerError itself: internal failures.
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
    Timeout,
    /// Python's ValueError: a value out of range for its argument.
    Value,
    /// Python's TypeError: an argument of the wrong type.
    Type,
}

/// A Rust-side error on its way to Python.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
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

    pub fn value(message: impl Into<String>) -> Self {
        Self::new(Kind::Value, message)
    }

    pub fn type_error(message: impl Into<String>) -> Self {
        Self::new(Kind::Type, message)
    }
}

impl From<NativeError> for PyErr {
    fn from(e: NativeError) -> Self {
        let m = e.message;
        match e.kind {
            Kind::Native => TaskerError::new_err(m),
            Kind::Config => ConfigError::new_err(m),
            Kind::Database => DatabaseError::new_err(m),
            Kind::Template => TemplateError::new_err(m),
            Kind::TemplateNotFound => TemplateNotFoundError::new_err(m),
            Kind::InvalidContext => InvalidContextError::new_err(m),
            Kind::NotFound => NotFoundError::new_err(m),
            Kind::InvalidState => InvalidStateError::new_err(m),
            Kind::Conversion => ConversionError::new_err(m),
            Kind::Worker => WorkerError::new_err(m),
            Kind::Fork => ForkError::new_err(m),
            Kind::Timeout => TimeoutError::new_err(m),
            Kind::Value => PyValueError::new_err(m),
            Kind::Type => PyTypeError::new_err(m),
        }
    }
}

impl From<SharedConfigError> for NativeError {
    fn from(e: SharedConfigError) -> Self {
        Self::new(Kind::Config, e.to_string())
    }
}

impl From<SharedDatabaseError> for NativeError {
    fn from(e: SharedDatabaseError) -> Self {
        Self::new(Kind::Database, e.to_string())
    }
}

impl From<SharedTemplateError> for NativeError {
    fn from(e: SharedTemplateError) -> Self {
        Self::new(Kind::Template, e.to_string())
    }
}

impl From<ForkedError> for NativeError {
    fn from(e: ForkedError) -> Self {
        Self::new(Kind::Fork, e.to_string())
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

fn orchestration_kind(e: &OrchestrationError) -> Kind {
    match e {
        OrchestrationError::TemplateNotFound { .. } => Kind::TemplateNotFound,
        OrchestrationError::InvalidContext { .. }
        | OrchestrationError::UnstorableContext { .. } => Kind::InvalidContext,
        OrchestrationError::TaskNotFound(_) | OrchestrationError::StepNotFound { .. } => {
            Kind::NotFound
        }
        OrchestrationError::TaskFinished { .. } | OrchestrationError::StepActionRefused { .. } => {
            Kind::InvalidState
        }
        OrchestrationError::Store(s) => store_kind(s),
        _ => Kind::Database,
    }
}

impl From<ClientError> for NativeError {
    fn from(e: ClientError) -> Self {
        let kind = match &e {
            ClientError::InvalidRequest { .. } => Kind::Value,
            ClientError::Orchestration(o) => orchestration_kind(o),
            ClientError::Store(s) => store_kind(s),
            ClientError::Database(_) | ClientError::Sql(_) => Kind::Database,
            ClientError::Serialize { .. } => Kind::Native,
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

impl From<LoopbackError> for NativeError {
    fn from(e: LoopbackError) -> Self {
        let kind = match &e {
            LoopbackError::InvalidSetting { .. } | LoopbackError::TooMany(_) => Kind::Value,
            LoopbackError::Config(_) => Kind::Config,
            LoopbackError::UnknownField(_) | LoopbackError::InvalidStep(_) => Kind::Conversion,
            LoopbackError::Closed => Kind::Worker,
        };
        Self::new(kind, e.to_string())
    }
}

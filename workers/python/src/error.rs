//! The exception hierarchy of `tasker_core._native`, and how Rust errors map onto it: each
//! core error knows its [`ErrorKind`]; this file says which Python class each kind raises.
//!
//! Errors are built as plain [`NativeError`] values anywhere (including with the GIL
//! released) and become Python exceptions only when returned to Python. The Rust message is
//! kept as-is: it already names the template file, field, step or task that was wrong.

use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::PyErr;
use tasker_worker::ffi::{Classify, ErrorKind};

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

/// The Python class for each kind of core error.
impl From<ErrorKind> for Kind {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Config => Kind::Config,
            ErrorKind::Database => Kind::Database,
            ErrorKind::Template => Kind::Template,
            ErrorKind::TemplateNotFound => Kind::TemplateNotFound,
            ErrorKind::InvalidContext => Kind::InvalidContext,
            ErrorKind::NotFound => Kind::NotFound,
            ErrorKind::InvalidState => Kind::InvalidState,
            ErrorKind::InvalidRequest | ErrorKind::InvalidArgument => Kind::Value,
            ErrorKind::Conversion => Kind::Conversion,
            ErrorKind::Worker => Kind::Worker,
            ErrorKind::Fork => Kind::Fork,
            ErrorKind::Internal => Kind::Native,
        }
    }
}

impl<E: Classify + std::fmt::Display> From<E> for NativeError {
    fn from(e: E) -> Self {
        Self::new(e.kind().into(), e.to_string())
    }
}

//! The TaskerCore::Native::Error hierarchy, and how Rust errors map onto it: each core
//! error knows its [`ErrorKind`]; this file says which Ruby class each kind raises.
//!
//! Errors are built as plain [`NativeError`] values anywhere (including without the GVL)
//! and become Ruby exceptions only on a Ruby thread. The Rust message is kept as-is: it
//! already names the template file, field, step or task that was wrong.

use magnus::value::{InnerValue, Opaque};
use magnus::{prelude::*, ExceptionClass, RModule, Ruby};
use std::sync::OnceLock;
use tasker_worker::ffi::{Classify, ErrorKind};

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

/// The Ruby class for each kind of core error.
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
            // A request Hash with a field of the wrong sort, as `from_ruby` reports one.
            ErrorKind::InvalidRequest | ErrorKind::Conversion => Kind::Conversion,
            ErrorKind::InvalidArgument => Kind::Argument,
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

use std::path::PathBuf;

/// What is wrong with a template, and where: the file, the step and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("{path}: cannot read: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: malformed YAML: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: template has no steps (field 'steps')")]
    EmptySteps { path: PathBuf },
    #[error("{path}: step '{step}' is defined more than once (field 'steps[].name')")]
    DuplicateStep { path: PathBuf, step: String },
    #[error("{path}: step '{step}' depends on unknown step '{dependency}' (field 'dependencies')")]
    UnknownDependency {
        path: PathBuf,
        step: String,
        dependency: String,
    },
    #[error("{path}: dependency cycle: {}", cycle.join(" -> "))]
    Cycle { path: PathBuf, cycle: Vec<String> },
    #[error("{path}: step '{step}': field 'retry.{field}' {reason}")]
    InvalidRetry {
        path: PathBuf,
        step: String,
        field: &'static str,
        reason: String,
    },
    #[error("{path}: {}field '{field}' {reason}", step.as_ref().map(|s| format!("step '{s}': ")).unwrap_or_default())]
    InvalidField {
        path: PathBuf,
        step: Option<String>,
        field: String,
        reason: String,
    },
}

impl TemplateError {
    pub fn path(&self) -> &std::path::Path {
        match self {
            TemplateError::Io { path, .. }
            | TemplateError::Malformed { path, .. }
            | TemplateError::EmptySteps { path }
            | TemplateError::DuplicateStep { path, .. }
            | TemplateError::UnknownDependency { path, .. }
            | TemplateError::Cycle { path, .. }
            | TemplateError::InvalidRetry { path, .. }
            | TemplateError::InvalidField { path, .. } => path,
        }
    }
}

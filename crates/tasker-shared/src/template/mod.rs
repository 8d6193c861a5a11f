//! Task templates: the YAML that names a DAG of steps and how each is run.

mod error;
mod loader;
mod model;
mod validate;

pub use error::TemplateError;
pub use loader::{load_template_dirs, parse_template, read_template, template_search_path};
pub use model::*;

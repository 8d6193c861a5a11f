//! Arguments of the module functions on TaskerCore::Native.

use super::convert::from_ruby;
use magnus::{prelude::*, Ruby, Value};
use std::path::PathBuf;
use tasker_shared::config::ConfigOptions;

/// The optional `options` Hash at `index`: configuration overrides (database_url,
/// environment, config_dir, config).
pub fn options(ruby: &Ruby, args: &[Value], index: usize) -> Result<ConfigOptions, magnus::Error> {
    match args.get(index) {
        Some(v) if !v.is_nil() => Ok(from_ruby(ruby, *v, "options")?),
        _ => Ok(ConfigOptions::default()),
    }
}

/// Raises ArgumentError, as Ruby does, unless `min..=max` arguments were given.
pub fn arity(
    ruby: &Ruby,
    args: &[Value],
    min: usize,
    max: usize,
    name: &str,
) -> Result<(), magnus::Error> {
    if args.len() < min || args.len() > max {
        return Err(magnus::Error::new(
            ruby.exception_arg_error(),
            format!(
                "TaskerCore::Native.{name}: wrong number of arguments (given {}, expected {min}..{max})",
                args.len()
            ),
        ));
    }
    Ok(())
}

/// The `paths` argument of the template functions: an Array of paths.
pub fn paths(ruby: &Ruby, value: Value) -> Result<Vec<PathBuf>, magnus::Error> {
    Ok(from_ruby::<Vec<PathBuf>>(ruby, value, "template paths")?)
}

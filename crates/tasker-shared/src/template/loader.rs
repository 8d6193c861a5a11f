use super::{TaskTemplate, TemplateError};
use std::path::{Path, PathBuf};

/// Parses and validates one template; `path` names its source in errors.
pub fn parse_template(text: &str, path: &Path) -> Result<TaskTemplate, TemplateError> {
    let template: TaskTemplate =
        serde_yaml_ng::from_str(text).map_err(|e| TemplateError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    template.validate(path)?;
    Ok(template)
}

pub fn read_template(path: &Path) -> Result<TaskTemplate, TemplateError> {
    let text = std::fs::read_to_string(path).map_err(|e| TemplateError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_template(&text, path)
}

/// The template directories: `TASKER_TEMPLATE_PATH` (colon-separated) or `config/tasks`.
pub fn template_search_path() -> Vec<PathBuf> {
    match std::env::var("TASKER_TEMPLATE_PATH") {
        Ok(v) if !v.trim().is_empty() => v
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => vec![PathBuf::from("config/tasks")],
    }
}

/// Every `*.yml` / `*.yaml` below the given directories (or the files themselves), parsed
/// and validated, in path order. The first bad file is the error.
pub fn load_template_dirs(
    paths: &[PathBuf],
) -> Result<Vec<(PathBuf, TaskTemplate)>, TemplateError> {
    let mut files = Vec::new();
    for p in paths {
        collect_yaml(p, &mut files)?;
    }
    files.sort();
    files
        .into_iter()
        .map(|f| read_template(&f).map(|t| (f, t)))
        .collect()
}

fn collect_yaml(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), TemplateError> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let entries = std::fs::read_dir(path).map_err(|e| TemplateError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_yaml(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
    Ok(())
}

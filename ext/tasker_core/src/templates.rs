//! Module functions on TaskerCore::Native for task templates, for the rake tasks and the
//! Ruby library: register (releasing the GVL around the database work), validate, load.

use crate::error::NativeError;
use crate::helpers::args::paths;
use crate::helpers::client::client;
use crate::helpers::nogvl::block_on;
use crate::helpers::runtime::runtime;
use crate::helpers::serialize::to_ruby;
use crate::helpers::CALL_TIMEOUT;
use magnus::{function, RArray, RModule, Ruby, Value};
use serde_json::json;
use std::path::{Path, PathBuf};
use tasker_shared::config::ConfigOptions;
use tasker_shared::models::{RegisterOutcome, TemplateRegistry};
use tasker_shared::template::{load_template_dirs, read_template};

pub fn define(native: RModule) -> Result<(), magnus::Error> {
    native.define_module_function("register_templates", function!(register_templates, 3))?;
    native.define_module_function("validate_templates", function!(validate_templates, 1))?;
    native.define_module_function("load_templates", function!(load_templates, 2))?;
    Ok(())
}

/// `register_templates(database_url, paths, environment)`: registers every template found
/// (as it applies in `environment`); one Hash per template.
fn register_templates(
    ruby: &Ruby,
    url: Option<String>,
    paths_value: Value,
    environment: Option<String>,
) -> Result<Value, magnus::Error> {
    let opts = ConfigOptions {
        database_url: url,
        environment,
        ..Default::default()
    };
    let env = opts.environment();
    let templates = load_template_dirs(&paths(ruby, paths_value)?).map_err(NativeError::from)?;
    let c = client(&opts)?;
    let rt = runtime()?;
    let registered = block_on(&rt, CALL_TIMEOUT, "registering templates", async move {
        let registry = TemplateRegistry::new(c.pool().clone());
        let mut out = Vec::new();
        for (path, template) in templates {
            let template = template.for_environment(&env);
            let outcome = registry.register(&template).await?;
            out.push(json!({
                "path": path,
                "identity": template.identity(),
                "namespace": template.namespace,
                "name": template.name,
                "version": template.version,
                "outcome": match outcome {
                    RegisterOutcome::Created => "registered",
                    RegisterOutcome::Unchanged => "unchanged",
                },
            }));
        }
        Ok(out)
    })?;
    to_ruby(ruby, &serde_json::Value::Array(registered))
}

/// Template files below `path` (or `path` itself), sorted.
fn template_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            template_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
    Ok(())
}

/// `validate_templates(paths)`: one `{path, ok, error, identity}` per file; never raises for
/// a bad template, so every problem is reported at once.
fn validate_templates(ruby: &Ruby, paths_value: Value) -> Result<RArray, magnus::Error> {
    let out = ruby.ary_new();
    for root in paths(ruby, paths_value)? {
        let mut files = Vec::new();
        if let Err(error) = template_files(&root, &mut files) {
            out.push(to_ruby(
                ruby,
                &json!({ "path": root, "ok": false, "error": error, "identity": null }),
            )?)?;
            continue;
        }
        files.sort();
        for file in files {
            let entry = match read_template(&file) {
                Ok(t) => {
                    json!({ "path": file, "ok": true, "error": null, "identity": t.identity() })
                }
                Err(e) => {
                    json!({ "path": file, "ok": false, "error": e.to_string(), "identity": null })
                }
            };
            out.push(to_ruby(ruby, &entry)?)?;
        }
    }
    Ok(out)
}

/// `load_templates(paths, environment)`: every template as it applies in `environment`, as
/// `{path, template}`; raises TemplateError naming the first bad file and field.
fn load_templates(
    ruby: &Ruby,
    paths_value: Value,
    environment: Option<String>,
) -> Result<Value, magnus::Error> {
    let env = ConfigOptions {
        environment,
        ..Default::default()
    }
    .environment();
    let templates = load_template_dirs(&paths(ruby, paths_value)?).map_err(NativeError::from)?;
    let list: Vec<serde_json::Value> = templates
        .into_iter()
        .map(|(path, t)| json!({ "path": path, "template": t.for_environment(&env) }))
        .collect();
    to_ruby(ruby, &serde_json::Value::Array(list))
}

//! Module functions on TaskerCore::Native: tasks, templates and the database, for Ruby code
//! that submits work (TaskerCore::Client) and for the rake tasks. Each releases the GVL
//! around its database work.

use crate::convert::{from_ruby, payload_to_ruby, seconds, to_ruby, uuid_arg, MAX_TIMEOUT_SECONDS};
use crate::error::NativeError;
use crate::nogvl::block_on;
use crate::runtime::{runtime, ProcessBound};
use magnus::{function, prelude::*, RArray, RHash, RModule, Ruby, Value};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tasker_orchestration::client::TaskClient;
use tasker_orchestration::TaskRequest;
use tasker_shared::config::ConfigOptions;
use tasker_shared::database;
use tasker_shared::models::{RegisterOutcome, TemplateRegistry};
use tasker_shared::template::{load_template_dirs, read_template};

/// Upper bound on one client call; the pool's acquire timeout usually fires long before.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub fn define(native: RModule) -> Result<(), magnus::Error> {
    native.define_module_function("create_task", function!(create_task, -1))?;
    native.define_module_function("get_task", function!(get_task, -1))?;
    native.define_module_function("wait_task", function!(wait_task, -1))?;
    native.define_module_function("cancel_task", function!(cancel_task, -1))?;
    native.define_module_function("migrate", function!(migrate, 1))?;
    native.define_module_function("drop_database", function!(drop_database, 1))?;
    native.define_module_function("register_templates", function!(register_templates, 3))?;
    native.define_module_function("validate_templates", function!(validate_templates, 1))?;
    native.define_module_function("load_templates", function!(load_templates, 2))?;
    native.define_module_function("load_config", function!(load_config, 1))?;
    Ok(())
}

/// One pool per distinct configuration, per process. Only touched with the GVL held, so a
/// fork never finds it locked.
static CLIENTS: Mutex<Option<ProcessBound<HashMap<String, TaskClient>>>> = Mutex::new(None);

fn cached(key: &str) -> Option<TaskClient> {
    let mut slot = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if !slot.as_ref().is_some_and(ProcessBound::in_owner_process) {
        // A forked child starts empty; the parent's pools are leaked by ProcessBound.
        *slot = Some(ProcessBound::new(HashMap::new()));
    }
    slot.as_ref()
        .and_then(|m| m.get("client cache").ok())
        .and_then(|m| m.get(key).cloned())
}

fn remember(key: String, client: TaskClient) {
    let mut slot = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bound) = slot.as_mut() {
        if let Ok(map) = bound.get_mut("client cache") {
            map.entry(key).or_insert(client);
        }
    }
}

fn options(ruby: &Ruby, args: &[Value], index: usize) -> Result<ConfigOptions, magnus::Error> {
    match args.get(index) {
        Some(v) if !v.is_nil() => Ok(from_ruby(ruby, *v, "options")?),
        _ => Ok(ConfigOptions::default()),
    }
}

fn arity(
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

fn client(opts: &ConfigOptions) -> Result<TaskClient, magnus::Error> {
    let key = serde_json::to_string(&json!({
        "url": opts.database_url, "env": opts.environment, "dir": opts.config_dir, "config": opts.config,
    }))
    .map_err(|e| NativeError::native(format!("client cache key: {e}")))?;
    if let Some(c) = cached(&key) {
        return Ok(c);
    }
    let config = opts.load().map_err(NativeError::from)?;
    let rt = runtime()?;
    let client = block_on(
        &rt,
        CALL_TIMEOUT,
        "connecting to the database",
        async move { Ok(TaskClient::connect(&config, "ruby").await?) },
    )?;
    remember(key, client.clone());
    Ok(client)
}

/// `create_task({namespace:, name:, version:, context:, idempotency_key:}, options = nil)`:
/// `task_uuid`, `created` (false when the idempotency key was taken), `state`, and `task`:
/// the task with its steps, as `get_task` returns it.
fn create_task(ruby: &Ruby, args: &[Value]) -> Result<Value, magnus::Error> {
    arity(ruby, args, 1, 2, "create_task")?;
    let request: TaskRequest = from_ruby(ruby, args[0], "task request")?;
    let c = client(&options(ruby, args, 1)?)?;
    let rt = runtime()?;
    let value = block_on(&rt, CALL_TIMEOUT, "creating the task", async move {
        Ok(c.create(request).await?)
    })?;
    payload_to_ruby(ruby, &value)
}

/// `get_task(task_uuid, options = nil)`: the task row, `terminal`, and its steps.
fn get_task(ruby: &Ruby, args: &[Value]) -> Result<Value, magnus::Error> {
    arity(ruby, args, 1, 2, "get_task")?;
    let id = uuid_arg(args[0], "task_uuid")?;
    let c = client(&options(ruby, args, 1)?)?;
    let rt = runtime()?;
    let task = block_on(&rt, CALL_TIMEOUT, "reading the task", async move {
        Ok(c.get(id).await?)
    })?;
    payload_to_ruby(ruby, &task)
}

/// `wait_task(task_uuid, timeout_seconds, options = nil)`: waits, without the GVL, until the
/// task is terminal or the timeout passes (woken by the database, not by polling), then
/// returns it as `get_task` does.
fn wait_task(ruby: &Ruby, args: &[Value]) -> Result<Value, magnus::Error> {
    arity(ruby, args, 2, 3, "wait_task")?;
    let id = uuid_arg(args[0], "task_uuid")?;
    // Longer waits are cut to the waiter's maximum (a day) rather than refused: waiting
    // "as long as it takes" is a reasonable thing to ask.
    let timeout = match f64::try_convert(args[1]) {
        Ok(s) if s > MAX_TIMEOUT_SECONDS => tasker_shared::task_waiter::MAX_WAIT,
        _ => seconds(args[1], "wait_task timeout")?.min(tasker_shared::task_waiter::MAX_WAIT),
    };
    let c = client(&options(ruby, args, 2)?)?;
    let rt = runtime()?;
    let task = block_on(
        &rt,
        timeout + CALL_TIMEOUT,
        "waiting for the task",
        async move { Ok(c.wait(id, timeout).await?) },
    )?;
    payload_to_ruby(ruby, &task)
}

/// `cancel_task(task_uuid, options = nil)`: the cancelled task.
fn cancel_task(ruby: &Ruby, args: &[Value]) -> Result<Value, magnus::Error> {
    arity(ruby, args, 1, 2, "cancel_task")?;
    let id = uuid_arg(args[0], "task_uuid")?;
    let c = client(&options(ruby, args, 1)?)?;
    let rt = runtime()?;
    let task = block_on(&rt, CALL_TIMEOUT, "cancelling the task", async move {
        Ok(c.cancel(id, "ruby").await?)
    })?;
    payload_to_ruby(ruby, &task)
}

/// `migrate(database_url)`: creates the database if missing, migrates it, installs PGMQ.
fn migrate(ruby: &Ruby, url: String) -> Result<Value, magnus::Error> {
    let rt = runtime()?;
    let (name, created) = block_on(&rt, CALL_TIMEOUT, "migrating the database", async move {
        Ok(database::setup_database(&url).await?)
    })?;
    to_ruby(ruby, &json!({ "database": name, "created": created }))
}

/// `drop_database(database_url)`: drops the URL's database (terminating its connections);
/// for test suites that create one database per run. Returns whether it existed.
fn drop_database(url: String) -> Result<bool, magnus::Error> {
    let rt = runtime()?;
    block_on(&rt, CALL_TIMEOUT, "dropping the database", async move {
        Ok(database::drop_database(&url).await?)
    })
}

fn paths(ruby: &Ruby, value: Value) -> Result<Vec<PathBuf>, magnus::Error> {
    Ok(from_ruby::<Vec<PathBuf>>(ruby, value, "template paths")?)
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

/// `load_config(options)`: the merged configuration as a Hash (what a worker would use).
fn load_config(ruby: &Ruby, options_value: Value) -> Result<Value, magnus::Error> {
    let opts: ConfigOptions = if options_value.is_nil() {
        ConfigOptions::default()
    } else {
        from_ruby(ruby, options_value, "options")?
    };
    let config = opts.load().map_err(NativeError::from)?;
    let value = serde_json::to_value(&config)
        .map_err(|e| NativeError::native(format!("serializing configuration: {e}")))?;
    let hash: RHash = RHash::from_value(to_ruby(ruby, &value)?)
        .ok_or_else(|| NativeError::native("configuration is not a Hash"))?;
    hash.aset("environment", opts.environment())?;
    Ok(hash.as_value())
}

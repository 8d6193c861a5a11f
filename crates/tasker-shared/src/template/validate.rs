use super::{RetryPolicy, StepTemplate, StepType, TaskTemplate, TemplateError};
use crate::queue::validate_identifier;
use std::collections::{HashMap, HashSet};
use std::path::Path;

const MAX_ATTEMPTS_LIMIT: u32 = 100;
const MAX_BACKOFF_LIMIT_MS: u64 = 24 * 60 * 60 * 1000;
const MAX_TIMEOUT_SECONDS: u64 = 24 * 60 * 60;

impl TaskTemplate {
    /// Checks everything serde cannot. `path` only names the source in errors.
    pub fn validate(&self, path: &Path) -> Result<(), TemplateError> {
        let field = |step: Option<&str>, field: &str, reason: String| TemplateError::InvalidField {
            path: path.to_path_buf(),
            step: step.map(str::to_string),
            field: field.to_string(),
            reason,
        };
        if self.name.trim().is_empty() {
            return Err(field(None, "name", "must not be empty".into()));
        }
        if let Err(reason) = validate_identifier(&self.namespace, 30) {
            return Err(field(None, "namespace", reason));
        }
        if self.version.trim().is_empty() || self.version.contains(char::is_whitespace) {
            return Err(field(
                None,
                "version",
                "must be non-empty with no spaces".into(),
            ));
        }
        if let Some(schema) = &self.input_schema {
            if let Err(e) = jsonschema::validator_for(schema) {
                return Err(field(
                    None,
                    "input_schema",
                    format!("is not a valid JSON Schema: {e}"),
                ));
            }
        }
        if self.steps.is_empty() {
            return Err(TemplateError::EmptySteps {
                path: path.to_path_buf(),
            });
        }
        let mut seen = HashSet::new();
        for step in &self.steps {
            if step.name.trim().is_empty() {
                return Err(field(None, "steps[].name", "must not be empty".into()));
            }
            if !seen.insert(step.name.as_str()) {
                return Err(TemplateError::DuplicateStep {
                    path: path.to_path_buf(),
                    step: step.name.clone(),
                });
            }
        }
        for step in &self.steps {
            validate_step(step, path)?;
            for dep in &step.dependencies {
                if !seen.contains(dep.as_str()) {
                    return Err(TemplateError::UnknownDependency {
                        path: path.to_path_buf(),
                        step: step.name.clone(),
                        dependency: dep.clone(),
                    });
                }
            }
        }
        if let Some(cycle) = find_cycle(&self.steps) {
            return Err(TemplateError::Cycle {
                path: path.to_path_buf(),
                cycle,
            });
        }
        self.validate_dynamic_steps(path)?;
        for (env, o) in &self.environments {
            for so in &o.steps {
                let Some(step) = self.step(&so.name) else {
                    return Err(field(
                        None,
                        &format!("environments.{env}.steps[].name"),
                        format!("names unknown step '{}'", so.name),
                    ));
                };
                if let Some(t) = so.timeout_seconds {
                    check_timeout(t, &step.name, path)?;
                }
                if let Some(r) = &so.retry {
                    check_retry(r, &step.name, path)?;
                }
            }
        }
        Ok(())
    }
}

/// The most copies one batchable step may declare; the task-wide ceiling is
/// `[orchestration] max_steps_per_task`.
const MAX_WORKERS_LIMIT: u32 = 100_000;

impl TaskTemplate {
    /// The rules of decision, batchable, batch_worker and deferred_convergence steps. Runs
    /// after names, dependencies and cycles are known good.
    fn validate_dynamic_steps(&self, path: &Path) -> Result<(), TemplateError> {
        let invalid =
            |step: &StepTemplate, field: &str, reason: String| TemplateError::InvalidField {
                path: path.to_path_buf(),
                step: Some(step.name.clone()),
                field: field.to_string(),
                reason,
            };
        let type_of = |name: &str| self.step(name).map(|s| s.step_type);
        for step in &self.steps {
            match (&step.batch, step.step_type) {
                (None, StepType::Batchable) => {
                    return Err(invalid(
                        step,
                        "batch",
                        "is required on a batchable step ({ worker: <batch_worker step>, max_workers: N })".into(),
                    ))
                }
                (Some(_), t) if t != StepType::Batchable => {
                    return Err(invalid(
                        step,
                        "batch",
                        format!("is only allowed on a batchable step, this one is {}", t.as_str()),
                    ))
                }
                (Some(batch), _) => {
                    if batch.max_workers == 0 || batch.max_workers > MAX_WORKERS_LIMIT {
                        return Err(invalid(
                            step,
                            "batch.max_workers",
                            format!(
                                "must be between 1 and {MAX_WORKERS_LIMIT}, got {}",
                                batch.max_workers
                            ),
                        ));
                    }
                    let Some(worker) = self.step(&batch.worker) else {
                        return Err(invalid(
                            step,
                            "batch.worker",
                            format!("names unknown step '{}'", batch.worker),
                        ));
                    };
                    if worker.step_type != StepType::BatchWorker {
                        return Err(invalid(
                            step,
                            "batch.worker",
                            format!(
                                "names '{}', which is {}, not a batch_worker step",
                                worker.name,
                                worker.step_type.as_str()
                            ),
                        ));
                    }
                    if worker.dependencies != [step.name.clone()] {
                        return Err(invalid(
                            step,
                            "batch.worker",
                            format!(
                                "names '{}', which must depend on '{}' (and only on it)",
                                worker.name, step.name
                            ),
                        ));
                    }
                }
                (None, _) => {}
            }
            match step.step_type {
                StepType::BatchWorker => {
                    let parent = step.dependencies.iter().find(|d| {
                        self.step(d).is_some_and(|p| {
                            p.step_type == StepType::Batchable
                                && p.batch.as_ref().is_some_and(|b| b.worker == step.name)
                        })
                    });
                    if parent.is_none() || step.dependencies.len() != 1 {
                        return Err(invalid(
                            step,
                            "dependencies",
                            "a batch_worker step must depend on exactly one batchable step whose batch.worker names it".into(),
                        ));
                    }
                }
                StepType::DeferredConvergence => {
                    if !self.has_dynamic_ancestor(&step.name) {
                        return Err(invalid(
                            step,
                            "type",
                            "deferred_convergence needs a decision or batchable step upstream (in its dependencies or theirs)".into(),
                        ));
                    }
                }
                StepType::Decision => {
                    if !self
                        .steps
                        .iter()
                        .any(|s| s.dependencies.contains(&step.name))
                    {
                        return Err(invalid(
                            step,
                            "type",
                            "a decision step needs direct dependents to choose from".into(),
                        ));
                    }
                }
                StepType::Standard | StepType::Batchable => {}
            }
            if step.step_type != StepType::DeferredConvergence {
                if let Some(dep) = step
                    .dependencies
                    .iter()
                    .find(|d| type_of(d) == Some(StepType::BatchWorker))
                {
                    return Err(invalid(
                        step,
                        "dependencies",
                        format!(
                            "depends on batch_worker '{dep}', whose copies only a deferred_convergence step can wait for"
                        ),
                    ));
                }
            }
        }
        // A copy is named <worker>_<index>: no other step may be named so.
        for worker in self
            .steps
            .iter()
            .filter(|s| s.step_type == StepType::BatchWorker)
        {
            let prefix = format!("{}_", worker.name);
            if let Some(clash) = self.steps.iter().find(|s| {
                s.name.strip_prefix(&prefix).is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                })
            }) {
                return Err(invalid(
                    clash,
                    "name",
                    format!("clashes with the copies of batch_worker '{}'", worker.name),
                ));
            }
        }
        Ok(())
    }

    fn has_dynamic_ancestor(&self, name: &str) -> bool {
        let mut stack = vec![name];
        let mut seen = HashSet::new();
        while let Some(n) = stack.pop() {
            let Some(step) = self.step(n) else { continue };
            for d in &step.dependencies {
                if !seen.insert(d.as_str()) {
                    continue;
                }
                if self.step(d).is_some_and(|p| p.step_type.creates_steps()) {
                    return true;
                }
                stack.push(d);
            }
        }
        false
    }
}

fn validate_step(step: &StepTemplate, path: &Path) -> Result<(), TemplateError> {
    let invalid = |field: &str, reason: &str| TemplateError::InvalidField {
        path: path.to_path_buf(),
        step: Some(step.name.clone()),
        field: field.to_string(),
        reason: reason.to_string(),
    };
    if step.handler.callable.trim().is_empty() {
        return Err(invalid("handler.callable", "must not be empty"));
    }
    check_retry(&step.retry, &step.name, path)?;
    if let Some(t) = step.timeout_seconds {
        check_timeout(t, &step.name, path)?;
    }
    let mut names = HashSet::new();
    for e in &step.publishes_events {
        if e.name.trim().is_empty() {
            return Err(invalid("publishes_events[].name", "must not be empty"));
        }
        if !names.insert(e.name.as_str()) {
            return Err(invalid(
                "publishes_events[].name",
                &format!("'{}' is declared twice", e.name),
            ));
        }
    }
    Ok(())
}

fn check_timeout(t: u64, step: &str, path: &Path) -> Result<(), TemplateError> {
    if t == 0 || t > MAX_TIMEOUT_SECONDS {
        return Err(TemplateError::InvalidField {
            path: path.to_path_buf(),
            step: Some(step.to_string()),
            field: "timeout_seconds".into(),
            reason: format!("must be between 1 and {MAX_TIMEOUT_SECONDS}, got {t}"),
        });
    }
    Ok(())
}

fn check_retry(r: &RetryPolicy, step: &str, path: &Path) -> Result<(), TemplateError> {
    let bad = |field: &'static str, reason: String| TemplateError::InvalidRetry {
        path: path.to_path_buf(),
        step: step.to_string(),
        field,
        reason,
    };
    if let Some(n) = r.max_attempts {
        if n == 0 || n > MAX_ATTEMPTS_LIMIT {
            return Err(bad(
                "max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {n}"),
            ));
        }
    }
    if let Some(ms) = r.max_backoff_ms {
        if ms > MAX_BACKOFF_LIMIT_MS {
            return Err(bad(
                "max_backoff_ms",
                format!("must be at most {MAX_BACKOFF_LIMIT_MS}, got {ms}"),
            ));
        }
    }
    if let Some(base) = r.backoff_base_ms {
        if base > MAX_BACKOFF_LIMIT_MS {
            return Err(bad(
                "backoff_base_ms",
                format!("must be at most {MAX_BACKOFF_LIMIT_MS}, got {base}"),
            ));
        }
        if let Some(max) = r.max_backoff_ms {
            if base > max {
                return Err(bad(
                    "backoff_base_ms",
                    format!("({base}) must not exceed max_backoff_ms ({max})"),
                ));
            }
        }
    }
    Ok(())
}

/// A cycle as the list of step names along it, first name repeated at the end.
fn find_cycle(steps: &[StepTemplate]) -> Option<Vec<String>> {
    let deps: HashMap<&str, &[String]> = steps
        .iter()
        .map(|s| (s.name.as_str(), s.dependencies.as_slice()))
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    fn visit<'a>(
        name: &'a str,
        deps: &HashMap<&'a str, &'a [String]>,
        marks: &mut HashMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(name) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(name, Mark::Visiting);
        stack.push(name);
        for d in deps.get(name).copied().unwrap_or_default() {
            if let Some(c) = visit(d.as_str(), deps, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(name, Mark::Done);
        None
    }
    for s in steps {
        let mut stack = Vec::new();
        if let Some(c) = visit(&s.name, &deps, &mut marks, &mut stack) {
            return Some(c);
        }
    }
    None
}

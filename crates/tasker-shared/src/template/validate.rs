use super::{RetryPolicy, StepTemplate, TaskTemplate, TemplateError};
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

//! `/ui/templates`: every registered template with its DAG and steps.

use super::{dag, percent_encode, render, Layout, UiError};
use crate::OrchestrationCore;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use tasker_shared::models::TemplateRegistry;

pub struct TemplateStep {
    pub name: String,
    pub callable: String,
    pub dependencies: String,
    pub retry: String,
    pub timeout: String,
}

pub struct TemplateView {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub tasks_href: String,
    pub dag: String,
    pub steps: Vec<TemplateStep>,
}

#[derive(Template)]
#[template(path = "dashboard/templates.html")]
struct TemplatesPage {
    layout: Layout,
    templates: Vec<TemplateView>,
}

pub async fn page(State(core): State<OrchestrationCore>) -> Result<Response, UiError> {
    let registered = TemplateRegistry::new(core.pool.clone()).list().await?;
    let templates = registered
        .into_iter()
        .map(|r| {
            let t = r.template;
            let nodes: Vec<dag::Node> = t
                .steps
                .iter()
                .map(|s| dag::Node {
                    name: s.name.clone(),
                    state: None,
                    href: None,
                    parents: s.dependencies.clone(),
                })
                .collect();
            TemplateView {
                tasks_href: format!(
                    "/ui/tasks?namespace={}&name={}",
                    percent_encode(&t.namespace),
                    percent_encode(&t.name)
                ),
                dag: dag::svg(&nodes),
                steps: t
                    .steps
                    .iter()
                    .map(|s| TemplateStep {
                        name: s.name.clone(),
                        callable: s.handler.callable.clone(),
                        dependencies: s.dependencies.join(", "),
                        retry: format!(
                            "{}, {} attempts, {} backoff",
                            if s.retry.retryable {
                                "retryable"
                            } else {
                                "not retryable"
                            },
                            s.retry
                                .max_attempts
                                .map_or_else(|| "default".to_string(), |n| n.to_string()),
                            s.retry.backoff.as_str()
                        ),
                        timeout: s
                            .timeout_seconds
                            .map(|t| format!("{t} s"))
                            .unwrap_or_else(|| "default".into()),
                    })
                    .collect(),
                namespace: t.namespace,
                name: t.name,
                version: t.version,
                description: t.description.unwrap_or_default(),
            }
        })
        .collect();
    render(&TemplatesPage {
        layout: Layout::new(&core, "Templates", "templates").still(),
        templates,
    })
}

//! The operator actions: cancel a task, reset or resolve a step. Each is a POST carrying a
//! CSRF token; it acts only once confirmed (`confirmed=yes`, which the script adds after the
//! browser's confirmation dialog; without the script the POST answers with a confirmation
//! page instead). The work is done by [`crate::task_operations`], as for the REST API.

use super::task::path_error;
use super::{csrf, percent_encode, render, Layout, UiError};
use crate::task_operations::{act_on_step, cancel_task, StepAction};
use crate::OrchestrationCore;
use askama::Template;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use uuid::Uuid;

/// Who the transitions name as having acted.
const ACTOR: &str = "dashboard";

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: String,
    #[serde(default)]
    confirmed: String,
}

#[derive(Template)]
#[template(path = "dashboard/confirm.html")]
struct ConfirmPage {
    layout: Layout,
    question: String,
    action: String,
    button: String,
    back: String,
}

/// Checks where the form came from and its token; `Some(page)` asks for confirmation first.
fn check(
    core: &OrchestrationCore,
    headers: &HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
    confirm: impl FnOnce() -> ConfirmPage,
) -> Result<Option<Response>, UiError> {
    csrf::check_origin(headers)?;
    let Form(form) = form.map_err(|e| UiError::BadRequest {
        field: "form",
        message: e.body_text(),
    })?;
    csrf::verify(&core.sessions, &super::Principal::current(), &form.csrf)?;
    if form.confirmed == "yes" {
        return Ok(None);
    }
    render(&confirm()).map(Some)
}

pub async fn cancel(
    State(core): State<OrchestrationCore>,
    headers: HeaderMap,
    path: Result<Path<Uuid>, PathRejection>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, UiError> {
    let Path(id) = path.map_err(path_error)?;
    let back = format!("/ui/tasks/{id}");
    if let Some(page) = check(&core, &headers, form, || ConfirmPage {
        layout: Layout::new(&core, "Cancel task?", "tasks").still(),
        question: format!(
            "Cancel task {id}? Steps not yet started are cancelled; none will be enqueued."
        ),
        action: format!("/ui/tasks/{id}/cancel"),
        button: "Cancel task".into(),
        back: back.clone(),
    })? {
        return Ok(page);
    }
    cancel_task(&core.pool, id, ACTOR).await?;
    Ok(Redirect::to(&format!("{back}?done=cancel")).into_response())
}

pub async fn step_action(
    State(core): State<OrchestrationCore>,
    headers: HeaderMap,
    path: Result<Path<(Uuid, String, String)>, PathRejection>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, UiError> {
    let Path((id, step, action)) = path.map_err(path_error)?;
    let (step_action, question) = match action.as_str() {
        "reset" => (
            StepAction::Reset,
            format!("Reset step {step}? It gets a fresh set of attempts and runs again."),
        ),
        "resolve" => (
            StepAction::Resolve,
            format!("Resolve step {step} manually? It counts as done, without a result, and its dependents may run."),
        ),
        other => return Err(UiError::not_found(format!("step action '{other}'"))),
    };
    let back = format!("/ui/tasks/{id}");
    if let Some(page) = check(&core, &headers, form, || ConfirmPage {
        layout: Layout::new(&core, format!("{action} {step}?"), "tasks").still(),
        question,
        action: format!("/ui/tasks/{id}/steps/{}/{action}", percent_encode(&step)),
        button: format!(
            "{} step",
            if action == "reset" {
                "Reset"
            } else {
                "Resolve"
            }
        ),
        back: back.clone(),
    })? {
        return Ok(page);
    }
    act_on_step(
        &core.pool,
        core.queues.notifier(),
        id,
        &step,
        &step_action,
        ACTOR,
    )
    .await?;
    Ok(Redirect::to(&format!(
        "{back}?done={action}&step={}",
        percent_encode(&step)
    ))
    .into_response())
}

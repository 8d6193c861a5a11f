//! The operator dashboard served by `tasker server` under `/ui`: server-rendered pages
//! (askama templates checked at compile time), a stylesheet and a small script embedded in
//! the binary, and the operator actions (reset, resolve, cancel) done through
//! [`crate::task_operations`], the same code as the REST API.
//!
//! Every element that stands for a task or a step carries `data-task-uuid`, `data-step-name`
//! and `data-step-state`; the script sets `data-ready` on `<body>` once the page is drawn.

mod actions;
mod assets;
mod csrf;
mod dag;
mod error;
mod failures;
mod login;
mod overview;
mod session;
mod step;
mod task;
mod tasks;
mod templates;
mod workers;

pub use error::UiError;
pub use overview::COUNT_CAP;
pub use session::{Principal, Sessions};

use crate::OrchestrationCore;
use askama::Template;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};

/// The dashboard's routes, to be merged into the API router (they carry their own
/// API-key rule, see [`session`]).
pub fn routes(core: OrchestrationCore) -> Router<OrchestrationCore> {
    let pages = Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/tasks", get(tasks::page))
        .route("/ui/tasks/{task_uuid}", get(task::page))
        .route("/ui/tasks/{task_uuid}/cancel", post(actions::cancel))
        .route("/ui/tasks/{task_uuid}/steps/{step_name}", get(step::page))
        .route(
            "/ui/tasks/{task_uuid}/steps/{step_name}/{action}",
            post(actions::step_action),
        )
        .route("/ui/failures", get(failures::page))
        .route("/ui/workers", get(workers::page))
        .route("/ui/templates", get(templates::page))
        .route("/ui/logout", post(login::logout))
        .route_layer(axum::middleware::from_fn_with_state(
            core.clone(),
            session::require_api_key,
        ));
    Router::new()
        .merge(pages)
        .route("/ui/login", get(login::login_form).post(login::login))
        .layer(axum::middleware::from_fn_with_state(
            core,
            session::identify,
        ))
        .route("/ui/static/{file}", get(assets::file))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Pages never load anything from elsewhere, are never framed (a framed confirmation button
/// could be clicked by a hidden overlay) and never cached (they show live state).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// What every page's layout needs: its title, which navigation entry is current, the CSRF
/// token for its forms, whether it refreshes itself, and whether an API key is required
/// (then a logout button makes sense).
pub(crate) struct Layout {
    pub title: String,
    pub nav: &'static str,
    pub csrf: String,
    pub live: bool,
    pub key_required: bool,
}

impl Layout {
    pub fn new(core: &OrchestrationCore, title: impl Into<String>, nav: &'static str) -> Self {
        Self {
            title: title.into(),
            nav,
            csrf: csrf::issue(&core.sessions, &Principal::current()),
            live: true,
            key_required: !core.config.orchestration.api_key.is_empty(),
        }
    }

    pub fn still(mut self) -> Self {
        self.live = false;
        self
    }
}

/// Renders a template into an HTML response.
pub(crate) fn render(template: &impl Template) -> Result<Response, UiError> {
    Ok(Html(template.render()?).into_response())
}

/// A timestamp as operators read it: UTC, to the second.
pub(crate) fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(crate) fn when_opt(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(when).unwrap_or_default()
}

/// JSON laid out for reading.
pub(crate) fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Percent-encoding for a query value.
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

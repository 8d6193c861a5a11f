//! The dashboard's login form, login and logout: a session handed out for the configured
//! API key (see `session`), each form checked against CSRF first (see `csrf`).

use super::session::{key_matches, new_session_cookie, safe_next, set_cookie, Principal};
use super::{csrf, render, Layout, UiError};
use crate::OrchestrationCore;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "dashboard/login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_form(
    State(core): State<OrchestrationCore>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, UiError> {
    render(&LoginPage {
        layout: Layout::new(&core, "Log in", "login").still(),
        next: safe_next(q.next.as_deref()),
        error: None,
    })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    api_key: String,
    csrf: String,
    next: Option<String>,
}

pub async fn login(
    State(core): State<OrchestrationCore>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, UiError> {
    csrf::check_origin(&headers)?;
    csrf::verify(&core.sessions, &Principal::current(), &form.csrf)?;
    let api_key = core.config.orchestration.api_key.as_str();
    let next = safe_next(form.next.as_deref());
    if api_key.is_empty() {
        return Ok(Redirect::to(&next).into_response());
    }
    if !key_matches(&form.api_key, api_key) {
        let mut response = render(&LoginPage {
            layout: Layout::new(&core, "Log in", "login").still(),
            next,
            error: Some("That is not the configured API key.".into()),
        })?;
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(response);
    }
    // Always a new session id, so one planted before the login is never the one logged in.
    let mut response = Redirect::to(&next).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, new_session_cookie(&core));
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

pub async fn logout(
    State(core): State<OrchestrationCore>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, UiError> {
    csrf::check_origin(&headers)?;
    let who = Principal::current();
    csrf::verify(&core.sessions, &who, &form.csrf)?;
    if let Principal::Session { id, expires } = &who {
        core.sessions
            .revoke(id, *expires, chrono::Utc::now().timestamp());
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0));
    Ok(response)
}

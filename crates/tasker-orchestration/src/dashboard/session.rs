//! The API-key rule for the dashboard. When `[orchestration] api_key` is set, a page is served
//! only to a request that carries the key in `X-API-Key` (scripts), or a session cookie the
//! login form (or a one-off `?api_key=` in a link) hands out. The cookie holds an HMAC of a
//! fixed label under the key, never the key, so it is valid on every server sharing the key
//! and stops working when the key changes.

use super::{csrf, percent_encode, render, Layout, UiError};
use crate::OrchestrationCore;
use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

const COOKIE: &str = "tasker_ui_session";
const COOKIE_MAX_AGE_SECS: u32 = 12 * 3600;

fn session_mac(api_key: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(api_key.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"tasker-ui-session");
    mac
}

fn session_value(api_key: &str) -> String {
    hex::encode(session_mac(api_key).finalize().into_bytes())
}

fn key_matches(given: &str, expected: &str) -> bool {
    crate::api::auth::constant_time_eq(given.as_bytes(), expected.as_bytes())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn has_session(headers: &HeaderMap, api_key: &str) -> bool {
    let header_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if header_key.is_some_and(|k| key_matches(k, api_key)) {
        return true;
    }
    cookie(headers, COOKIE).is_some_and(|c| {
        hex::decode(c).is_ok_and(|tag| session_mac(api_key).verify_slice(&tag).is_ok())
    })
}

fn set_cookie(value: &str, max_age: u32) -> HeaderValue {
    // Lax, not Strict: a link to a task from a chat message must open it; the forms that
    // change anything carry a CSRF token as well.
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    ))
    .expect("cookie value is hex")
}

/// Only a dashboard path may follow a login, so the form cannot be used to send someone
/// elsewhere.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui") && !n.contains("//") && !n.contains('\\') => n.into(),
        _ => "/ui".into(),
    }
}

/// The query string without `api_key`, so the key does not stay in the address bar.
fn without_api_key(query: &str) -> String {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("api_key="))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

pub async fn require_api_key(
    State(core): State<OrchestrationCore>,
    request: Request,
    next: Next,
) -> Result<Response, UiError> {
    let api_key = core.config.orchestration.api_key.as_str();
    if api_key.is_empty() || has_session(request.headers(), api_key) {
        return Ok(next.run(request).await);
    }
    let uri = request.uri().clone();
    let query = uri.query().unwrap_or_default();
    let params = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let given = params.iter().find(|(k, _)| k == "api_key").map(|(_, v)| v);
    if given.is_some_and(|k| key_matches(k, api_key)) {
        let target = format!("{}{}", uri.path(), without_api_key(query));
        let mut response = Redirect::to(&target).into_response();
        response.headers_mut().insert(
            header::SET_COOKIE,
            set_cookie(&session_value(api_key), COOKIE_MAX_AGE_SECS),
        );
        return Ok(response);
    }
    if request.method() == Method::GET {
        let next = format!("{}{}", uri.path(), without_api_key(query));
        let login = format!("/ui/login?next={}", percent_encode(&next));
        return Ok(Redirect::to(&login).into_response());
    }
    Err(UiError::Unauthorized)
}

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
    csrf::verify(&form.csrf)?;
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
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&session_value(api_key), COOKIE_MAX_AGE_SECS),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

pub async fn logout(headers: HeaderMap, Form(form): Form<LogoutForm>) -> Result<Response, UiError> {
    csrf::check_origin(&headers)?;
    csrf::verify(&form.csrf)?;
    let mut response = Redirect::to("/ui/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(
            safe_next(Some("/ui/tasks?state=error")),
            "/ui/tasks?state=error"
        );
        assert_eq!(safe_next(Some("https://evil.example")), "/ui");
        assert_eq!(safe_next(Some("/ui//evil.example")), "/ui");
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn sessions_come_from_the_key_or_the_cookie() {
        let mut h = HeaderMap::new();
        assert!(!has_session(&h, "k"));
        h.insert(
            header::COOKIE,
            format!("a=b; {COOKIE}={}", session_value("k"))
                .parse()
                .unwrap(),
        );
        assert!(has_session(&h, "k"));
        assert!(!has_session(&h, "other"), "a new key ends old sessions");
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k".parse().unwrap());
        assert!(has_session(&h, "k"));
        assert_eq!(without_api_key("state=error&api_key=k"), "?state=error");
        assert_eq!(without_api_key("api_key=k"), "");
    }
}

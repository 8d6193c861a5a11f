//! Who a dashboard request comes from, and the API-key rule for the dashboard.
//!
//! When `[orchestration] api_key` is set, a page is served only to a request that carries
//! the key in `X-API-Key` (scripts) or a session cookie handed out by the login form (or a
//! one-off `?api_key=` in a link). A session is `<id>.<expires>.<HMAC>`: a random id, an
//! expiry `session_lifetime_seconds` ahead, and an HMAC under `session_secret` that also
//! covers the key, so the cookie never holds the key, stops working when the key changes
//! and is honoured by every orchestrator sharing the secret. Logging out revokes the id.
//! Without a key there are no sessions: everyone who can connect (loopback, or a name
//! in `allowed_hosts`) may act, and the CSRF token and Host check keep other sites out.

use super::{percent_encode, UiError};
use crate::OrchestrationCore;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use rand::RngCore;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use tasker_shared::config::OrchestrationConfig;

const COOKIE: &str = "tasker_ui_session";

tokio::task_local! {
    /// The principal of the dashboard request being handled, for the CSRF tokens its page
    /// renders ([`Layout::new`] has no request to read it from).
    static PRINCIPAL: Principal;
}

/// Who a dashboard request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No API key is configured: nobody logs in.
    Open,
    /// A script sending the key in `X-API-Key`.
    ApiKeyHeader,
    /// A logged-in browser.
    Session { id: String, expires: i64 },
    /// A browser that has not logged in (it may see the login form only).
    Visitor,
}

impl Principal {
    pub fn session(id: impl Into<String>, expires: i64) -> Self {
        Principal::Session {
            id: id.into(),
            expires,
        }
    }

    /// What a CSRF token is bound to.
    pub fn subject(&self) -> String {
        match self {
            Principal::Open => "open".into(),
            Principal::ApiKeyHeader => "api-key".into(),
            Principal::Session { id, .. } => format!("session:{id}"),
            Principal::Visitor => "visitor".into(),
        }
    }

    /// The principal of the request being handled, if inside one. Outside a request the
    /// tokens rendered verify for no one, which fails safe.
    pub fn current() -> Principal {
        PRINCIPAL
            .try_with(Principal::clone)
            .unwrap_or(Principal::Visitor)
    }
}

/// The session secret, lifetime and revoked sessions of one server process.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<SessionsInner>,
}

struct SessionsInner {
    secret: Vec<u8>,
    lifetime_secs: i64,
    /// Logged-out session ids with their expiry; kept only until then.
    revoked: Mutex<HashMap<String, i64>>,
}

impl Sessions {
    /// `session_secret` when configured, else a secret drawn for this process.
    pub fn new(config: &OrchestrationConfig) -> Self {
        let secret = if config.session_secret.is_empty() {
            let mut key = vec![0u8; 32];
            rand::rng().fill_bytes(&mut key);
            key
        } else {
            config.session_secret.as_bytes().to_vec()
        };
        Self {
            inner: Arc::new(SessionsInner {
                secret,
                lifetime_secs: i64::try_from(config.session_lifetime_seconds).unwrap_or(i64::MAX),
                revoked: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn lifetime_secs(&self) -> i64 {
        self.inner.lifetime_secs
    }

    fn mac(&self, label: &str, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.inner.secret).expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        for part in parts {
            // Length-prefixed, so no two different part lists hash the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    pub(crate) fn csrf_tag(&self, subject: &str, issued: i64) -> Vec<u8> {
        self.mac(
            "tasker-ui-csrf",
            &[subject.as_bytes(), &issued.to_be_bytes()],
        )
        .finalize()
        .into_bytes()
        .to_vec()
    }

    pub(crate) fn csrf_tag_matches(&self, subject: &str, issued: i64, tag: &[u8]) -> bool {
        self.mac(
            "tasker-ui-csrf",
            &[subject.as_bytes(), &issued.to_be_bytes()],
        )
        .verify_slice(tag)
        .is_ok()
    }

    fn session_mac(&self, id: &str, expires: i64, api_key: &str) -> Hmac<Sha256> {
        self.mac(
            "tasker-ui-session",
            &[id.as_bytes(), &expires.to_be_bytes(), api_key.as_bytes()],
        )
    }

    /// A new session's cookie value.
    fn open(&self, api_key: &str, now: i64) -> String {
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let id = hex::encode(id);
        let expires = now.saturating_add(self.inner.lifetime_secs);
        let tag = self
            .session_mac(&id, expires, api_key)
            .finalize()
            .into_bytes();
        format!("{id}.{expires}.{}", hex::encode(tag))
    }

    /// The session a cookie value stands for, if it was issued under this secret and key,
    /// has not expired and was not logged out.
    fn check(&self, value: &str, api_key: &str, now: i64) -> Option<Principal> {
        let mut parts = value.splitn(3, '.');
        let (id, expires, tag) = (parts.next()?, parts.next()?, parts.next()?);
        let expires: i64 = expires.parse().ok()?;
        let tag = hex::decode(tag).ok()?;
        self.session_mac(id, expires, api_key)
            .verify_slice(&tag)
            .ok()?;
        if expires <= now || self.inner.revoked.lock().contains_key(id) {
            return None;
        }
        Some(Principal::session(id, expires))
    }

    /// Ends a session for good (in this process; see the README on load balancers).
    pub(super) fn revoke(&self, id: &str, expires: i64, now: i64) {
        let mut revoked = self.inner.revoked.lock();
        revoked.retain(|_, until| *until > now);
        revoked.insert(id.to_string(), expires);
    }
}

pub(super) fn key_matches(given: &str, expected: &str) -> bool {
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

fn principal(core: &OrchestrationCore, headers: &HeaderMap, now: i64) -> Principal {
    let api_key = core.config.orchestration.api_key.as_str();
    if api_key.is_empty() {
        return Principal::Open;
    }
    let header_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if header_key.is_some_and(|k| key_matches(k, api_key)) {
        return Principal::ApiKeyHeader;
    }
    cookie(headers, COOKIE)
        .and_then(|c| core.sessions.check(&c, api_key, now))
        .unwrap_or(Principal::Visitor)
}

pub(super) fn set_cookie(value: &str, max_age: i64) -> HeaderValue {
    // Lax, not Strict: a link to a task from a chat message must open it; the forms that
    // change anything carry a CSRF token as well.
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    ))
    .expect("cookie value is hex, digits and dots")
}

pub(super) fn new_session_cookie(core: &OrchestrationCore) -> HeaderValue {
    let now = chrono::Utc::now().timestamp();
    let value = core.sessions.open(&core.config.orchestration.api_key, now);
    set_cookie(&value, core.sessions.lifetime_secs())
}

/// Only a dashboard path may follow a login, so the form cannot be used to send someone
/// elsewhere.
pub(super) fn safe_next(next: Option<&str>) -> String {
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

/// Works out who every dashboard request comes from, for the API-key rule and for the
/// CSRF tokens its page renders and checks.
pub async fn identify(
    State(core): State<OrchestrationCore>,
    mut request: Request,
    next: Next,
) -> Response {
    let who = principal(&core, request.headers(), chrono::Utc::now().timestamp());
    request.extensions_mut().insert(who.clone());
    PRINCIPAL.scope(who, next.run(request)).await
}

pub async fn require_api_key(
    State(core): State<OrchestrationCore>,
    request: Request,
    next: Next,
) -> Result<Response, UiError> {
    if request.extensions().get::<Principal>() != Some(&Principal::Visitor) {
        return Ok(next.run(request).await);
    }
    let api_key = core.config.orchestration.api_key.as_str();
    let uri = request.uri().clone();
    let query = uri.query().unwrap_or_default();
    let params = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let given = params.iter().find(|(k, _)| k == "api_key").map(|(_, v)| v);
    if given.is_some_and(|k| key_matches(k, api_key)) {
        let target = format!("{}{}", uri.path(), without_api_key(query));
        let mut response = Redirect::to(&target).into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, new_session_cookie(&core));
        return Ok(response);
    }
    if request.method() == Method::GET {
        let next = format!("{}{}", uri.path(), without_api_key(query));
        let login = format!("/ui/login?next={}", percent_encode(&next));
        return Ok(Redirect::to(&login).into_response());
    }
    Err(UiError::Unauthorized)
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
    fn sessions_are_signed_expire_end_with_the_key_and_are_revoked() {
        let mut config = tasker_shared::config::ConfigLoader::isolated(None, "test")
            .load()
            .unwrap()
            .orchestration;
        config.session_secret = "0123456789abcdef0123456789abcdef".into();
        config.session_lifetime_seconds = 600;
        let s = Sessions::new(&config);
        let now = 1_000_000;
        let value = s.open("k", now);
        let Some(Principal::Session { id, expires }) = s.check(&value, "k", now + 1) else {
            panic!("a fresh session is valid");
        };
        assert_eq!(expires, now + 600);
        assert_ne!(s.open("k", now), value, "every session has its own id");
        assert!(s.check(&value, "other", now).is_none(), "a new key ends it");
        assert!(s.check(&value, "k", now + 600).is_none(), "expired");
        let (rest, _) = value.rsplit_once('.').unwrap();
        let (vid, _) = rest.split_once('.').unwrap();
        let stretched = format!("{vid}.{}.{}", now + 99_999, &value[value.len() - 64..]);
        assert!(
            s.check(&stretched, "k", now).is_none(),
            "the expiry is signed"
        );
        config.session_secret = "fedcba9876543210fedcba9876543210".into();
        assert!(Sessions::new(&config).check(&value, "k", now).is_none());
        s.revoke(&id, expires, now);
        assert!(s.check(&value, "k", now + 1).is_none(), "logged out");
        assert_eq!(without_api_key("state=error&api_key=k"), "?state=error");
        assert_eq!(without_api_key("api_key=k"), "");
    }
}

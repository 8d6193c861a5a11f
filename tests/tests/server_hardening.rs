//! The server is closed by default (issue 27, items 9 to 11): no open bind without an API
//! key, only known Host names, CSRF tokens tied to the session, no raw database errors,
//! bounded pages, slow headers cut off and a cap on connections. Against a real database;
//! the last tests serve on a real TCP port.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tasker_tests::toml_value::Value as Toml;
use tasker_tests::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// `name=value` of the session cookie this reply sets.
    fn session_cookie(&self) -> String {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("tasker_ui_session="))
            .unwrap_or_else(|| panic!("no session cookie in {:?}", self.headers))
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }

    fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body))
            + marker.len();
        let end = start + self.body[start..].find('"').unwrap();
        self.body[start..end].to_string()
    }
}

async fn send(app: &axum::Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 8 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn request(method: Method, uri: &str, host: &str, cookie: Option<&str>) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, host);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Body::empty()).unwrap()
}

/// A same-origin form POST from 127.0.0.1:3000, as a browser sends it.
fn form(uri: &str, cookie: Option<&str>, body: String) -> Request<Body> {
    let mut req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "127.0.0.1:3000")
        .header(header::ORIGIN, "http://127.0.0.1:3000")
        .header("sec-fetch-site", "same-origin");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Body::from(body)).unwrap()
}

const SECRET: &str = "a-shared-dashboard-secret-of-40-characters";

fn keyed(secret: &str) -> Vec<(&'static str, Toml)> {
    vec![
        ("orchestration.api_key", Toml::String("s3cret".into())),
        ("orchestration.session_secret", Toml::String(secret.into())),
        ("orchestration.session_lifetime_seconds", Toml::Integer(600)),
    ]
}

/// Logs in through the form and returns the session cookie (`name=value`).
async fn login(app: &axum::Router) -> String {
    let page = send(
        app,
        request(Method::GET, "/ui/login", "127.0.0.1:3000", None),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let done = send(
        app,
        form(
            "/ui/login",
            None,
            format!("api_key=s3cret&next=%2Fui&csrf={}", page.csrf()),
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    done.session_cookie()
}

async fn page_csrf(app: &axum::Router, cookie: &str) -> String {
    let page = send(
        app,
        request(Method::GET, "/ui/tasks", "127.0.0.1:3000", Some(cookie)),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.csrf()
}

// Item 9 ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_address_without_an_api_key_is_refused_unless_insecure_is_said() {
    let h = Harness::orchestration_only(&[]).await;
    let token = h.orchestrator.as_ref().unwrap().token();
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let served = tokio::time::timeout(
        Duration::from_secs(5),
        tasker_orchestration::api::serve(h.core.clone(), listener, token.clone()),
    )
    .await
    .expect("refused at once, not served");
    let err = served.expect_err("0.0.0.0 without an API key is refused");
    let text = err.to_string();
    for needed in [
        "0.0.0.0",
        "api_key",
        "--insecure-no-auth",
        "insecure_no_auth",
    ] {
        assert!(text.contains(needed), "{needed} in: {text}");
    }

    for overrides in [
        vec![("orchestration.api_key", Toml::String("s3cret".into()))],
        vec![("orchestration.insecure_no_auth", Toml::Boolean(true))],
    ] {
        let h = Harness::orchestration_only(&overrides).await;
        let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let token = h.orchestrator.as_ref().unwrap().token();
        let server = tokio::spawn(tasker_orchestration::api::serve(
            h.core.clone(),
            listener,
            token,
        ));
        let reply = raw_get(([127, 0, 0, 1], port).into(), "/health").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{overrides:?}: {reply}");
        h.shutdown().await;
        server.await.unwrap().unwrap();
    }
    h.shutdown().await;
}

// Item 10 --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_loopback_names_ip_literals_and_configured_hosts_are_served() {
    let h = Harness::orchestration_only(&[(
        "orchestration.allowed_hosts",
        Toml::Array(vec![Toml::String("tasker.example.com".into())]),
    )])
    .await;
    let app = tasker_orchestration::api::router(h.core.clone());
    for host in [
        "127.0.0.1:8080",
        "localhost:8080",
        "localhost",
        "[::1]:8080",
        "10.1.2.3:8080",
        "tasker.example.com",
        "TASKER.example.com:443",
    ] {
        for uri in ["/v1/tasks", "/ui/tasks", "/health"] {
            let r = send(&app, request(Method::GET, uri, host, None)).await;
            assert_eq!(r.status, StatusCode::OK, "{host} {uri}: {}", r.body);
        }
    }
    for host in [
        "evil.example:8080",
        "rebind.attacker.test",
        "tasker.example.com.evil.test",
        "localhost.evil.test",
    ] {
        for uri in ["/v1/tasks", "/ui/tasks", "/ui/login"] {
            let r = send(&app, request(Method::GET, uri, host, None)).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{host} {uri}: {}", r.body);
            assert!(r.body.contains("allowed_hosts"), "{}", r.body);
        }
        let r = send(&app, request(Method::DELETE, "/v1/tasks/0", host, None)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{host}: {}", r.body);
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_tokens_belong_to_their_session_which_expires_and_logout_revokes() {
    let h = Harness::orchestration_only(&keyed(SECRET)).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let alice = login(&app).await;
    let bob = login(&app).await;
    assert_ne!(alice, bob, "each login is a session of its own");
    let set = send(
        &app,
        form(
            "/ui/login",
            None,
            format!(
                "api_key=s3cret&next=%2Fui&csrf={}",
                send(
                    &app,
                    request(Method::GET, "/ui/login", "127.0.0.1:3000", None)
                )
                .await
                .csrf()
            ),
        ),
    )
    .await;
    let set_cookie = set.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set_cookie.contains("Max-Age=600"),
        "the cookie lives session_lifetime_seconds: {set_cookie}"
    );

    let alice_token = page_csrf(&app, &alice).await;
    // A POST that fails after the CSRF check (no such task) tells the two apart.
    let action = "/ui/tasks/01a21765-82c5-773c-982a-ee2d542bea65/cancel";
    let body = |t: &str| format!("csrf={t}&confirmed=yes");
    let own = send(&app, form(action, Some(&alice), body(&alice_token))).await;
    assert_eq!(own.status, StatusCode::NOT_FOUND, "{}", own.body);
    let stolen = send(&app, form(action, Some(&bob), body(&alice_token))).await;
    assert_eq!(
        stolen.status,
        StatusCode::FORBIDDEN,
        "another session's token is refused: {}",
        stolen.body
    );

    let out = send(
        &app,
        form("/ui/logout", Some(&alice), format!("csrf={alice_token}")),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    let replayed = send(
        &app,
        request(Method::GET, "/ui/tasks", "127.0.0.1:3000", Some(&alice)),
    )
    .await;
    assert_eq!(
        replayed.status,
        StatusCode::SEE_OTHER,
        "a copy of the logged-out cookie no longer works"
    );
    assert!(replayed.location().starts_with("/ui/login"));
    let after = send(&app, form(action, Some(&alice), body(&alice_token))).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.body);
    let bob_still = send(
        &app,
        request(Method::GET, "/ui/tasks", "127.0.0.1:3000", Some(&bob)),
    )
    .await;
    assert_eq!(bob_still.status, StatusCode::OK, "other sessions go on");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrators_sharing_the_session_secret_accept_each_others_sessions_and_forms() {
    let a = Harness::orchestration_only(&keyed(SECRET)).await;
    let app_a = tasker_orchestration::api::router(a.core.clone());
    // A second orchestrator on the same database and secret, as behind a load balancer.
    let mut b_config = a.config.clone();
    b_config.orchestration.session_secret = SECRET.into();
    let core_b =
        tasker_orchestration::OrchestrationCore::new(a.db.pool.clone(), b_config.clone()).await;
    let app_b = tasker_orchestration::api::router(core_b);
    let mut c_config = b_config;
    c_config.orchestration.session_secret = "another-secret-of-at-least-32-characters".into();
    let core_c = tasker_orchestration::OrchestrationCore::new(a.db.pool.clone(), c_config).await;
    let app_c = tasker_orchestration::api::router(core_c);

    let cookie = login(&app_a).await;
    let token = page_csrf(&app_a, &cookie).await;
    let action = "/ui/tasks/01a21765-82c5-773c-982a-ee2d542bea65/cancel";
    let on_b = send(
        &app_b,
        form(action, Some(&cookie), format!("csrf={token}&confirmed=yes")),
    )
    .await;
    assert_eq!(
        on_b.status,
        StatusCode::NOT_FOUND,
        "the session and the form rendered by A work on B: {}",
        on_b.body
    );
    let on_c = send(
        &app_c,
        request(Method::GET, "/ui/tasks", "127.0.0.1:3000", Some(&cookie)),
    )
    .await;
    assert_eq!(on_c.status, StatusCode::SEE_OTHER, "another secret: log in");
    a.shutdown().await;
}

// Item 11 --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_reach_clients_only_as_a_reference() {
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    sqlx::query("ALTER TABLE tasker.workers RENAME TO workers_hidden_by_the_test")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let api = send(
        &app,
        request(Method::GET, "/v1/workers", "127.0.0.1:8080", None),
    )
    .await;
    assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
    let error = &api.json()["error"];
    assert_eq!(error["code"], "internal", "{}", api.body);
    let reference = error["reference"].as_str().expect("a reference to quote");
    assert!(uuid::Uuid::parse_str(reference).is_ok(), "{reference}");
    assert!(error["message"].as_str().unwrap().contains(reference));
    for leaked in ["relation", "does not exist", "tasker.workers", "database"] {
        assert!(!api.body.contains(leaked), "{leaked} leaked: {}", api.body);
    }
    let ui = send(
        &app,
        request(Method::GET, "/ui/workers", "127.0.0.1:8080", None),
    )
    .await;
    assert_eq!(ui.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(ui.body.contains("reference"), "{}", ui.body);
    for leaked in ["relation", "does not exist", "tasker.workers"] {
        assert!(!ui.body.contains(leaked), "{leaked} leaked: {}", ui.body);
    }
    sqlx::query("ALTER TABLE tasker.workers_hidden_by_the_test RENAME TO workers")
        .execute(&h.db.pool)
        .await
        .unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_and_limits_are_capped() {
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    for (query, field) in [
        ("offset=1000000000", "offset"),
        ("offset=10001", "offset"),
        ("limit=501", "limit"),
        ("offset=-1", "offset"),
    ] {
        let r = send(
            &app,
            request(
                Method::GET,
                &format!("/v1/tasks?{query}"),
                "127.0.0.1:8080",
                None,
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(r.json()["error"]["field"], field, "{query}: {}", r.body);
    }
    let r = send(
        &app,
        request(
            Method::GET,
            "/v1/tasks?offset=10000&limit=500",
            "127.0.0.1:8080",
            None,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    h.shutdown().await;
}

/// GET over a fresh connection; the whole reply as text.
async fn raw_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("a reply")
        .unwrap();
    out
}

async fn serve(h: &Harness) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = h.orchestrator.as_ref().unwrap().token();
    tokio::spawn(tasker_orchestration::api::serve(
        h.core.clone(),
        listener,
        token,
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    let h = Harness::orchestration_only(&[(
        "orchestration.request_header_timeout_ms",
        Toml::Integer(300),
    )])
    .await;
    let addr = serve(&h).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server still held the connection after 5 s"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(raw_get(addr, "/health").await.starts_with("HTTP/1.1 200"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_closes() {
    let h =
        Harness::orchestration_only(&[("orchestration.max_http_connections", Toml::Integer(2))])
            .await;
    let addr = serve(&h).await;
    let idle_a = TcpStream::connect(addr).await.unwrap();
    let _idle_b = TcpStream::connect(addr).await.unwrap();
    let third = tokio::spawn(async move { raw_get(addr, "/health").await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served while two were open"
    );
    drop(idle_a);
    let reply = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    h.shutdown().await;
}

//! The REST API, request by request, against a real database (no network: the router is
//! called directly).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tasker_tests::toml_value::Value as Toml;
use tasker_tests::{FakeOutcome, FakeWorker, Harness};
use tower::ServiceExt;

async fn call(
    app: &axum::Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_without_auth() {
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());

    let (s, v) = call(&app, Method::GET, "/health", None, None).await;
    assert_eq!((s, v["status"].clone()), (StatusCode::OK, json!("healthy")));
    let (s, v) = call(&app, Method::GET, "/health/ready", None, None).await;
    assert_eq!((s, v["database"].clone()), (StatusCode::OK, json!("ok")));

    let (s, v) = call(&app, Method::GET, "/v1/templates", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["templates"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "order_fulfillment"));

    let body = json!({"namespace": "diamond_workflow", "name": "diamond_math", "version": "1.0.0", "context": {"value": 3}, "idempotency_key": "k1"});
    let (s, v) = call(&app, Method::POST, "/v1/tasks", Some(body.clone()), None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["task_uuid"].as_str().unwrap().to_string();
    let (s, v) = call(&app, Method::POST, "/v1/tasks", Some(body), None).await;
    assert_eq!(
        (s, v["task_uuid"].as_str().unwrap()),
        (StatusCode::OK, id.as_str()),
        "same idempotency key, same task"
    );

    let (s, v) = call(&app, Method::GET, &format!("/v1/tasks/{id}"), None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["execution_context"]["execution_status"],
        json!("processing")
    );
    assert_eq!(v["steps"].as_array().unwrap().len(), 4);

    let (s, v) = call(
        &app,
        Method::GET,
        "/v1/tasks?namespace=diamond_workflow&limit=10",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1);
    let (_, v) = call(&app, Method::GET, "/v1/tasks?status=complete", None, None).await;
    assert_eq!(v["tasks"].as_array().unwrap().len(), 0);

    // Fail `start` for good, then complete it by hand through PATCH.
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    fake.drain("diamond_workflow", |_, _| FakeOutcome::Failure {
        retryable: false,
        retry_after_ms: None,
    })
    .await;
    let task = id.parse().unwrap();
    assert_eq!(
        tasker_tests::wait_for_task(&h.db.pool, task, Duration::from_secs(10))
            .await
            .state,
        "error"
    );
    let (s, v) = call(
        &app,
        Method::PATCH,
        &format!("/v1/tasks/{id}/steps/start"),
        Some(json!({"action": "complete", "result": 9})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["step"]["state"], json!("complete"));
    let (s, v) = call(
        &app,
        Method::GET,
        &format!("/v1/tasks/{id}/steps"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "enqueued")
            .count(),
        2
    );

    let (s, v) = call(&app, Method::DELETE, &format!("/v1/tasks/{id}"), None, None).await;
    assert_eq!(
        (s, v["task"]["state"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );
    let (s, v) = call(&app, Method::DELETE, &format!("/v1/tasks/{id}"), None, None).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("conflict"))
    );

    let (s, v) = call(&app, Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(text.contains("tasker_tasks_created_total"), "{text}");
    assert!(text.contains("tasker_results_total"), "{text}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_errors() {
    let h = Harness::orchestration_only(&[(
        "orchestration.request_body_limit_bytes",
        Toml::Integer(2048),
    )])
    .await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let cases = [
        (
            json!({"namespace": "ecommerce"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"namespace": "", "name": "n", "version": "1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "namespace",
        ),
        (
            json!({"namespace": "a", "name": "n", "version": "1", "context": [1]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "context",
        ),
        (
            json!({"namespace": "a", "name": "n", "version": "1", "bogus": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bogus",
        ),
        (
            json!({"namespace": "ecommerce", "name": "order_fulfillment", "version": "1.0.0", "context": {"order_id": 1}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "context",
        ),
        (
            json!({"namespace": "linear_workflow", "name": "linear_math", "version": "1.0.0", "context": {"value": 1, "note": "a\u{0}b"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "context",
        ),
        (
            json!({"namespace": "linear_workflow", "name": "linear_math", "version": "1.0.0",
                   "context": (0..65).fold(json!(1), |inner, _| json!({ "a": inner }))}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "context",
        ),
    ];
    for (body, status, field) in cases {
        let (s, v) = call(&app, Method::POST, "/v1/tasks", Some(body.clone()), None).await;
        assert_eq!(s, status, "{body} -> {v}");
        assert_eq!(v["error"]["field"], json!(field), "{body} -> {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let (_, v) = call(
        &app,
        Method::POST,
        "/v1/tasks",
        Some(json!({"namespace": "linear_workflow", "name": "linear_math", "version": "1.0.0", "context": {"note": "a\u{0}b"}})),
        None,
    )
    .await;
    assert_eq!(
        v["error"]["message"],
        "context for linear_workflow/linear_math@1.0.0 cannot be stored: context.note: contains a NUL character (\\u0000), which Postgres cannot store"
    );
    let (s, v) = call(
        &app,
        Method::POST,
        "/v1/tasks",
        Some(json!({"namespace": "nope", "name": "n", "version": "1"})),
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("template_not_found"))
    );

    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/tasks")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    assert_eq!(
        app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let big = json!({"namespace": "a", "name": "n", "version": "1", "context": {"pad": "x".repeat(5000)}});
    let (s, _) = call(&app, Method::POST, "/v1/tasks", Some(big), None).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    let (s, _) = call(&app, Method::GET, "/v1/tasks/not-a-uuid", None, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = call(
        &app,
        Method::GET,
        &format!("/v1/tasks/{}", uuid::Uuid::now_v7()),
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("task_not_found"))
    );
    let (s, v) = call(&app, Method::GET, "/v1/tasks?limit=0", None, None).await;
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("limit"))
    );
    let (s, v) = call(&app, Method::GET, "/v1/tasks?status=sleeping", None, None).await;
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("status"))
    );
    let (s, _) = call(
        &app,
        Method::PATCH,
        &format!("/v1/tasks/{}/steps/x", uuid::Uuid::now_v7()),
        Some(json!({"action": "explode"})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required_on_v1_when_configured() {
    let h =
        Harness::orchestration_only(&[("orchestration.api_key", Toml::String("s3cret".into()))])
            .await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let (s, v) = call(&app, Method::GET, "/v1/tasks", None, None).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );
    let (s, _) = call(&app, Method::GET, "/v1/tasks", None, Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&app, Method::GET, "/v1/templates", None, Some("s3cret")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, Method::GET, "/health", None, None).await;
    assert_eq!(s, StatusCode::OK, "health stays open");
    h.shutdown().await;
}

/// Arbitrary request bodies, valid JSON and not, to the write endpoints: the answer is
/// always a 4xx (or success for a body that happens to be valid) with a JSON error, never a
/// 5xx or a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_request_bodies_get_clear_errors() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 1}))
        .await;
    let mut runner = TestRunner::deterministic();
    let field = proptest::prop_oneof![
        proptest::strategy::Just("namespace".to_string()),
        proptest::strategy::Just("name".to_string()),
        proptest::strategy::Just("version".to_string()),
        proptest::strategy::Just("context".to_string()),
        proptest::strategy::Just("idempotency_key".to_string()),
        proptest::strategy::Just("action".to_string()),
        proptest::strategy::Just("result".to_string()),
        "[a-z]{1,8}",
    ];
    let scalar = proptest::prop_oneof![
        proptest::strategy::Just(Value::Null),
        proptest::arbitrary::any::<bool>().prop_map(Value::Bool),
        proptest::arbitrary::any::<i32>().prop_map(|n| json!(n)),
        "\\PC{0,16}".prop_map(Value::String),
        proptest::strategy::Just(json!("diamond_workflow")),
        proptest::strategy::Just(json!("reset")),
        proptest::strategy::Just(json!({"value": 2})),
    ];
    let object = proptest::collection::btree_map(field, scalar, 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()).to_string());
    let bodies = proptest::prop_oneof![object, "\\PC{0,60}"];
    for i in 0..200 {
        let body = bodies.new_tree(&mut runner).unwrap().current();
        let (uri, method) = if i % 2 == 0 {
            ("/v1/tasks".to_string(), Method::POST)
        } else {
            (format!("/v1/tasks/{task}/steps/start"), Method::PATCH)
        };
        let req = Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        assert!(!status.is_server_error(), "{uri} {body:?} -> {status}");
        if status.is_client_error() {
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{uri} {body:?}: error body is not JSON"));
            assert!(
                !v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "{uri} {body:?} -> {v}"
            );
        }
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_detail_shows_steps_created_by_outcomes_with_their_batches() {
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let body = json!({"namespace": "imports", "name": "batched_import", "version": "1.0.0", "context": {"rows": 20, "batch_size": 10}});
    let (s, v) = call(&app, Method::POST, "/v1/tasks", Some(body), None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["task_uuid"].as_str().unwrap().to_string();
    let step_names = |v: &Value| {
        let mut n: Vec<String> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    let (_, v) = call(&app, Method::GET, &format!("/v1/tasks/{id}"), None, None).await;
    assert_eq!(step_names(&v), ["aggregate", "plan"]);
    let task = id.parse().unwrap();
    let outcome = json!({"batches": [{"batch_id": "000", "start_cursor": 0, "end_cursor": 10}, {"batch_id": "001", "start_cursor": 10, "end_cursor": 20}]});
    fake.run_task(
        "imports",
        task,
        Duration::from_secs(30),
        |name, _| match name {
            "plan" => FakeOutcome::Decided(json!({"total": 20}), outcome.clone()),
            _ => FakeOutcome::Success(json!(1)),
        },
    )
    .await;
    let (s, v) = call(&app, Method::GET, &format!("/v1/tasks/{id}"), None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        step_names(&v),
        [
            "aggregate",
            "plan",
            "process_batch_000",
            "process_batch_001"
        ]
    );
    let (s, v) = call(
        &app,
        Method::GET,
        &format!("/v1/tasks/{id}/steps"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let copy = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "process_batch_001")
        .unwrap();
    assert_eq!(copy["step_type"], json!("batch_worker"));
    assert_eq!(
        copy["inputs"]["batch"],
        json!({"batch_id": "001", "start_cursor": 10, "end_cursor": 20})
    );
    h.shutdown().await;
}

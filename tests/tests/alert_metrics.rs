//! The alert rules (config/prometheus/alerts.yml) and the Grafana board
//! (config/grafana/tasker.json) name only metrics Tasker really exports: an orchestrator, a
//! Rust worker and an FFI worker run in this process, do real work (a finished task, a
//! failed one, an FFI step polled and never completed), and every name the files use must
//! appear in the scraped /metrics. The rules' shape (for, severity, description) is checked
//! too.

use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tasker_tests::toml_value::Value as Toml;
use tasker_tests::{repo_root, Harness};
use tasker_worker::{Dispatch, WorkerCore, WorkerOptions};
use tower::ServiceExt;

/// Every `tasker_*` metric name in a PromQL expression.
fn names_in(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("tasker_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        into.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
}

/// The metric names the alert rules use, after checking each rule's shape.
fn alert_names() -> BTreeSet<String> {
    let path = repo_root().join("config/prometheus/alerts.yml");
    let text = std::fs::read_to_string(&path).expect("alerts.yml is readable");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("alerts.yml parses");
    let mut names = BTreeSet::new();
    let mut alerts = 0;
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let alert = rule["alert"].as_str().expect("every rule is an alert");
            alerts += 1;
            assert!(rule["for"].as_str().is_some(), "{alert} has no for:");
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("warning" | "critical")),
                "{alert}: severity {severity:?}"
            );
            let description = rule["annotations"]["description"]
                .as_str()
                .unwrap_or_default();
            assert!(
                !description.is_empty() && !description.contains('\n'),
                "{alert}: one-line description"
            );
            names_in(rule["expr"].as_str().expect("expr"), &mut names);
        }
    }
    assert!(alerts >= 10, "{alerts} alerts");
    names
}

fn board_names() -> BTreeSet<String> {
    let path = repo_root().join("config/grafana/tasker.json");
    let board: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("tasker.json is readable"))
            .expect("tasker.json parses");
    let mut names = BTreeSet::new();
    for panel in board["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            names_in(target["expr"].as_str().expect("expr"), &mut names);
        }
    }
    names
}

/// Series names in Prometheus text format (`name{labels} value` or `name value`).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

async fn scrape(app: &axum::Router) -> String {
    let resp = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), 8 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_board_use_is_exported() {
    let alerts = alert_names();
    let board = board_names();
    assert!(
        alerts.len() >= 12 && board.len() >= 15,
        "{alerts:?} {board:?}"
    );

    let h = Harness::orchestration_only(&[
        (
            "worker.mpsc_channels.ffi_dispatch.completion_timeout_ms",
            Toml::Integer(300),
        ),
        (
            "worker.mpsc_channels.ffi_dispatch.starvation_warning_threshold_ms",
            Toml::Integer(100),
        ),
        // A polled step's deadline is also its handler timeout plus the grace: both short,
        // so the completion timeout (300 ms) is the one that fires.
        (
            "worker.mpsc_channels.handler_dispatch.handler_timeout_ms",
            Toml::Integer(100),
        ),
        (
            "worker.mpsc_channels.ffi_dispatch.timeout_grace_ms",
            Toml::Integer(100),
        ),
    ])
    .await;
    let start = |namespaces: &[&str], dispatch| {
        WorkerCore::start(
            h.db.pool.clone(),
            &h.config,
            WorkerOptions {
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                dispatch,
                worker_id: None,
                callbacks: Vec::new(),
            },
        )
    };
    let rust = start(
        &["diamond_workflow", "error_scenarios"],
        Dispatch::Rust(tasker_worker_rust::example_registry()),
    )
    .await
    .expect("Rust worker starts");
    let ffi = start(&["linear_workflow"], Dispatch::Ffi)
        .await
        .expect("FFI worker starts");

    let done = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let failed = h
        .create("error_scenarios", "permanent_failure", json!({"value": 1}))
        .await;
    h.create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    assert_eq!(
        h.wait(done, Duration::from_secs(20)).await.state,
        "complete"
    );
    assert_eq!(h.wait(failed, Duration::from_secs(20)).await.state, "error");

    // An FFI step polled and never completed: the sweeper fails it after 300 ms.
    let channel = ffi.ffi.clone().expect("an FFI worker has a channel");
    let deadline = Instant::now() + Duration::from_secs(10);
    while channel.try_poll().is_none() {
        assert!(Instant::now() < deadline, "the FFI step never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let app = tasker_orchestration::api::router(h.core.clone());
    while !scrape(&app)
        .await
        .contains("tasker_ffi_completion_timeouts_total")
    {
        assert!(Instant::now() < deadline, "no FFI completion timeout");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tasker_orchestration::refresh_state_gauges(&h.db.pool)
        .await
        .unwrap();

    let text = scrape(&app).await;
    let exported = exported(&text);
    let missing: Vec<&String> = alerts
        .iter()
        .chain(&board)
        .filter(|n| !exported.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "named in alerts.yml or tasker.json but not exported: {missing:?}\n{text}"
    );
    assert!(
        text.contains("tasker_worker_handler_duration_seconds{quantile=\"0.99\"}"),
        "the board reads handler duration quantiles: {text}"
    );
    rust.shutdown_within(Duration::from_secs(5)).await;
    ffi.shutdown_within(Duration::from_secs(5)).await;
    h.shutdown().await;
}

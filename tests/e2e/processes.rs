//! `tasker server` and `tasker worker` as separate processes, talking only through Postgres.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{result, run_every_example, run_shared_sleep_load, tasker, wait_until_registered};
use tasker_tests::register_examples;
use tasker_tests::testing::TestDatabase;
use uuid::Uuid;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_through_server_and_rust_worker_processes() {
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let _server = tasker("examples", "server", &db, &["server"], &[]);
    let _worker = tasker("examples", "worker", &db, &["worker"], &[]);
    run_every_example(&db, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rust_workers_share_the_load_without_running_a_step_twice() {
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let _server = tasker("share", "server", &db, &["server"], &[]);
    let _w1 = tasker(
        "share",
        "worker1",
        &db,
        &["worker", "--worker-id", "rust-1"],
        &[],
    );
    let _w2 = tasker(
        "share",
        "worker2",
        &db,
        &["worker", "--worker-id", "rust-2"],
        &[],
    );
    // Both listen before the load arrives, or the first up may take it all.
    wait_until_registered(&db, &["rust-1".into(), "rust-2".into()], T).await;
    let workers = run_shared_sleep_load(&db, 40, T).await;
    assert_eq!(workers.len(), 2, "both workers ran steps: {workers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_create_wait_from_the_cli() {
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let _server = tasker("cli", "server", &db, &["server"], &[]);
    let _worker = tasker("cli", "worker", &db, &["worker"], &[]);
    let root = tasker_tests::repo_root();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tasker"))
        .args([
            "task",
            "create",
            "--namespace",
            "diamond_workflow",
            "--name",
            "diamond_math",
            "--version",
            "1.0.0",
            "--context",
            r#"{"value": 3}"#,
            "--wait",
            "--timeout",
            "60",
        ])
        .env("DATABASE_URL", &db.url)
        .env("TASKER_ENV", "test")
        .env("TASKER_CONFIG_DIR", root.join("config/tasker"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: Uuid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(result(&db, id, "join").await, json!(37));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_list_shows_live_workers_and_drops_killed_ones() {
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let _server = tasker("worker_list", "server", &db, &["server"], &[]);
    let _alive = tasker(
        "worker_list",
        "alive",
        &db,
        &["worker", "--worker-id", "alive"],
        &[],
    );
    let mut doomed = tasker(
        "worker_list",
        "doomed",
        &db,
        &["worker", "--worker-id", "doomed"],
        &[],
    );
    until_listed(&db, &["alive", "doomed"]).await;
    doomed.kill_hard();
    // Gone on its own: its session ended, so the next reaper after the grace period drops it.
    until_listed(&db, &["alive"]).await;
}

/// Runs `tasker worker list --json` until it lists exactly `want`.
async fn until_listed(db: &TestDatabase, want: &[&str]) {
    let root = tasker_tests::repo_root();
    let start = std::time::Instant::now();
    loop {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tasker"))
            .args(["worker", "list", "--json"])
            .env("DATABASE_URL", &db.url)
            .env("TASKER_ENV", "test")
            .env("TASKER_CONFIG_DIR", root.join("config/tasker"))
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let workers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut ids = Vec::new();
        for w in workers.as_array().unwrap() {
            assert!(w["pid"].as_i64().unwrap() > 0, "{w}");
            assert!(w["namespaces"].as_array().unwrap().len() > 1, "{w}");
            ids.push(w["worker_id"].as_str().unwrap().to_string());
        }
        ids.sort();
        if ids == want {
            return;
        }
        assert!(
            start.elapsed() < T,
            "workers listed: {ids:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

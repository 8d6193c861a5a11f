//! A poison step: its handler kills the worker process running it, on every attempt. The
//! lost claim counts as an attempt; after max_attempts the step fails for good (worker_lost)
//! and its task is blocked, instead of killing worker after worker forever.

mod support;

use std::time::{Duration, Instant};
use support::tasker;
use tasker_shared::models::{DeadLetter, StepRow, TemplateRegistry};
use tasker_shared::template::load_template_dirs;
use tasker_tests::testing::TestDatabase;
use tasker_tests::{repo_root, wait_for_task};

const WORKER_ENV: &[(&str, &str)] = &[
    ("TASKER_WORKER__LIVENESS_GRACE_MS", "500"),
    ("TASKER_WORKER__LIVENESS_INTERVAL_MS", "200"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_kills_its_worker_every_time_fails_after_max_attempts() {
    let db = TestDatabase::new().await;
    let registry = TemplateRegistry::new(db.pool.clone());
    let fixtures = repo_root().join("tests/fixtures/templates");
    for (_, t) in load_template_dirs(std::slice::from_ref(&fixtures)).unwrap() {
        registry.register(&t.for_environment("test")).await.unwrap();
    }
    let _server = tasker("poison", "server", &db, &["server"], WORKER_ENV);
    let task = support::create(&db, "poison", "kills_its_worker", serde_json::json!({})).await;

    // Worker after worker takes the step and dies of it; the test keeps one running.
    let started = Instant::now();
    let mut deaths = 0;
    let mut worker = None;
    let done = loop {
        let state: String =
            sqlx::query_scalar("SELECT state FROM tasker.tasks WHERE task_uuid = $1")
                .bind(task)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        if matches!(state.as_str(), "error" | "complete") {
            break state;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "task still {state} after {deaths} worker deaths"
        );
        let alive = worker.as_mut().is_some_and(support::Process::is_running);
        if !alive {
            if worker.take().is_some() {
                deaths += 1;
            }
            worker = Some(tasker(
                "poison",
                &format!("worker-{deaths}"),
                &db,
                &["worker", "-n", "poison"],
                &[
                    ("TASKER_TEMPLATE_PATH", fixtures.to_str().unwrap()),
                    WORKER_ENV[0],
                    WORKER_ENV[1],
                ],
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done, "error");
    let task_row = wait_for_task(&db.pool, task, Duration::from_secs(5)).await;
    assert_eq!(task_row.state, "error");

    let step = StepRow::find_by_name(&db.pool, task, "doomed")
        .await
        .unwrap()
        .expect("the step exists");
    assert_eq!((step.state.as_str(), step.attempts), ("error", 3));
    let error = step.last_error.clone().unwrap();
    assert_eq!(error["error_type"], "worker_lost", "{error}");
    assert_eq!(error["retryable"], false);
    assert!(
        (3..=4).contains(&deaths),
        "{deaths} workers died for a step of 3 attempts"
    );

    let dead = DeadLetter::list(&db.pool, 10, 0).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].task_uuid, dead[0].step_name.as_str()),
        (task, "doomed")
    );
    let audits: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.step_result_audits WHERE task_uuid = $1 AND error->>'error_type' = 'worker_lost'",
    )
    .bind(task)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(audits, 1, "the last, lost attempt is audited");
}

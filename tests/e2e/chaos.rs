//! Chaos with the default configuration: an orchestrator and two workers run 240 tasks
//! while workers are SIGKILLed and replaced four times and the orchestrator once. Every task
//! must complete with the right values, no step may be recorded twice, and the run must not
//! wait for a claim lease (60 s by default) or a message's visibility timeout (30 s): dead
//! workers are found through the worker registry and their steps released at once.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{create, tasker, wait_until_registered, Process};
use tasker_tests::testing::TestDatabase;
use tasker_tests::wait_for_task;

/// No environment directory exists by this name, so only the base configuration applies.
const DEFAULTS: &[(&str, &str)] = &[("TASKER_ENV", "chaos_defaults")];
const DIAMONDS: i64 = 200;
const SLEEPERS: usize = 40;
/// Far below the 60 s claim lease and above the run's expected ~10 s: only a recovery
/// that waited for a lease or a visibility timeout can exceed it.
const BUDGET: Duration = Duration::from_secs(40);

fn worker(db: &TestDatabase, n: usize) -> Process {
    let id = format!("chaos-w{n}");
    tasker("chaos", &id, db, &["worker", "--worker-id", &id], DEFAULTS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_and_orchestrator_recover_within_seconds() {
    let db = TestDatabase::new().await;
    // The workers register the templates, as the default environment renders them.
    let mut server = tasker("chaos", "server1", &db, &["server"], DEFAULTS);
    let mut workers = vec![worker(&db, 1), worker(&db, 2)];
    wait_until_registered(
        &db,
        &["chaos-w1".into(), "chaos-w2".into()],
        Duration::from_secs(60),
    )
    .await;

    let mut diamonds = Vec::new();
    for i in 0..DIAMONDS {
        diamonds.push(create(&db, "diamond_workflow", "diamond_math", json!({"value": i})).await);
    }
    let mut sleepers = Vec::new();
    for _ in 0..SLEEPERS {
        sleepers.push(
            create(
                &db,
                "sleep_workflow",
                "parallel_sleep",
                json!({"sleep_ms": 400}),
            )
            .await,
        );
    }

    let mut next = 3;
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let victim = round % 2;
        workers[victim].kill_hard();
        workers[victim] = worker(&db, next);
        next += 1;
        if round == 1 {
            server.kill_hard();
            server = tasker("chaos", "server2", &db, &["server"], DEFAULTS);
        }
    }

    for (i, t) in diamonds.iter().enumerate() {
        let task = wait_for_task(&db.pool, *t, BUDGET).await;
        assert_eq!(task.state, "complete", "diamond {i}");
        let v = i as i64;
        assert_eq!(
            support::result(&db, *t, "join").await,
            json!(v * v + 10 + v * v * 2),
            "diamond {i}"
        );
    }
    for t in &sleepers {
        assert_eq!(wait_for_task(&db.pool, *t, BUDGET).await.state, "complete");
    }
    let finished: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(completed_at) - min(created_at))::float8 FROM tasker.tasks",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    println!(
        "chaos: {} tasks, 4 worker kills and 1 orchestrator kill, all complete {finished:.1} s after the first was created",
        DIAMONDS as usize + SLEEPERS
    );
    assert!(
        finished < BUDGET.as_secs_f64(),
        "the run took {finished:.1} s: some recovery waited for a lease or a visibility timeout"
    );

    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT step_uuid FROM tasker.step_result_audits
                                WHERE success GROUP BY step_uuid HAVING count(*) > 1) d",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(twice, 0, "steps recorded twice");
    let released: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.workflow_step_transitions
          WHERE metadata->>'reason' = 'worker_lost'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        released > 0,
        "no step was released from a dead worker: the kills hit idle workers"
    );
    println!("chaos: {released} steps were released from dead workers and run again");
    // The killed workers dropped off the registry by themselves.
    wait_until_registered(
        &db,
        &[
            format!("chaos-w{}", next - 2),
            format!("chaos-w{}", next - 1),
        ],
        Duration::from_secs(15),
    )
    .await;
    drop(workers);
    drop(server);
}

//! Starting `tasker` processes for end-to-end tests. Every process talks to the others only
//! through the test's own database; each is killed when its handle drops.

// Each e2e test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tasker_tests::testing::TestDatabase;

pub struct Process {
    child: Child,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/e2e-logs")
        .join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `tasker <args>` against `db` with the test environment and extra variables.
pub fn tasker(
    test: &str,
    name: &str,
    db: &TestDatabase,
    args: &[&str],
    env: &[(&str, &str)],
) -> Process {
    tasker_via(&[], test, name, db, args, env)
}

/// The file a process started by [`tasker`] writes its output to.
pub fn log_path(test: &str, name: &str) -> PathBuf {
    log_dir(test).join(format!("{name}.log"))
}

/// As [`tasker`], run through `wrapper` (e.g. `ip netns exec NAME`): the wrapper must exec
/// the binary, so the handle's process is tasker's.
pub fn tasker_via(
    wrapper: &[&str],
    test: &str,
    name: &str,
    db: &TestDatabase,
    args: &[&str],
    env: &[(&str, &str)],
) -> Process {
    let root = tasker_tests::repo_root();
    let log = std::fs::File::create(log_path(test, name)).unwrap();
    let binary = env!("CARGO_BIN_EXE_tasker");
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(binary);
            cmd
        }
        None => Command::new(binary),
    };
    cmd.args(args)
        .env("DATABASE_URL", &db.url)
        .env("TASKER_ENV", "test")
        .env("TASKER_CONFIG_DIR", root.join("config/tasker"))
        .env("TASKER_TEMPLATE_PATH", root.join("config/tasks"))
        .env("TASKER_ORCHESTRATION__BIND_ADDRESS", "127.0.0.1:0")
        .env("TASKER_WORKER__BIND_ADDRESS", "")
        .env("TASKER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Process {
        child: cmd.spawn().expect("starting the tasker binary"),
    }
}

/// Settings that make crash recovery quick: messages reappear and leases expire in seconds.
pub const FAST_RECOVERY: &[(&str, &str)] = &[
    ("TASKER_QUEUES__VISIBILITY_TIMEOUT_SECONDS", "2"),
    ("TASKER_WORKER__CLAIM_LEASE_SECONDS", "2"),
    ("TASKER_WORKER__HEARTBEAT_INTERVAL_MS", "500"),
];

/// Creates a task of an example template (version 1.0.0) directly in the database.
pub async fn create(
    db: &TestDatabase,
    namespace: &str,
    name: &str,
    context: serde_json::Value,
) -> uuid::Uuid {
    let backoff = tasker_tests::config_for(db, &[]).backoff;
    tasker_orchestration::TaskInitializer::new(db.pool.clone(), backoff)
        .create_task(&tasker_orchestration::TaskRequest {
            namespace: namespace.into(),
            name: name.into(),
            version: "1.0.0".into(),
            context,
            idempotency_key: None,
            initiator: None,
            run_at: None,
        })
        .await
        .unwrap()
        .task_uuid
}

/// A step's recorded result (null when it has none).
pub async fn result(db: &TestDatabase, task: uuid::Uuid, step: &str) -> serde_json::Value {
    tasker_shared::models::StepRow::find_by_name(&db.pool, task, step)
        .await
        .unwrap()
        .unwrap()
        .results
        .unwrap_or_default()
}

/// Runs every example template through whatever workers are running and checks each final
/// value (the examples compute numbers, so the results are known).
pub async fn run_every_example(db: &TestDatabase, timeout: Duration) {
    use serde_json::json;
    use tasker_tests::wait_for_task;
    let linear = create(db, "linear_workflow", "linear_math", json!({"value": 6})).await;
    let diamond = create(db, "diamond_workflow", "diamond_math", json!({"value": 3})).await;
    let tree = create(db, "tree_workflow", "tree_math", json!({"value": 2})).await;
    let mixed = create(
        db,
        "mixed_dag_workflow",
        "mixed_dag_math",
        json!({"value": 5}),
    )
    .await;
    let order = create(
        db,
        "ecommerce",
        "order_fulfillment",
        json!({"order_id": 7, "items": [{"sku": "a", "quantity": 3, "price": 2.5}]}),
    )
    .await;
    let flaky = create(
        db,
        "error_scenarios",
        "retry_then_succeed",
        json!({"value": 9}),
    )
    .await;
    let doomed = create(db, "error_scenarios", "always_fails", json!({})).await;
    let permanent = create(
        db,
        "error_scenarios",
        "permanent_failure",
        json!({"value": 1}),
    )
    .await;
    let hung = create(db, "error_scenarios", "handler_timeout", json!({})).await;
    let approval = create(
        db,
        "approvals",
        "approval_routing",
        json!({"amount": 50000}),
    )
    .await;
    let import = create(
        db,
        "imports",
        "batched_import",
        json!({"rows": 250, "batch_size": 100}),
    )
    .await;
    for t in [linear, diamond, tree, mixed, order, flaky, approval, import] {
        assert_eq!(wait_for_task(&db.pool, t, timeout).await.state, "complete");
    }
    for t in [doomed, permanent, hung] {
        assert_eq!(wait_for_task(&db.pool, t, timeout).await.state, "error");
    }
    assert_eq!(result(db, linear, "minus_one").await, json!(575));
    assert_eq!(result(db, diamond, "join").await, json!(37));
    assert_eq!(result(db, tree, "merge").await, json!(115));
    assert_eq!(result(db, mixed, "finalize").await, json!(266));
    assert_eq!(
        result(db, approval, "finalize").await,
        json!({"approved": true, "approvals": ["manager", "finance"], "route": "manager_and_finance"})
    );
    assert_eq!(
        result(db, import, "aggregate").await,
        json!({"batches": 3, "count": 250, "sum": 31125, "batch_ids": ["000", "001", "002"]})
    );
    assert_eq!(
        result(db, import, "process_batch_001").await,
        json!({"batch_id": "001", "count": 100, "sum": (100..200).sum::<u64>()})
    );
    assert_eq!(
        result(db, order, "validate_order").await["total"],
        json!(7.5)
    );
    assert_eq!(
        result(db, order, "charge_payment").await,
        json!({"charge_id": "ch_7", "amount": 7.5, "currency": "USD"})
    );
    assert_eq!(
        result(db, order, "ship_order").await["tracking_number"],
        json!("TRK00000007")
    );
    assert_eq!(result(db, flaky, "after_flaky").await, json!(10));
    let steps = |t| async move {
        tasker_shared::models::StepRow::for_task(&db.pool, t)
            .await
            .unwrap()
    };
    let doomed_step = &steps(doomed).await[0];
    assert_eq!(
        (
            doomed_step.attempts,
            doomed_step.last_error.as_ref().unwrap()["error_type"].clone()
        ),
        (3, json!("always_fails"))
    );
    let fail_fast = steps(permanent)
        .await
        .into_iter()
        .find(|s| s.name == "fail_fast")
        .unwrap();
    let err = fail_fast.last_error.unwrap();
    assert_eq!(
        (
            err["error_type"].clone(),
            err["retryable"].clone(),
            fail_fast.attempts
        ),
        (json!("validation_error"), json!(false), 1)
    );
    let hung_step = &steps(hung).await[0];
    assert_eq!(
        hung_step.last_error.as_ref().unwrap()["error_type"],
        json!("handler_timeout")
    );
}

/// Submits `count` parallel_sleep tasks (4 steps each), waits for all of them, checks every
/// step's result was recorded exactly once, and returns how many steps each worker ran.
pub async fn run_shared_sleep_load(
    db: &TestDatabase,
    count: usize,
    timeout: Duration,
) -> Vec<(String, i64)> {
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tasks.push(
            create(
                db,
                "sleep_workflow",
                "parallel_sleep",
                serde_json::json!({"sleep_ms": 20 + i % 5}),
            )
            .await,
        );
    }
    for t in tasks {
        assert_eq!(
            tasker_tests::wait_for_task(&db.pool, t, timeout)
                .await
                .state,
            "complete"
        );
    }
    let steps = (count * 4) as i64;
    let (runs, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT step_uuid) FROM tasker.step_result_audits")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (runs, distinct),
        (steps, steps),
        "each step recorded exactly once"
    );
    let attempts: i32 = sqlx::query_scalar("SELECT max(attempts) FROM tasker.workflow_steps")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "no step ran twice");
    sqlx::query_as(
        "SELECT worker_id, count(*) FROM tasker.step_result_audits GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn registered(db: &TestDatabase) -> Vec<String> {
    sqlx::query_scalar("SELECT worker_id FROM tasker.workers ORDER BY worker_id")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// Waits until the worker registry lists exactly `expected` (sorted), or fails the test.
pub async fn wait_until_registered(db: &TestDatabase, expected: &[String], timeout: Duration) {
    let start = Instant::now();
    loop {
        let now = registered(db).await;
        if now == expected {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "registry shows {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether this machine's Postgres can be stopped and started by the tests.
pub fn can_control_postgres() -> bool {
    Command::new("pg_ctlcluster").arg("--help").output().is_ok()
}

/// `pg_ctlcluster <newest version> main <action>` (stop, start, restart) on the machine's
/// Postgres. Only tests alone in their binary call it: it pulls the database from under
/// every connection.
pub fn pg_ctlcluster(action: &str) -> bool {
    let Ok(versions) = std::fs::read_dir("/etc/postgresql") else {
        return false;
    };
    let Some(version) = versions
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .max()
    else {
        return false;
    };
    Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

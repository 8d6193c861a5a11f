//! Test harness shared by the workspace-level tests: a private database with the example
//! templates registered, an orchestrator and a worker in this process, and helpers to
//! create tasks and wait for them.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tasker_orchestration::{OrchestrationCore, OrchestrationHandle, TaskRequest};
use tasker_shared::config::ConfigLoader;
use tasker_shared::models::{StepRow, TaskRow, TemplateRegistry};
use tasker_shared::template::load_template_dirs;
use tasker_shared::testing::TestDatabase;
use tasker_shared::TaskerConfig;
use tasker_worker::{Dispatch, WorkerCore, WorkerHandle, WorkerOptions};
use uuid::Uuid;

pub use tasker_shared::testing;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every namespace of the example templates.
pub const EXAMPLE_NAMESPACES: &[&str] = &[
    "linear_workflow",
    "diamond_workflow",
    "tree_workflow",
    "mixed_dag_workflow",
    "ecommerce",
    "error_scenarios",
    "sleep_workflow",
    "approvals",
    "imports",
];

/// The test environment's configuration pointed at `db`, with overrides.
pub fn config_for(db: &TestDatabase, overrides: &[(&str, toml_value::Value)]) -> TaskerConfig {
    let mut loader = ConfigLoader::isolated(Some(&repo_root().join("config/tasker")), "test")
        .set("database.url", db.url.clone());
    for (k, v) in overrides {
        loader = loader.set(k, v.clone());
    }
    loader.load().expect("test configuration loads")
}

/// Re-exported so tests can build override values without depending on `toml` directly.
pub mod toml_value {
    pub use toml::Value;
}

pub async fn register_examples(db: &TestDatabase) {
    let registry = TemplateRegistry::new(db.pool.clone());
    for (_, t) in load_template_dirs(&[repo_root().join("config/tasks")]).expect("examples load") {
        registry
            .register(&t.for_environment("test"))
            .await
            .expect("examples register");
    }
}

/// A database with the examples registered, an orchestrator and (optionally) a worker.
pub struct Harness {
    pub db: TestDatabase,
    pub config: TaskerConfig,
    pub core: OrchestrationCore,
    pub orchestrator: Option<OrchestrationHandle>,
    pub worker: Option<WorkerHandle>,
}

impl Harness {
    /// Orchestration only (the worker side is left to the test).
    pub async fn orchestration_only(overrides: &[(&str, toml_value::Value)]) -> Self {
        // The worker's per-namespace listeners each hold a pool connection.
        let db = TestDatabase::with_max_connections(20).await;
        register_examples(&db).await;
        let config = config_for(&db, overrides);
        let core = OrchestrationCore::new(db.pool.clone(), config.clone()).await;
        let orchestrator = Some(core.start());
        Self {
            db,
            config,
            core,
            orchestrator,
            worker: None,
        }
    }

    /// Orchestration plus a Rust worker running the example handlers on every example namespace.
    pub async fn with_rust_worker(overrides: &[(&str, toml_value::Value)]) -> Self {
        let mut h = Self::orchestration_only(overrides).await;
        h.worker = Some(
            h.start_worker(Dispatch::Rust(tasker_worker_rust::example_registry()))
                .await,
        );
        h
    }

    pub async fn start_worker(&self, dispatch: Dispatch) -> WorkerHandle {
        WorkerCore::start(
            self.db.pool.clone(),
            &self.config,
            WorkerOptions {
                namespaces: EXAMPLE_NAMESPACES.iter().map(|s| s.to_string()).collect(),
                dispatch,
                worker_id: None,
                callbacks: Vec::new(),
            },
        )
        .await
        .expect("worker starts")
    }

    pub async fn create(&self, namespace: &str, name: &str, context: serde_json::Value) -> Uuid {
        self.core
            .initializer
            .create_task(&TaskRequest {
                namespace: namespace.into(),
                name: name.into(),
                version: "1.0.0".into(),
                context,
                idempotency_key: None,
                initiator: Some("test".into()),
                run_at: None,
            })
            .await
            .expect("task created")
            .task_uuid
    }

    /// Waits until the task is in a terminal state, or panics after `timeout`.
    pub async fn wait(&self, task: Uuid, timeout: Duration) -> TaskRow {
        wait_for_task(&self.db.pool, task, timeout).await
    }

    pub async fn steps(&self, task: Uuid) -> Vec<StepRow> {
        StepRow::for_task(&self.db.pool, task).await.unwrap()
    }

    pub async fn result_of(&self, task: Uuid, step: &str) -> serde_json::Value {
        StepRow::find_by_name(&self.db.pool, task, step)
            .await
            .unwrap()
            .and_then(|s| s.results)
            .unwrap_or(serde_json::Value::Null)
    }

    pub async fn shutdown(mut self) {
        if let Some(w) = self.worker.take() {
            w.shutdown_within(Duration::from_secs(5)).await;
        }
        if let Some(o) = self.orchestrator.take() {
            o.shutdown(Duration::from_secs(5)).await;
        }
    }
}

pub async fn wait_for_task(pool: &sqlx::PgPool, task: Uuid, timeout: Duration) -> TaskRow {
    let start = Instant::now();
    loop {
        let row = TaskRow::get(pool, task).await.expect("task exists");
        if row.task_state().unwrap().is_terminal() {
            return row;
        }
        if start.elapsed() > timeout {
            let steps = StepRow::for_task(pool, task).await.unwrap();
            let summary: Vec<String> = steps
                .iter()
                .map(|s| format!("{}={}({})", s.name, s.state, s.attempts))
                .collect();
            panic!(
                "task {task} still {} after {timeout:?}: {}",
                row.state,
                summary.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stand-in for a worker, for orchestration tests: reads the worker queue, claims steps
/// and records whatever result the test chooses, through the same SQL a real worker uses.
pub struct FakeWorker {
    pub pool: sqlx::PgPool,
    pub queues: tasker_shared::queue::QueueClient,
    pub worker_id: String,
}

/// What the fake worker reports for one step attempt.
#[derive(Debug, Clone)]
pub enum FakeOutcome {
    Success(serde_json::Value),
    /// A success carrying a decision's or batch's outcome (`{"next_steps": [...]}`,
    /// `{"batches": [...]}`, or anything else to see it refused).
    Decided(serde_json::Value, serde_json::Value),
    Failure {
        retryable: bool,
        retry_after_ms: Option<u64>,
    },
    /// Leave the step claimed and unrecorded.
    Hold,
}

impl FakeWorker {
    pub async fn new(pool: sqlx::PgPool) -> Self {
        let queues = tasker_shared::queue::QueueClient::new(pool.clone()).await;
        Self {
            pool,
            queues,
            worker_id: "fake-worker".into(),
        }
    }

    /// Handles every message currently visible on `namespace`'s queue; returns how many steps
    /// it recorded. `decide` gets the step name and attempt number.
    pub async fn drain(&self, namespace: &str, decide: impl Fn(&str, i32) -> FakeOutcome) -> usize {
        let queue = tasker_shared::queue::worker_queue(namespace).unwrap();
        self.queues.ensure_queue(&queue).await.unwrap();
        let messages = self.queues.read(&queue, 30, 100).await.unwrap();
        let mut recorded = 0;
        for m in messages {
            let msg = tasker_shared::messages::StepMessage::decode(&m.message).unwrap();
            let claimed: Option<(String, Option<i32>)> =
                sqlx::query_as("SELECT outcome, attempt FROM tasker.claim_steps($1, $2, 60)")
                    .bind(vec![msg.step_uuid])
                    .bind(&self.worker_id)
                    .fetch_optional(&self.pool)
                    .await
                    .unwrap();
            let Some(("claimed", Some(attempt))) = claimed.as_ref().map(|(o, a)| (o.as_str(), *a))
            else {
                self.queues
                    .delete(&queue, m.msg_id, &self.pool)
                    .await
                    .unwrap();
                continue;
            };
            let (success, result, error, outcome) = match decide(&msg.step_name, attempt) {
                FakeOutcome::Hold => continue,
                FakeOutcome::Success(v) => (true, v, None, None),
                FakeOutcome::Decided(v, outcome) => (true, v, None, Some(outcome)),
                FakeOutcome::Failure {
                    retryable,
                    retry_after_ms,
                } => (
                    false,
                    serde_json::Value::Null,
                    Some(serde_json::json!({
                        "message": format!("fake failure of {} on attempt {attempt}", msg.step_name),
                        "error_type": "fake_error", "retryable": retryable, "retry_after_ms": retry_after_ms,
                    })),
                    None,
                ),
            };
            let ok: bool = sqlx::query_scalar(
                "SELECT tasker.record_step_result($1, $2, $3, $4, $5, $6, 1, '{}', $7, $8, $9)",
            )
            .bind(msg.step_uuid)
            .bind(attempt)
            .bind(&self.worker_id)
            .bind(success)
            .bind(result)
            .bind(error)
            .bind(queue.as_str())
            .bind(m.msg_id)
            .bind(outcome)
            .fetch_one(&self.pool)
            .await
            .unwrap();
            assert!(ok, "the fake worker holds the claim it just made");
            recorded += 1;
        }
        recorded
    }

    /// Drains until the task ends or `timeout` passes.
    pub async fn run_task(
        &self,
        namespace: &str,
        task: Uuid,
        timeout: Duration,
        decide: impl Fn(&str, i32) -> FakeOutcome,
    ) -> TaskRow {
        let start = Instant::now();
        loop {
            self.drain(namespace, &decide).await;
            let row = TaskRow::get(&self.pool, task).await.unwrap();
            if row.task_state().unwrap().is_terminal() {
                return row;
            }
            assert!(
                start.elapsed() < timeout,
                "task {task} still {} after {timeout:?}",
                row.state
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Waits until the orchestrator has applied every result recorded for the task's steps. A
/// result recorded while the orchestrator runs may already be in its processor's hands (so a
/// manual drain finds nothing), and a task can end before all its results are applied: the
/// fake worker records each result on its own, and the first failure applied blocks the task
/// while results recorded beside it wait for a later batch.
pub async fn wait_for_results_applied(pool: &sqlx::PgPool, task: Uuid, timeout: Duration) {
    let start = Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasker.workflow_steps
              WHERE task_uuid = $1
                AND state IN ('enqueued_for_orchestration', 'enqueued_as_error_for_orchestration')",
        )
        .bind(task)
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting == 0 {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{waiting} results of task {task} never applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `count` steps of the task are in `state`.
pub async fn wait_for_steps_in(
    pool: &sqlx::PgPool,
    task: Uuid,
    state: &str,
    count: usize,
    timeout: Duration,
) {
    let start = Instant::now();
    loop {
        let steps = StepRow::for_task(pool, task).await.unwrap();
        if steps.iter().filter(|s| s.state == state).count() >= count {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "task {task}: fewer than {count} steps {state}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One request to a router, as a client on this machine sends it (JSON body, loopback
/// Host): the status and the body as text.
pub async fn http(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<String>,
) -> (u16, String) {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(body.map_or_else(axum::body::Body::empty, axum::body::Body::from))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 8 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

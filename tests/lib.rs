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
        let db = TestDatabase::new().await;
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

//! The Ruby worker as a process beside `tasker server` and Rust workers, all talking only
//! through Postgres.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;
use support::{run_every_example, run_shared_sleep_load, tasker};
use tasker_tests::testing::TestDatabase;
use tasker_tests::{register_examples, repo_root};

const T: Duration = Duration::from_secs(90);

/// The extension is built by `rake compile` (bin/test does it first); build it here if a
/// developer runs this test alone.
fn ensure_extension() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let so = repo_root().join("workers/ruby/lib/tasker_core/tasker_core.so");
        if !so.exists() {
            let status = Command::new("rake")
                .arg("-f")
                .arg(repo_root().join("Rakefile"))
                .arg("compile")
                .status()
                .expect("running rake compile");
            assert!(status.success(), "rake compile failed");
        }
    });
}

struct RubyWorker(Child);

impl Drop for RubyWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ruby_worker(test: &str, db: &TestDatabase, namespaces: &str) -> RubyWorker {
    ensure_extension();
    let root = repo_root();
    let dir = root.join("target/e2e-logs").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(dir.join("ruby-worker.log")).unwrap();
    let child = Command::new("rake")
        .arg("-f")
        .arg(root.join("Rakefile"))
        .arg("tasker:worker")
        .env("DATABASE_URL", &db.url)
        .env("TASKER_ENV", "test")
        .env("TASKER_CONFIG_DIR", root.join("config/tasker"))
        .env("TASKER_TEMPLATE_PATH", root.join("config/tasks"))
        .env("HANDLERS", root.join("workers/ruby/examples/handlers.rb"))
        .env("NAMESPACES", namespaces)
        .env("CONCURRENCY", "10")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting the Ruby worker");
    RubyWorker(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_through_the_ruby_worker_process() {
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let _server = tasker("ruby_examples", "server", &db, &["server"], &[]);
    let _worker = ruby_worker(
        "ruby_examples",
        &db,
        tasker_tests::EXAMPLE_NAMESPACES.join(",").as_str(),
    );
    run_every_example(&db, T).await;
    let workers: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT worker_id FROM tasker.step_result_audits")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        workers.len(),
        1,
        "one Ruby worker ran every step: {workers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_ruby_workers_share_the_load_without_running_a_step_twice() {
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let _server = tasker("mixed_workers", "server", &db, &["server"], &[]);
    let _r1 = tasker(
        "mixed_workers",
        "rust1",
        &db,
        &["worker", "--worker-id", "rust-1", "-n", "sleep_workflow"],
        &[],
    );
    let _r2 = tasker(
        "mixed_workers",
        "rust2",
        &db,
        &["worker", "--worker-id", "rust-2", "-n", "sleep_workflow"],
        &[],
    );
    let _ruby = ruby_worker("mixed_workers", &db, "sleep_workflow");
    let by_worker = run_shared_sleep_load(&db, 60, T).await;
    assert_eq!(
        by_worker.len(),
        3,
        "both Rust workers and the Ruby worker ran steps: {by_worker:?}"
    );
}

//! End-to-end benchmark: `tasker server` plus one worker process against the local Postgres,
//! measured from outside through the database. Prints a Markdown table.
//!
//! bin/bench [--worker rust|ruby|python|both|all] [--tasks N] [--embedded-tasks N] [--history N]
//! (`both`: Rust and Ruby; `all`: Rust, Ruby and Python); bin/bench --floor: the same writes
//! in plain SQL, no engine, and the engine's own statements from pgbench, no worker.

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::builder::TypedValueParser;
use clap::Parser;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tasker_orchestration::{TaskInitializer, TaskRequest};
use tasker_shared::config::ConfigLoader;
use tasker_shared::database;
use tasker_shared::models::TemplateRegistry;
use tasker_shared::task_waiter::TaskWaiter;
use tasker_shared::template::{parse_template, TaskTemplate};
use uuid::Uuid;

/// Polling the many tasks of the throughput run (their end time comes from the database).
const SLOW_POLL: Duration = Duration::from_millis(50);
/// How often a task waited for one by one is read when no notification came (the task's
/// finishing recording notifies its waiters, so this is only a fallback).
const WAITER_FALLBACK_POLL: Duration = Duration::from_millis(500);
/// Batch workers one batchable step creates in the fan-out run.
const BATCH_WORKERS: usize = 1000;

#[path = "../child.rs"]
mod child;
use child::ManagedChild;
#[path = "../bench/floor.rs"]
mod floor;
#[path = "../bench/history.rs"]
mod history;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "End-to-end Tasker benchmark against the local Postgres")]
struct Args {
    /// Which worker to measure: both = rust and ruby, all = rust, ruby and python.
    #[arg(long, default_value = "rust", value_parser = ["rust", "ruby", "python", "both", "all"])]
    worker: String,
    /// Tasks of 10 no-op steps for the throughput run. The default makes it last about as
    /// long as pgbench's 10 s: a run of a second or so weighs its start and its last tasks'
    /// tail more than the steady state the ratio compares.
    #[arg(long, default_value_t = 10000, value_parser = run_size())]
    tasks: usize,
    /// Sequential linear tasks for the latency run.
    #[arg(long, default_value_t = 60, value_parser = run_size())]
    latency_samples: usize,
    /// Tasks of 10 no-op steps the embedded-orchestration Ruby process creates one by one
    /// (with --worker ruby, both or all). The default makes it last about as long as
    /// pgbench's 10 s, for the same reason as --tasks: its first second (new connections
    /// planning their statements, the orchestrator's start-up sweeps) is its slowest.
    #[arg(long, default_value_t = 3000, value_parser = run_size())]
    embedded_tasks: usize,
    /// Measure on a fresh database, then again after this many finished steps of history
    /// (loaded through the worker measured), then again while the orchestrator's retention,
    /// every second, removes that history as fast as it was loaded, then the tables' sizes
    /// around a retention run that removes the rest.
    #[arg(long)]
    history: Option<usize>,
    /// Only the floor: a no-op step's rows in the engine's tables written by plain SQL from
    /// pgbench (no engine running), and the engine's own statements from pgbench (no
    /// worker), three rounds beside pgbench -N.
    #[arg(long, conflicts_with_all = ["history", "worker"])]
    floor: bool,
    /// Server URL without a database name.
    #[arg(
        long,
        env = "TASKER_BENCH_SERVER",
        default_value = "postgresql://postgres@127.0.0.1:5432"
    )]
    server: String,
}

/// A run's count of tasks or samples: at least one (an empty run has nothing to time), at
/// most a million (a larger one would allocate before it measured anything).
fn run_size() -> impl TypedValueParser<Value = usize> {
    clap::value_parser!(u64)
        .range(1..=1_000_000)
        .map(|n| n as usize)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn templates() -> Vec<TaskTemplate> {
    let fanout: String = (0..10)
        .map(|i| format!("  - {{ name: noop_{i}, handler: {{ callable: Examples::Noop }} }}\n"))
        .collect();
    let linear: String = (0..4)
        .map(|i| {
            let deps = if i == 0 {
                String::new()
            } else {
                format!(", dependencies: [noop_{}]", i - 1)
            };
            format!("  - {{ name: noop_{i}, handler: {{ callable: Examples::Noop }}{deps} }}\n")
        })
        .collect();
    let sleeps: String = (0..100)
        .map(|i| format!("  - {{ name: sleep_{i}, handler: {{ callable: Examples::Sleep, initialization: {{ ms: 50 }} }} }}\n"))
        .collect();
    // A batchable step fanning out to BATCH_WORKERS no-op copies and a convergence over them.
    let batch = format!(
        "  - {{ name: plan, type: batchable, batch: {{ worker: work, max_workers: {BATCH_WORKERS} }}, handler: {{ callable: Import::Plan }} }}\n\
         \x20 - {{ name: work, type: batch_worker, dependencies: [plan], handler: {{ callable: Examples::Noop }} }}\n\
         \x20 - {{ name: gather, type: deferred_convergence, dependencies: [work], handler: {{ callable: Examples::Noop }} }}\n"
    );
    [
        ("noop_fanout", fanout),
        ("noop_linear", linear),
        ("sleep_100", sleeps),
        ("noop_batch", batch),
    ]
    .into_iter()
    .map(|(name, steps)| {
        let text = format!("name: {name}\nnamespace: bench\nversion: 1.0.0\nsteps:\n{steps}");
        parse_template(&text, Path::new(name)).expect("bench templates are valid")
    })
    .collect()
}

struct Bench {
    db_url: String,
    pool: sqlx::PgPool,
    initializer: TaskInitializer,
    /// Woken by the task-finished notification rather than by polling: a poll every few
    /// milliseconds took CPU from the latency run it measured.
    waiter: TaskWaiter,
    template_dir: PathBuf,
}

impl Bench {
    async fn create(&self, name: &str) -> anyhow::Result<Uuid> {
        self.create_with(name, json!({})).await
    }

    async fn create_with(&self, name: &str, context: serde_json::Value) -> anyhow::Result<Uuid> {
        Ok(self
            .initializer
            .create_task(&TaskRequest {
                namespace: "bench".into(),
                name: name.into(),
                version: "1.0.0".into(),
                context,
                idempotency_key: None,
                initiator: Some("bench".into()),
                run_at: None,
            })
            .await?
            .task_uuid)
    }

    /// Waits for one task, woken when it finishes, and returns when it completed, by the
    /// database's clock.
    async fn wait_one(&self, task: Uuid, timeout: Duration) -> anyhow::Result<DateTime<Utc>> {
        match self.waiter.wait(task, timeout).await? {
            Some(state) if state.is_terminal() => {
                self.wait_all(&[task], SLOW_POLL, Duration::ZERO).await
            }
            Some(state) => bail!("benchmark task {task} still {state:?} after {timeout:?}"),
            None => bail!("benchmark task {task} not found"),
        }
    }

    /// Waits until every task is finished and returns when the last one completed, by the
    /// database's clock. The end time comes from `completed_at`, so polling can be gentle:
    /// the harness should not take CPU from the system it measures. Each poll reads only the
    /// tasks still open at the last one: reading all of a 20,000-task run every 50 ms took
    /// Postgres 30-50 ms a poll while the run's last steps were being recorded.
    async fn wait_all(
        &self,
        tasks: &[Uuid],
        poll: Duration,
        timeout: Duration,
    ) -> anyhow::Result<DateTime<Utc>> {
        let deadline = Instant::now() + timeout;
        let mut open = tasks.to_vec();
        loop {
            open = sqlx::query_scalar(
                "SELECT task_uuid FROM tasker.tasks
                  WHERE task_uuid = ANY($1) AND state NOT IN ('complete', 'error', 'cancelled')",
            )
            .bind(&open)
            .fetch_all(&self.pool)
            .await?;
            if open.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} benchmark tasks still open after {timeout:?}",
                    open.len()
                );
            }
            tokio::time::sleep(poll).await;
        }
        let (failed, last): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state IN ('error', 'cancelled')), max(completed_at)
               FROM tasker.tasks WHERE task_uuid = ANY($1)",
        )
        .bind(tasks)
        .fetch_one(&self.pool)
        .await?;
        if failed > 0 {
            bail!("{failed} benchmark tasks did not complete");
        }
        last.context("finished tasks without completed_at")
    }

    /// Transaction ids assigned so far (by the whole server): one per transaction that wrote.
    /// Read, unlike pg_stat_database's commit counter, which backends report at most once a
    /// second and so undercounts a run of a few seconds.
    async fn write_transactions(&self) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Steps in the bench database, of every run so far.
    async fn step_count(&self) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM tasker.workflow_steps")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Row versions written so far (inserted, updated or deleted) in the engine's tables and
    /// queues, once every backend has reported its counts: a busy backend reports at most
    /// once a second and an idle one within ten, so this waits until the sum has not moved
    /// for eleven seconds (thirty at most).
    async fn rows_written(&self) -> anyhow::Result<i64> {
        let read = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint
                   FROM pg_stat_user_tables WHERE schemaname IN ('tasker', 'pgmq')",
            )
            .fetch_one(&self.pool)
            .await
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = read().await?;
        let mut still_since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = read().await?;
            if now != last {
                last = now;
                still_since = Instant::now();
            }
            if still_since.elapsed() >= Duration::from_secs(11) || Instant::now() > deadline {
                return Ok(now);
            }
        }
    }

    /// Starts the next measurement right after a checkpoint, as pgbench's own runs start
    /// (see [`pgbench_tps`]). A throughput run writes about 300 MB of WAL, and Postgres
    /// checkpoints every ~530 MB here: without this, one run in two or three paid for a
    /// checkpoint the previous runs had brought on (spread over 47 s, with full-page
    /// images after it), and which run that was depended on the order of the runs. Needs
    /// a superuser or `pg_checkpoint`; without one the runs go on unaligned, as before.
    async fn checkpoint(&self) {
        if let Err(e) = sqlx::query("CHECKPOINT").execute(&self.pool).await {
            eprintln!("(no CHECKPOINT before this measurement: {e})");
        }
    }

    /// Bytes of WAL written so far (by the whole server).
    async fn wal_bytes(&self) -> anyhow::Result<f64> {
        Ok(
            sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    fn spawn(&self, args: &[&str], extra_env: &[(&str, &str)]) -> anyhow::Result<ManagedChild> {
        let tasker = std::env::current_exe()?.with_file_name("tasker");
        let mut cmd = Command::new(tasker);
        cmd.args(args)
            .env("DATABASE_URL", &self.db_url)
            .env("TASKER_ENV", "development")
            .env("TASKER_CONFIG_DIR", repo_root().join("config/tasker"))
            .env("TASKER_TEMPLATE_PATH", &self.template_dir)
            .env("TASKER_ORCHESTRATION__BIND_ADDRESS", "127.0.0.1:0")
            .env("TASKER_WORKER__BIND_ADDRESS", "")
            .env("TASKER_LOG", "warn")
            .stdin(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Ok(ManagedChild(cmd.spawn().context("starting tasker")?))
    }

    fn spawn_worker(&self, kind: &str) -> anyhow::Result<ManagedChild> {
        match kind {
            "rust" => self.spawn(&["worker", "--namespace", "bench"], &[]),
            "python" => {
                // The venv bin/setup makes; bin/bench installs the extension into it.
                let child = Command::new(repo_root().join(".venv/bin/python"))
                    .args(["-m", "tasker_core", "worker", "--namespace", "bench"])
                    .args(["--import", "tasker_examples.bench", "--concurrency", "10"])
                    .env("PYTHONPATH", repo_root().join("workers/python/examples"))
                    .env("DATABASE_URL", &self.db_url)
                    .env("TASKER_ENV", "development")
                    .env("TASKER_CONFIG_DIR", repo_root().join("config/tasker"))
                    .env("TASKER_TEMPLATE_PATH", &self.template_dir)
                    .stdin(Stdio::null())
                    .spawn()
                    .context("starting the Python worker (python -m tasker_core worker)")?;
                Ok(ManagedChild(child))
            }
            _ => {
                let child = Command::new("rake")
                    .arg("-f")
                    .arg(repo_root().join("Rakefile"))
                    .arg("tasker:worker")
                    .env("DATABASE_URL", &self.db_url)
                    .env("TASKER_ENV", "development")
                    .env("TASKER_CONFIG_DIR", repo_root().join("config/tasker"))
                    .env("TASKER_TEMPLATE_PATH", &self.template_dir)
                    .env("NAMESPACES", "bench")
                    .env(
                        "HANDLERS",
                        repo_root().join("workers/ruby/examples/handlers.rb"),
                    )
                    .env("CONCURRENCY", "10")
                    .stdin(Stdio::null())
                    .spawn()
                    .context("starting the Ruby worker (rake tasker:worker)")?;
                Ok(ManagedChild(child))
            }
        }
    }
}

/// CPU seconds used so far by every local `postgres` process, exited backends included (they
/// are in the postmaster's children's times). `None` where /proc cannot tell (a remote server).
fn postgres_cpu_seconds() -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut total = 0u64;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime, stime, cutime, cstime are fields 14-17 of stat, 12-15 after the comm.
        let times: u64 = fields
            .get(11..15)
            .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
            .unwrap_or(0);
        total += times;
        found = true;
    }
    found.then(|| total as f64 / ticks)
}

struct Row {
    worker: String,
    throughput: f64,
    write_transactions_per_step: f64,
    /// Postgres CPU milliseconds per step in the throughput run (NaN when not measurable).
    pg_cpu_ms_per_step: f64,
    wal_bytes_per_step: f64,
    /// Row versions written (inserted, updated, deleted; queue messages included) per step.
    rows_per_step: f64,
    p50_ms: f64,
    p95_ms: f64,
    parallel_s: f64,
    batch_steps_per_s: f64,
}

async fn measure(bench: &Bench, kind: &str, args: &Args) -> anyhow::Result<Row> {
    let _worker = bench.spawn_worker(kind)?;
    // Warm up: the worker is up once a task completes.
    let warm: Vec<Uuid> =
        futures::future::try_join_all((0..20).map(|_| bench.create("noop_fanout"))).await?;
    bench
        .wait_all(&warm, SLOW_POLL, Duration::from_secs(120))
        .await?;

    bench.checkpoint().await;
    let rows_before = bench.rows_written().await?;
    let before = bench.write_transactions().await?;
    let wal_before = bench.wal_bytes().await?;
    let cpu_before = postgres_cpu_seconds();
    let start = Utc::now();
    let mut tasks = Vec::with_capacity(args.tasks);
    for chunk in (0..args.tasks).collect::<Vec<_>>().chunks(20) {
        tasks.extend(
            futures::future::try_join_all(chunk.iter().map(|_| bench.create("noop_fanout")))
                .await?,
        );
    }
    let end = bench
        .wait_all(&tasks, SLOW_POLL, Duration::from_secs(600))
        .await?;
    let elapsed = seconds(end - start);
    let steps = (args.tasks * 10) as f64;
    let writes = (bench.write_transactions().await? - before) as f64;
    let wal = bench.wal_bytes().await? - wal_before;
    let pg_cpu = match (cpu_before, postgres_cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let rows = (bench.rows_written().await? - rows_before) as f64;

    let mut latencies = Vec::with_capacity(args.latency_samples);
    for _ in 0..args.latency_samples {
        let t0 = Utc::now();
        let t = bench.create("noop_linear").await?;
        let done = bench.wait_one(t, Duration::from_secs(60)).await?;
        latencies.push(seconds(done - t0) * 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];

    let t0 = Utc::now();
    let t = bench.create("sleep_100").await?;
    let done = bench.wait_one(t, Duration::from_secs(120)).await?;

    // One task whose batchable step creates BATCH_WORKERS copies; plan + copies + convergence.
    let b0 = Utc::now();
    let b = bench
        .create_with(
            "noop_batch",
            json!({"rows": BATCH_WORKERS, "batch_size": 1}),
        )
        .await?;
    let batch_done = bench.wait_one(b, Duration::from_secs(300)).await?;
    Ok(Row {
        worker: kind.into(),
        throughput: steps / elapsed,
        write_transactions_per_step: writes / steps,
        pg_cpu_ms_per_step: pg_cpu * 1000.0 / steps,
        wal_bytes_per_step: wal / steps,
        rows_per_step: rows / steps,
        p50_ms: pct(0.5),
        p95_ms: pct(0.95),
        parallel_s: seconds(done - t0),
        batch_steps_per_s: (BATCH_WORKERS + 2) as f64 / seconds(batch_done - b0),
    })
}

/// What a Ruby caller sees: `Client.create_task` + `Client.wait` of the 4-step chain, run
/// by workers/ruby/bench/client_wait.rb against the running server and a Rust worker.
struct ClientWait {
    client_p50_ms: f64,
    client_p95_ms: f64,
    server_p50_ms: f64,
}

fn measure_client_wait(bench: &Bench, samples: usize) -> anyhow::Result<ClientWait> {
    let _worker = bench.spawn_worker("rust")?;
    let v = run_ruby_bench(bench, "client_wait.rb", samples)?;
    Ok(ClientWait {
        client_p50_ms: json_field(&v, "client_p50_ms")?,
        client_p95_ms: json_field(&v, "client_p95_ms")?,
        server_p50_ms: json_field(&v, "server_p50_ms")?,
    })
}

/// The README's Ruby example as one process (workers/ruby/bench/embedded.rb): the worker with
/// embedded orchestration, tasks of 10 no-op steps created one by one, then waited for.
struct Embedded {
    steps_per_s: f64,
    create_ms: f64,
    /// Postgres CPU over the whole process run (warm-up included) per step it created.
    pg_cpu_ms_per_step: f64,
    /// The Ruby process's own CPU (all its threads) from the first create to the last
    /// completion, per step.
    ruby_cpu_ms_per_step: f64,
}

/// Run with no other orchestrator or worker up.
async fn measure_embedded(bench: &Bench, tasks: usize) -> anyhow::Result<Embedded> {
    bench.checkpoint().await;
    let steps_before = bench.step_count().await?;
    let cpu_before = postgres_cpu_seconds();
    let v = run_ruby_bench(bench, "embedded.rb", tasks)?;
    let steps = (bench.step_count().await? - steps_before) as f64;
    let pg_cpu_ms_per_step = match (cpu_before, postgres_cpu_seconds()) {
        (Some(a), Some(b)) if steps > 0.0 => (b - a) * 1000.0 / steps,
        _ => f64::NAN,
    };
    Ok(Embedded {
        steps_per_s: json_field(&v, "steps_per_s")?,
        create_ms: json_field(&v, "create_ms")?,
        pg_cpu_ms_per_step,
        ruby_cpu_ms_per_step: json_field(&v, "ruby_cpu_ms_per_step")?,
    })
}

/// Runs a script of workers/ruby/bench against the bench database and parses the JSON line
/// it prints.
fn run_ruby_bench(bench: &Bench, script: &str, arg: usize) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("ruby")
        .arg("-I")
        .arg(repo_root().join("workers/ruby/lib"))
        .arg(repo_root().join("workers/ruby/bench").join(script))
        .arg(arg.to_string())
        .env("DATABASE_URL", &bench.db_url)
        .env("TASKER_ENV", "development")
        .env("TASKER_CONFIG_DIR", repo_root().join("config/tasker"))
        .env("TASKER_TEMPLATE_PATH", &bench.template_dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running workers/ruby/bench/{script}"))?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{script} printed {}", String::from_utf8_lossy(&out.stdout)))
}

fn json_field(v: &serde_json::Value, key: &str) -> anyhow::Result<f64> {
    v[key].as_f64().with_context(|| format!("no {key} in {v}"))
}

fn seconds(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

fn pgbench_tps(server: &str) -> anyhow::Result<f64> {
    let url = format!("{server}/tasker_pgbench");
    let admin = format!("{server}/postgres");
    let _ = Command::new("psql")
        .args([&admin, "-qc", "DROP DATABASE IF EXISTS tasker_pgbench"])
        .output();
    Command::new("psql")
        .args([&admin, "-qc", "CREATE DATABASE tasker_pgbench"])
        .output()?;
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s", "4", &url])
        .output()?;
    if !init.status.success() {
        bail!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    // Like every measured run, right after a checkpoint (see Bench::checkpoint).
    let checkpoint = Command::new("psql")
        .args([&url, "-qc", "CHECKPOINT"])
        .output()?;
    if !checkpoint.status.success() {
        eprintln!(
            "(no CHECKPOINT before pgbench's run: {})",
            String::from_utf8_lossy(&checkpoint.stderr).trim()
        );
    }
    let run = Command::new("pgbench")
        .args(["-N", "-c", "8", "-j", "2", "-T", "10", &url])
        .output()?;
    let _ = Command::new("psql")
        .args([&admin, "-qc", "DROP DATABASE IF EXISTS tasker_pgbench"])
        .output();
    tps_of(&String::from_utf8_lossy(&run.stdout))
}

/// Transactions (scripts) per second from pgbench's report: "tps = 4106.2 (without ...)".
fn tps_of(report: &str) -> anyhow::Result<f64> {
    report
        .lines()
        .find(|l| l.starts_with("tps"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .context("no tps line in pgbench output")
}

/// The main table: one row per measurement, with the pgbench figure its ratio divides by.
fn print_rows(rows: &[(Row, f64)]) {
    println!("| worker | no-op steps/s | per pgbench TPS | write transactions/step | rows written/step | Postgres CPU/step | WAL/step | linear 4-step p50 | p95 | 100 x 50 ms, 10 handlers | ratio to ideal 0.5 s | 1,000-worker batch steps/s |");
    println!("|--------|---------------|-----------------|-----------------|-------------------|-------------------|----------|-------------------|-----|--------------------------|----------------------|----------------------------|");
    for (r, tps) in rows {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.3} ms | {:.0} B | {:.1} ms | {:.1} ms | {:.3} s | {:.2}x | {:.0} |",
            r.worker,
            r.throughput,
            r.throughput / tps,
            r.write_transactions_per_step,
            r.rows_per_step,
            r.pg_cpu_ms_per_step,
            r.wal_bytes_per_step,
            r.p50_ms,
            r.p95_ms,
            r.parallel_s,
            r.parallel_s / 0.5,
            r.batch_steps_per_s
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.floor {
        return floor::run(&args.server).await;
    }
    let db_url = format!("{}/tasker_bench", args.server);
    let admin = format!("{}/postgres", args.server);
    Command::new("psql")
        .args([
            &admin,
            "-qc",
            "DROP DATABASE IF EXISTS tasker_bench WITH (FORCE)",
        ])
        .output()?;
    database::create_database_if_missing(&db_url).await?;
    let config = ConfigLoader::isolated(Some(&repo_root().join("config/tasker")), "development")
        .set("database.url", db_url.clone())
        .load()?;
    let pool = database::connect(&config.database).await?;
    database::migrate(&pool).await?;
    let template_dir = std::env::temp_dir().join(format!("tasker-bench-{}", std::process::id()));
    std::fs::create_dir_all(&template_dir)?;
    let registry = TemplateRegistry::new(pool.clone());
    for t in templates() {
        registry.register(&t).await?;
        std::fs::write(
            template_dir.join(format!("{}.yaml", t.name)),
            serde_yaml_ng::to_string(&t)?,
        )?;
    }
    let bench = Bench {
        db_url,
        pool: pool.clone(),
        initializer: TaskInitializer::new(pool.clone(), config.backoff.clone())
            .with_limits(&config.orchestration),
        waiter: TaskWaiter::new(pool.clone(), WAITER_FALLBACK_POLL, Duration::from_secs(1)),
        template_dir,
    };
    if let Some(steps) = args.history {
        let kind = if matches!(args.worker.as_str(), "both" | "all") {
            "rust"
        } else {
            args.worker.as_str()
        };
        history::run(&bench, kind, &args, steps).await?;
        std::fs::remove_dir_all(&bench.template_dir).ok();
        return Ok(());
    }
    // The ceiling is measured before and after, and the lower figure used, so a machine
    // that got busier (or quieter) during the run does not flatter the ratios.
    eprintln!("measuring the PostgreSQL ceiling (pgbench) ...");
    let tps_before = pgbench_tps(&args.server).unwrap_or(f64::NAN);
    let server = bench.spawn(&["server"], &[])?;
    let kinds: Vec<&str> = match args.worker.as_str() {
        "both" => vec!["rust", "ruby"],
        "all" => vec!["rust", "ruby", "python"],
        k => vec![k],
    };
    let with_ruby = kinds.contains(&"ruby");
    let mut rows = Vec::new();
    for kind in &kinds {
        eprintln!("measuring the {kind} worker ...");
        rows.push(measure(&bench, kind, &args).await?);
    }
    let client_wait = if !with_ruby {
        None
    } else {
        eprintln!("measuring a Ruby client's create + wait ...");
        Some(measure_client_wait(&bench, args.latency_samples)?)
    };
    drop(server);
    let embedded = if !with_ruby {
        None
    } else {
        eprintln!("measuring one Ruby process with embedded orchestration ...");
        Some(measure_embedded(&bench, args.embedded_tasks).await?)
    };
    eprintln!("measuring the PostgreSQL ceiling (pgbench) again ...");
    let tps_after = pgbench_tps(&args.server).unwrap_or(f64::NAN);
    let tps = tps_before.min(tps_after);
    println!();
    let steps_of = |kind: &str| rows.iter().find(|r| r.worker == kind).map(|r| r.throughput);
    let python_to_ruby = match (steps_of("python"), steps_of("ruby")) {
        (Some(py), Some(rb)) => Some(py / rb),
        _ => None,
    };
    let rows: Vec<(Row, f64)> = rows.into_iter().map(|r| (r, tps)).collect();
    print_rows(&rows);
    if let Some(ratio) = python_to_ruby {
        println!();
        println!(
            "Python worker / Ruby worker, no-op steps/s in this run: {ratio:.2} (target >= 0.9)"
        );
    }
    if let Some(c) = client_wait {
        println!();
        println!(
            "Ruby client, Client.create_task + Client.wait of the linear 4-step task: p50 {:.1} ms, p95 {:.1} ms; server-side p50 (created_at to completed_at) {:.1} ms; ratio {:.2} (target <= 1.2)",
            c.client_p50_ms,
            c.client_p95_ms,
            c.server_p50_ms,
            c.client_p50_ms / c.server_p50_ms
        );
    }
    if let Some(e) = embedded {
        println!();
        println!(
            "One Ruby process, Worker.start(orchestration: :embedded) + Client.create_task one by one + Client.wait, {} tasks x 10 no-op steps: {:.0} steps/s ({:.2} per pgbench TPS), create_task {:.1} ms each, Postgres CPU {:.3} ms/step, Ruby process CPU {:.3} ms/step ({:.2} of {} cores busy)",
            args.embedded_tasks,
            e.steps_per_s,
            e.steps_per_s / tps,
            e.create_ms,
            e.pg_cpu_ms_per_step,
            e.ruby_cpu_ms_per_step,
            (e.pg_cpu_ms_per_step + e.ruby_cpu_ms_per_step) * e.steps_per_s / 1000.0,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
    }
    println!();
    println!(
        "PostgreSQL ceiling on this machine: pgbench -N -c 8 -j 2 -T 10 (scale 4): {tps:.0} TPS, the lower of {tps_before:.0} before and {tps_after:.0} after the runs; the ratios divide by it"
    );
    println!(
        "(Postgres CPU: every local postgres process's CPU time over the throughput run, from /proc, so other databases' load counts too; WAL: the server's WAL growth over the same run)"
    );
    println!(
        "({} no-op tasks x 10 steps for throughput; {} sequential linear tasks for latency; one batchable step creating {BATCH_WORKERS} no-op batch workers and a convergence step, created to completed)",
        args.tasks, args.latency_samples
    );
    std::fs::remove_dir_all(&bench.template_dir).ok();
    Ok(())
}

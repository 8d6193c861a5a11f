use super::demo_db::{self, PrivateCluster, Started};
use crate::child::ManagedChild;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tasker_orchestration::{TaskInitializer, TaskRequest};
use tasker_shared::models::TemplateRegistry;
use tasker_shared::template::{load_template_dirs, template_search_path};
use uuid::Uuid;

#[derive(clap::Args)]
pub struct Args {
    /// Order-fulfillment tasks to submit.
    #[arg(long, default_value_t = 200)]
    tasks: usize,
    /// Which worker runs the handlers: the Ruby example handlers (`rake tasker:worker`) or
    /// the Rust ones (`tasker worker`).
    #[arg(long, default_value = "ruby", value_parser = ["ruby", "rust"])]
    worker: String,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Stop the demo's private PostgreSQL cluster (the one it starts when no server accepts
    /// tasker_demo on 127.0.0.1:5432) and exit.
    #[arg(long)]
    stop_db: bool,
}

/// The main job: an orchestrator and a worker as separate processes, a batch of orders, a
/// live progress bar and a summary. Fails unless every task completed.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let root = repo_root();
    if args.stop_db {
        return stop_private_cluster(&root).await;
    }
    let mut config = super::load_config()?;
    let private = choose_database(&root, &mut config.database.url).await?;
    let outcome = run_demo(args, config).await;
    if let Some(cluster) = private {
        println!(
            "the demo's private PostgreSQL cluster in {} is left running for the next run; \
             stop it with `bin/demo --stop-db` (or `tasker demo --stop-db`)",
            cluster.base().display()
        );
    }
    outcome
}

/// `DATABASE_URL` when set; else `tasker_demo` on 127.0.0.1:5432 when that server lets us
/// in; else the project's private cluster, started if needed. Sets `url` to the choice and
/// returns the private cluster if that is it.
async fn choose_database(
    root: &std::path::Path,
    url: &mut String,
) -> anyhow::Result<Option<PrivateCluster>> {
    if std::env::var_os("DATABASE_URL").is_some_and(|u| !u.is_empty()) {
        println!(
            "database: {} (DATABASE_URL)",
            tasker_shared::database::redact(url)
        );
        return Ok(None);
    }
    let refusal = match demo_db::probe(demo_db::SYSTEM_URL).await {
        Ok(()) => {
            println!("database: {}", demo_db::SYSTEM_URL);
            *url = demo_db::SYSTEM_URL.into();
            return Ok(None);
        }
        Err(e) => e,
    };
    println!(
        "database: {} is not usable ({refusal}); using the demo's private PostgreSQL cluster",
        demo_db::SYSTEM_URL
    );
    let cluster = PrivateCluster::for_project(root).await?;
    if let Some(why) = &cluster.relocated {
        println!(
            "  it lives in {} rather than the project's .tasker: {why}",
            cluster.base().display()
        );
    }
    let state = match cluster.ensure_running().await? {
        Started::Now => "started",
        Started::AlreadyRunning => "already running",
    };
    println!(
        "  {state}: data in {}/pg, Unix socket only (psql -h {} -p {} -U postgres tasker_demo)",
        cluster.base().display(),
        cluster.socket_dir().display(),
        cluster.port()
    );
    *url = cluster.url();
    Ok(Some(cluster))
}

async fn stop_private_cluster(root: &std::path::Path) -> anyhow::Result<()> {
    let cluster = PrivateCluster::for_project(root).await?;
    if cluster.stop().await? {
        println!(
            "stopped the demo's private PostgreSQL cluster in {}",
            cluster.base().display()
        );
    } else {
        println!(
            "the demo's private PostgreSQL cluster ({}) is not running",
            cluster.base().display()
        );
    }
    Ok(())
}

async fn run_demo(args: Args, config: tasker_shared::TaskerConfig) -> anyhow::Result<()> {
    let url = config.database.url.clone();
    if tasker_shared::database::create_database_if_missing(&url).await? {
        println!(
            "created database {}",
            tasker_shared::database::database_name(&url)?
        );
    }
    let pool = super::connect(&config).await?;
    tasker_shared::database::migrate(&pool).await?;
    let env = std::env::var("TASKER_ENV").unwrap_or_else(|_| "development".into());
    let registry = TemplateRegistry::new(pool.clone());
    let paths: Vec<PathBuf> = template_search_path()
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    for (_, t) in load_template_dirs(&paths)? {
        registry.register(&t.for_environment(&env)).await?;
    }

    let exe = std::env::current_exe()?;
    let log_dir = std::env::temp_dir().join("tasker-demo");
    std::fs::create_dir_all(&log_dir)?;
    let spawn = |mut cmd: Command, name: &str| -> anyhow::Result<ManagedChild> {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
        cmd.env("DATABASE_URL", &url)
            .env("TASKER_ORCHESTRATION__BIND_ADDRESS", "127.0.0.1:0")
            .env("TASKER_WORKER__BIND_ADDRESS", "")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(ManagedChild(
            cmd.spawn()
                .with_context(|| format!("starting the {name}"))?,
        ))
    };
    let mut server = Command::new(&exe);
    server.arg("server");
    let _server = spawn(server, "orchestrator")?;
    let worker_cmd = if args.worker == "ruby" {
        let mut c = Command::new("rake");
        c.arg("-f")
            .arg(repo_root().join("Rakefile"))
            .arg("tasker:worker")
            .env("NAMESPACES", "ecommerce")
            .env(
                "HANDLERS",
                repo_root().join("workers/ruby/examples/handlers.rb"),
            );
        c
    } else {
        let mut c = Command::new(&exe);
        c.args(["worker", "--namespace", "ecommerce"]);
        c
    };
    let worker_log = log_dir.join(format!("{}-worker.log", args.worker));
    let mut worker = spawn(worker_cmd, &format!("{}-worker", args.worker))?;
    println!(
        "orchestrator and {} worker started (logs in {})",
        args.worker,
        log_dir.display()
    );

    let initializer = TaskInitializer::new(pool.clone(), config.backoff.clone())
        .with_limits(&config.orchestration);
    let start = Instant::now();
    let mut submitted: Vec<(Uuid, Instant)> = Vec::with_capacity(args.tasks);
    for i in 0..args.tasks {
        let items: Vec<_> = (0..(1 + i % 3))
            .map(|k| json!({"sku": format!("SKU-{k}"), "quantity": 1 + k, "price": 9.5 + k as f64}))
            .collect();
        let created = initializer
            .create_task(&TaskRequest {
                namespace: "ecommerce".into(),
                name: "order_fulfillment".into(),
                version: "1.0.0".into(),
                context: json!({"order_id": i, "customer_email": format!("customer{i}@example.com"), "items": items}),
                idempotency_key: None,
                initiator: Some("demo".into()),
                run_at: None,
            })
            .await?;
        submitted.push((created.task_uuid, Instant::now()));
    }
    let ids: Vec<Uuid> = submitted.iter().map(|(id, _)| *id).collect();

    let bar = ProgressBar::new(args.tasks as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} tasks  {msg}")?
            .progress_chars("##-"),
    );
    let deadline = start + Duration::from_secs(args.timeout);
    let mut finished: std::collections::HashMap<Uuid, (String, Duration)> =
        std::collections::HashMap::new();
    loop {
        let rows: Vec<(
            Uuid,
            String,
            chrono::DateTime<chrono::Utc>,
            chrono::DateTime<chrono::Utc>,
        )> = sqlx::query_as(
            "SELECT task_uuid, state, created_at, completed_at FROM tasker.tasks
              WHERE task_uuid = ANY($1) AND completed_at IS NOT NULL",
        )
        .bind(&ids)
        .fetch_all(&pool)
        .await?;
        for (id, state, created, completed) in rows {
            finished
                .entry(id)
                .or_insert_with(|| (state, (completed - created).to_std().unwrap_or_default()));
        }
        let steps: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasker.step_result_audits WHERE task_uuid = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&pool)
        .await?;
        bar.set_position(finished.len() as u64);
        bar.set_message(format!(
            "{:.0} steps/s",
            steps as f64 / start.elapsed().as_secs_f64()
        ));
        if finished.len() == ids.len() || Instant::now() > deadline {
            bar.finish();
            break;
        }
        if let Ok(Some(status)) = worker.0.try_wait() {
            bar.abandon();
            bail!(
                "the {} worker exited ({status}); see {}",
                args.worker,
                worker_log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = start.elapsed();
    let steps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.step_result_audits WHERE task_uuid = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await?;
    let complete = finished.values().filter(|(s, _)| s == "complete").count();
    let failed = finished.len() - complete;
    let unfinished = ids.len() - finished.len();
    let mut latencies: Vec<f64> = finished
        .values()
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!();
    println!("| tasks submitted | complete | failed | unfinished | steps run | wall time | steps/s | p50 task latency | p95 task latency |");
    println!("|-----------------|----------|--------|------------|-----------|-----------|---------|------------------|------------------|");
    println!(
        "| {} | {} | {} | {} | {} | {:.2} s | {:.0} | {:.0} ms | {:.0} ms |",
        ids.len(),
        complete,
        failed,
        unfinished,
        steps,
        wall.as_secs_f64(),
        steps as f64 / wall.as_secs_f64(),
        pct(0.5),
        pct(0.95)
    );
    if complete != ids.len() {
        bail!(
            "{} of {} tasks did not complete",
            ids.len() - complete,
            ids.len()
        );
    }
    Ok(())
}

fn repo_root() -> PathBuf {
    std::env::var_os("TASKER_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

use anyhow::Context;
use std::collections::BTreeSet;
use tasker_shared::models::{TemplateRegistry, WorkerRow};
use tasker_shared::template::{load_template_dirs, template_search_path};
use tasker_worker::{Dispatch, WorkerCore, WorkerOptions};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Namespace to serve (repeatable; default: every namespace of the registered templates
    /// on TASKER_TEMPLATE_PATH).
    #[arg(long = "namespace", short = 'n')]
    namespaces: Vec<String>,
    /// Worker id in results and claims (default: host:pid:random).
    #[arg(long)]
    worker_id: Option<String>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List the live worker processes (the worker registry): id, host, pid, namespaces,
    /// started, last seen, steps held. A worker that dies drops off within seconds.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A Rust worker running the example handlers, until SIGTERM or SIGINT; or, with `list`,
/// the workers running now.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Action::List { json }) = args.action {
        return list(json).await;
    }
    let config = super::load_config()?;
    let pool = super::connect(&config).await?;
    let env = std::env::var("TASKER_ENV").unwrap_or_else(|_| "development".into());
    let registry = TemplateRegistry::new(pool.clone());
    let mut namespaces = BTreeSet::new();
    let paths: Vec<_> = template_search_path()
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    for (path, template) in load_template_dirs(&paths)? {
        registry
            .register(&template.for_environment(&env))
            .await
            .with_context(|| format!("registering {}", path.display()))?;
        namespaces.insert(template.namespace.clone());
    }
    let namespaces: Vec<String> = if args.namespaces.is_empty() {
        namespaces.into_iter().collect()
    } else {
        args.namespaces
    };
    anyhow::ensure!(
        !namespaces.is_empty(),
        "no namespaces to serve: pass --namespace or set TASKER_TEMPLATE_PATH"
    );
    let handlers = tasker_worker_rust::example_registry();
    let worker = WorkerCore::start(
        pool,
        &config,
        WorkerOptions {
            namespaces,
            dispatch: Dispatch::Rust(handlers),
            worker_id: args.worker_id,
            callbacks: Vec::new(),
        },
    )
    .await?;
    let stop = CancellationToken::new();
    let http = if config.worker.bind_address.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&config.worker.bind_address)
            .await
            .with_context(|| format!("binding {}", config.worker.bind_address))?;
        tracing::info!(address = %listener.local_addr()?, "worker health and metrics listening");
        let app = tasker_worker::http_router(worker.command_sender());
        let stop = stop.clone();
        Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }))
    };
    super::shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight steps");
    stop.cancel();
    worker.shutdown().await;
    if let Some(h) = http {
        h.await??;
    }
    Ok(())
}

async fn list(json: bool) -> anyhow::Result<()> {
    let config = super::load_config()?;
    let pool = super::connect(&config).await?;
    let workers = WorkerRow::list(&pool).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&workers)?);
        return Ok(());
    }
    if workers.is_empty() {
        println!("no workers running");
        return Ok(());
    }
    println!(
        "{:<40} {:<16} {:>7}  {:<24} {:<20} {:<20} {:>5}",
        "WORKER", "HOST", "PID", "NAMESPACES", "STARTED", "LAST SEEN", "STEPS"
    );
    for w in workers {
        println!(
            "{:<40} {:<16} {:>7}  {:<24} {:<20} {:<20} {:>5}",
            w.worker_id,
            w.host,
            w.pid,
            w.namespaces.join(","),
            w.started_at.format("%Y-%m-%d %H:%M:%S"),
            w.last_seen_at.format("%Y-%m-%d %H:%M:%S"),
            w.steps_held
        );
    }
    Ok(())
}

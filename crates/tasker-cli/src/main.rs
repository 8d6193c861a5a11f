//! `tasker`: the one binary for operating Tasker.

mod child;
mod commands;

use clap::{Parser, Subcommand};

// Handler dispatch allocates on several threads at once; glibc's arenas contend there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tasker",
    version,
    about = "Tasker workflow engine: migrate, run, and inspect workflows"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if missing, run migrations and install PGMQ.
    Migrate(commands::migrate::Args),
    /// Inspect configuration.
    #[command(subcommand)]
    Config(commands::config::Command),
    /// Validate or register task templates.
    #[command(subcommand)]
    Template(commands::template::Command),
    /// Run orchestration, the REST API and the dashboard.
    ///
    /// Refuses to listen on a non-loopback address (0.0.0.0, a LAN address) while
    /// [orchestration] api_key is empty, unless --insecure-no-auth (or [orchestration]
    /// insecure_no_auth) says so. A request is served only when its Host is a loopback
    /// name, an IP address or a name in [orchestration] allowed_hosts. Request heads must
    /// arrive within [orchestration] request_header_timeout_ms; at most
    /// [orchestration] max_http_connections connections are served at once.
    Server(commands::server::Args),
    /// Run a Rust worker with the example handlers.
    Worker(commands::worker::Args),
    /// Create, inspect, cancel and watch tasks.
    #[command(subcommand)]
    Task(commands::task::Command),
    /// Remove finished tasks older than their retention period ([retention]).
    #[command(subcommand)]
    Retention(commands::retention::Command),
    /// Run the order-fulfillment example end to end: orchestrator and worker processes, a
    /// batch of tasks, live progress and a summary (exit 0 only if every task completed).
    ///
    /// Database: DATABASE_URL when set; else tasker_demo on 127.0.0.1:5432 if that server
    /// accepts postgres without a password; else a private PostgreSQL cluster for the
    /// project (.tasker/pg, Unix socket only), started when needed and left running for the
    /// next run until `tasker demo --stop-db`.
    Demo(commands::demo::Args),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TASKER_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate(args) => commands::migrate::run(args).await,
        Command::Config(cmd) => commands::config::run(cmd),
        Command::Template(cmd) => commands::template::run(cmd).await,
        Command::Server(args) => commands::server::run(args).await,
        Command::Worker(args) => commands::worker::run(args).await,
        Command::Task(cmd) => commands::task::run(cmd).await,
        Command::Retention(cmd) => commands::retention::run(cmd).await,
        Command::Demo(args) => commands::demo::run(args).await,
    }
}

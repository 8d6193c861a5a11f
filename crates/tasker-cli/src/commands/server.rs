use anyhow::Context;
use tasker_orchestration::OrchestrationCore;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct Args {
    /// Address for the REST API and dashboard (default: [orchestration] bind_address).
    #[arg(long)]
    bind: Option<String>,
    /// Serve on a non-loopback address without an API key: anyone who can reach it can
    /// create and cancel tasks, complete steps and read every context. Logged as an error.
    #[arg(long)]
    insecure_no_auth: bool,
}

/// Orchestration loops plus the REST API, until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = super::load_config()?;
    if args.insecure_no_auth {
        config.orchestration.insecure_no_auth = true;
    }
    let bind = args
        .bind
        .unwrap_or_else(|| config.orchestration.bind_address.clone());
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    let address = listener.local_addr()?;
    // Before anything starts, so a refused address changes nothing.
    tasker_orchestration::api::check_exposure(&config.orchestration, address)?;
    let pool = super::connect(&config).await?;
    let core = OrchestrationCore::new(pool, config.clone()).await;
    let handle = core.start();
    tracing::info!(%address, "orchestration server listening");
    let stop = CancellationToken::new();
    let api = tokio::spawn(tasker_orchestration::api::serve(
        core,
        listener,
        stop.clone(),
    ));
    super::shutdown_signal().await;
    tracing::info!("shutting down");
    stop.cancel();
    handle
        .shutdown(config.orchestration.shutdown_timeout())
        .await;
    api.await??;
    Ok(())
}

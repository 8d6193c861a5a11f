use anyhow::Context;
use tasker_orchestration::OrchestrationCore;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct Args {
    /// Address for the REST API (default: [orchestration] bind_address).
    #[arg(long)]
    bind: Option<String>,
}

/// Orchestration loops plus the REST API, until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = super::load_config()?;
    let pool = super::connect(&config).await?;
    let core = OrchestrationCore::new(pool, config.clone()).await;
    let handle = core.start();
    let bind = args
        .bind
        .unwrap_or_else(|| config.orchestration.bind_address.clone());
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    tracing::info!(address = %listener.local_addr()?, "orchestration server listening");
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

//! The shape every orchestration maintenance loop shares: run a job every `interval` until
//! shutdown, each run bounded by `limit` so a slow database cannot pile runs up (a job cut
//! short is tried again at the next tick).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn every<F, Fut, E>(
    what: &'static str,
    interval: Duration,
    limit: Duration,
    shutdown: CancellationToken,
    mut job: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match tokio::time::timeout(limit, job()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "{what} failed"),
            Err(_) => tracing::warn!(?limit, "{what} timed out"),
        }
    }
}

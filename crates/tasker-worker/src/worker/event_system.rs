//! WorkerEventSystem: one loop per worker queue. When woken by the queue's NOTIFY
//! (event_driven, hybrid) or by the fallback poll (polling, hybrid) it asks the
//! StepExecutorActor, through a WorkerCommand, to read and claim what the queue holds: never
//! more than the dispatch channel has room for, nor than max_steps_in_flight allows.

use super::commands::WorkerCommand;
use super::in_flight::InFlight;
use crate::step::DispatchedStep;
use futures::FutureExt;
use sqlx::postgres::{PgListener, PgNotification};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tasker_shared::config::DeploymentMode;
use tasker_shared::queue::{notify_channel, sent_by_this_process, Notifier, QueueName};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

/// How long a queue loop waits for the actor's answer to one read-and-claim.
const CLAIM_REPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct EventSystemConfig {
    pub mode: DeploymentMode,
    pub poll_interval: Duration,
    pub read_batch_size: usize,
    pub reconnect_backoff: Duration,
    /// Claimed steps whose handler has not finished that this worker holds at most
    /// (`max_steps_in_flight`), so one worker does not hide a backlog from the others.
    pub max_in_flight: usize,
}

pub struct WorkerEventSystem {
    pool: PgPool,
    notifier: Notifier,
    config: EventSystemConfig,
    commands: mpsc::Sender<WorkerCommand>,
    dispatch: mpsc::Sender<DispatchedStep>,
    in_flight: Arc<InFlight>,
}

impl WorkerEventSystem {
    pub fn new(
        pool: PgPool,
        notifier: Notifier,
        config: EventSystemConfig,
        commands: mpsc::Sender<WorkerCommand>,
        dispatch: mpsc::Sender<DispatchedStep>,
        in_flight: Arc<InFlight>,
    ) -> Self {
        Self {
            pool,
            notifier,
            config,
            commands,
            dispatch,
            in_flight,
        }
    }

    /// Serves one queue until shutdown.
    pub async fn run_queue(self, queue: QueueName, shutdown: CancellationToken) {
        let channel = notify_channel(&queue);
        // Only modes that listen react to wake-ups; polling reads on its timer alone.
        let local = self
            .config
            .mode
            .listens()
            .then(|| self.notifier.local_wake(&queue));
        let mut listener: Option<PgListener> = None;
        loop {
            if self.config.mode.listens() && listener.is_none() {
                listener = connect(&self.pool, &channel).await;
            }
            // Room on the dispatch channel bounds how much we take off the queue.
            let room = tokio::select! {
                _ = shutdown.cancelled() => return,
                permit = self.dispatch.reserve() => match permit {
                    Ok(p) => { drop(p); self.dispatch.capacity().max(1) }
                    Err(_) => return,
                },
            };
            // Wait until half the allowance is free: claiming one step per released step would
            // cost a transaction per step.
            let held = self.in_flight.unexecuted();
            if held > self.config.max_in_flight / 2 {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.in_flight.released(self.config.poll_interval) => {}
                }
                continue;
            }
            let qty = room
                .min(self.config.read_batch_size)
                .min(self.config.max_in_flight - held);
            drain_wake_ups(&mut listener, local.as_deref());
            self.in_flight.reserve(qty);
            let (reply, read) = oneshot::channel();
            let cmd = WorkerCommand::ExecuteSteps {
                queue: queue.clone(),
                max: qty,
                reply,
            };
            let sent = tokio::select! {
                _ = shutdown.cancelled() => false,
                sent = self.commands.send(cmd) => sent.is_ok(),
            };
            if !sent {
                self.in_flight.unreserve(qty);
                return;
            }
            // The actor replies once the claimed steps are on the dispatch channel, whose
            // room was reserved above; the timeout only guards against a lost reply.
            let read = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(CLAIM_REPLY_TIMEOUT, read) => r,
            };
            match read {
                Ok(Ok(Ok(n))) if n == qty => continue,
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => {
                    // The messages stay hidden until their timeout, then come back.
                    tracing::warn!(queue = %queue, error = %e, "reading and claiming steps failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.config.reconnect_backoff) => {}
                    }
                    continue;
                }
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!(queue = %queue, "no reply to a claim within {CLAIM_REPLY_TIMEOUT:?}")
                }
            }
            if !self.wait(&mut listener, local.as_deref(), &shutdown).await {
                return;
            }
        }
    }

    /// Waits for a wake-up (NOTIFY, this process's own notifier, or the poll); false on
    /// shutdown.
    async fn wait(
        &self,
        listener: &mut Option<PgListener>,
        local: Option<&Notify>,
        shutdown: &CancellationToken,
    ) -> bool {
        let poll = self.config.mode.polls() || listener.is_none();
        // This process's own notifications already woke it through `local`.
        let echo = |n: &PgNotification| local.is_some() && sent_by_this_process(n.payload());
        let wake = async {
            let Some(l) = listener.as_mut() else {
                tokio::time::sleep(self.config.poll_interval).await;
                return;
            };
            let news = async {
                loop {
                    match l.recv().await {
                        Ok(n) if echo(&n) => continue,
                        Ok(_) => return true,
                        Err(_) => return false,
                    }
                }
            };
            let alive = if poll {
                tokio::time::timeout(self.config.poll_interval, news)
                    .await
                    .unwrap_or(true)
            } else {
                news.await
            };
            if !alive {
                *listener = None;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = async {
                match local {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            } => true,
            _ = wake => true,
        }
    }
}

/// Takes the wake-ups that are already waiting, just before a read: each stands for messages
/// committed before it was sent, which the read is about to see anyway. Left waiting, every
/// one of them would cost a read of its own, most of them empty.
fn drain_wake_ups(listener: &mut Option<PgListener>, local: Option<&Notify>) {
    if let Some(n) = local {
        let _ = n.notified().now_or_never();
    }
    let Some(l) = listener.as_mut() else { return };
    loop {
        match l.recv().now_or_never() {
            Some(Ok(_)) => continue,
            Some(Err(_)) => {
                *listener = None;
                return;
            }
            None => return,
        }
    }
}

async fn connect(pool: &PgPool, channel: &str) -> Option<PgListener> {
    let mut l = match PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "LISTEN connection failed; polling until it is back");
            return None;
        }
    };
    l.listen(channel).await.ok()?;
    Some(l)
}

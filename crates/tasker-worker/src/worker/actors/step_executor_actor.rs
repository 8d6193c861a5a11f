//! StepExecutorActor: reads a worker queue and claims the steps its messages name, in one
//! statement (the queue table's read, SQL `claim_messages`, the claimed steps' messages
//! deleted), and publishes them on the handler dispatch channel. It never waits for a
//! handler; its only wait is for room on the bounded dispatch channel, which is the
//! backpressure that slows reading.

use crate::step::{DispatchedStep, StepContext};
use crate::worker::in_flight::{InFlight, InFlightStep};
use crate::worker::worker_metrics as m;
use chrono::Utc;
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tasker_shared::claim::{ClaimedStep, StepClaim};
use tasker_shared::database::HotConnection;
use tasker_shared::messages::StepMessage;
use tasker_shared::queue::{QueueClient, QueueName};
use tasker_shared::template::EventDeclaration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Takes up to `$1` messages of `queue` (locked, skipping those another reader holds) and
/// claims the steps they name for worker `$3` with a lease of `$4` seconds: one
/// `tasker.message_claim` row per message. A claimed step's message is deleted in the same
/// statement: the step's row holds the claim from then on, and a step whose claim is lost
/// (its worker died, its lease expired) gets a new message from whoever releases it
/// (`reap_dead_workers`, `release_expired_claims`, `release_steps`). So a message is written
/// twice (sent, deleted), not three times (sent, read, deleted). The messages of steps not
/// claimed are hidden for `$2` seconds, as a read hides them, for [`StepExecutorActor`] to
/// defer or drop. A static statement a connection prepares once, where pgmq.read builds and
/// plans its SQL on every call. Messages are deleted and hidden by `msg_id = ANY
/// (ARRAY(...))`, an index condition whatever the planner believes of the table's size, not
/// by a join: a plan made while the statistics said the queue was empty (after a vacuum)
/// joined the other way, walking the whole queue.
pub fn claim_statement(queue: &QueueName) -> String {
    format!(
        "WITH picked AS (
           SELECT msg_id, message FROM {q} WHERE vt <= clock_timestamp()
            ORDER BY msg_id LIMIT $1 FOR UPDATE SKIP LOCKED
         ), claims AS (
           SELECT * FROM tasker.claim_messages(
             (SELECT array_agg(msg_id ORDER BY msg_id) FROM picked),
             (SELECT array_agg(message ORDER BY msg_id) FROM picked), $3, $4)
         ), taken AS (
           DELETE FROM {q}
            WHERE msg_id = ANY (ARRAY(SELECT c.msg_id FROM claims c
                                       WHERE (c.claim).outcome = '{claimed}'))
         ), hidden AS (
           UPDATE {q} m SET vt = clock_timestamp() + make_interval(secs => $2),
                  read_ct = m.read_ct + 1
            WHERE m.msg_id = ANY (ARRAY(SELECT c.msg_id FROM claims c
                                         WHERE (c.claim).outcome IS DISTINCT FROM '{claimed}'))
         )
         SELECT * FROM claims",
        q = queue.table(),
        claimed = CLAIMED,
    )
}

/// The outcome of a claim that took the step (`tasker.step_claim`'s `outcome`).
const CLAIMED: &str = "claimed";

/// Reads up to `$1` messages of `queue`, hiding them for `$2` seconds, without claiming
/// their steps: the first half of a claim taken apart when the whole failed.
fn read_statement(queue: &QueueName) -> String {
    format!(
        "WITH picked AS (
           SELECT msg_id FROM {q} WHERE vt <= clock_timestamp()
            ORDER BY msg_id LIMIT $1 FOR UPDATE SKIP LOCKED
         )
         UPDATE {q} m SET vt = clock_timestamp() + make_interval(secs => $2),
                read_ct = m.read_ct + 1
          WHERE m.msg_id = ANY (ARRAY(SELECT msg_id FROM picked))
         RETURNING m.msg_id, m.message",
        q = queue.table()
    )
}

/// Claims the step of one message read by [`read_statement`] (`$1` message id, `$2` the
/// message) for worker `$3` with a lease of `$4` seconds, deleting the message if it did.
fn claim_one_statement(queue: &QueueName) -> String {
    format!(
        "WITH claims AS (
           SELECT * FROM tasker.claim_messages(ARRAY[$1::bigint], ARRAY[$2::jsonb], $3, $4)
         ), taken AS (
           DELETE FROM {q}
            WHERE msg_id = $1
              AND EXISTS (SELECT 1 FROM claims c WHERE (c.claim).outcome = '{claimed}')
         )
         SELECT * FROM claims",
        q = queue.table(),
        claimed = CLAIMED,
    )
}

/// Whether a failed statement may have failed for the data of one step it touched (a value
/// too large to build, say) rather than for the connection or the database's state: worth
/// taking apart to find that step. Connection loss, rollbacks (serialization, deadlock),
/// exhausted resources, a shutting-down server, a lock timeout are not.
pub(crate) fn may_be_one_steps_fault(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => !db.code().is_some_and(|c| {
            ["08", "40", "53", "57", "58"]
                .iter()
                .any(|class| c.starts_with(class))
                || c == "55P03"
        }),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => true,
        _ => false,
    }
}

/// One `tasker.message_claim`: a message read, the step it names (None: malformed), and
/// that step's claim.
#[derive(sqlx::FromRow)]
struct ClaimRow {
    msg_id: i64,
    message: serde_json::Value,
    step_uuid: Option<Uuid>,
    claim: Option<StepClaim>,
}

/// A claimed step as it goes to the dispatch channel, entered first among the steps this
/// worker holds.
pub(crate) fn dispatched(
    claim: ClaimedStep,
    queue: &QueueName,
    in_flight: &InFlight,
) -> DispatchedStep {
    let events: Vec<EventDeclaration> =
        serde_json::from_value(claim.publishes_events).unwrap_or_default();
    let dependency_results = match claim.dependency_results {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let context = StepContext {
        task_uuid: claim.task_uuid,
        step_uuid: claim.step_uuid,
        step_name: claim.step_name,
        namespace: claim.namespace,
        task_name: claim.task_name,
        task_version: claim.task_version,
        attempt: claim.attempt,
        max_attempts: claim.max_attempts,
        handler_callable: claim.handler_callable,
        initialization: claim.handler_initialization,
        inputs: claim.inputs,
        task_context: claim.task_context,
        dependency_results,
        timeout_seconds: claim.timeout_seconds.map(|t| t as u64),
    };
    in_flight.insert(
        claim.step_uuid,
        InFlightStep {
            queue: queue.clone(),
            attempt: context.attempt,
            executed: false,
        },
    );
    metrics::counter!(m::STEPS_CLAIMED).increment(1);
    DispatchedStep {
        event_id: Uuid::now_v7(),
        context: Arc::new(context),
        publishes_events: events,
        queue: queue.clone(),
        dispatched_at: Instant::now(),
        lease_expires_at: claim.lease_expires_at,
    }
}

pub struct StepExecutorActor {
    pool: PgPool,
    /// The claims', one at a time, beside the pool (see HotConnection).
    kept: HotConnection,
    queues: QueueClient,
    worker_id: String,
    lease_seconds: i32,
    archive_malformed: bool,
    dispatch: mpsc::Sender<DispatchedStep>,
    in_flight: Arc<InFlight>,
}

impl StepExecutorActor {
    pub fn new(
        pool: PgPool,
        queues: QueueClient,
        worker_id: String,
        lease_seconds: u32,
        archive_malformed: bool,
        dispatch: mpsc::Sender<DispatchedStep>,
        in_flight: Arc<InFlight>,
    ) -> Self {
        Self {
            kept: HotConnection::new(pool.clone()),
            pool,
            queues,
            worker_id,
            lease_seconds: lease_seconds as i32,
            archive_malformed,
            dispatch,
            in_flight,
        }
    }

    pub fn dispatch_sender(&self) -> &mpsc::Sender<DispatchedStep> {
        &self.dispatch
    }

    /// Reads up to `qty` messages of `queue`, claims the steps they name and dispatches the
    /// claimed ones; returns how many messages it read. Should the claim fail in a way one
    /// step's data may cause, the messages are read first and claimed one by one: a step
    /// whose own claim fails is failed (`claim_failed`), and the others run. Otherwise that
    /// step's message would fail every read of the queue, and the namespace would stop.
    pub async fn claim_from_queue(
        &self,
        queue: &QueueName,
        qty: i32,
        visibility_timeout_seconds: i32,
    ) -> Result<usize, sqlx::Error> {
        let sql = claim_statement(queue);
        let mut lease = self.kept.lease().await?;
        let rows: Result<Vec<ClaimRow>, _> = sqlx::query_as(&sql)
            .bind(qty)
            .bind(f64::from(visibility_timeout_seconds))
            .bind(&self.worker_id)
            .bind(self.lease_seconds)
            .fetch_all(&mut *lease)
            .await;
        let rows = lease.settle(rows);
        match rows {
            Ok(rows) => Ok(self.take(queue, rows).await),
            Err(e) if may_be_one_steps_fault(&e) => {
                tracing::warn!(queue = %queue, error = %e, "claiming a batch failed; claiming its steps one by one");
                metrics::counter!(m::CLAIMS_TAKEN_APART).increment(1);
                self.claim_one_by_one(queue, qty, visibility_timeout_seconds)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    async fn claim_one_by_one(
        &self,
        queue: &QueueName,
        qty: i32,
        visibility_timeout_seconds: i32,
    ) -> Result<usize, sqlx::Error> {
        let messages: Vec<(i64, serde_json::Value)> = sqlx::query_as(&read_statement(queue))
            .bind(qty)
            .bind(f64::from(visibility_timeout_seconds))
            .fetch_all(&self.pool)
            .await?;
        let read = messages.len();
        let mut rows = Vec::with_capacity(read);
        let claim_one = claim_one_statement(queue);
        for (msg_id, message) in messages {
            let claimed: Result<Vec<ClaimRow>, _> = sqlx::query_as(&claim_one)
                .bind(msg_id)
                .bind(&message)
                .bind(&self.worker_id)
                .bind(self.lease_seconds)
                .fetch_all(&self.pool)
                .await;
            match claimed {
                Ok(claimed) => rows.extend(claimed),
                Err(e) if may_be_one_steps_fault(&e) => {
                    self.fail_unclaimable(queue, msg_id, &message, &e).await
                }
                // The message stays hidden for the visibility timeout, then is read again.
                Err(e) => {
                    tracing::warn!(queue = %queue, msg_id, error = %e, "claiming a step failed; its message will be read again")
                }
            }
        }
        self.take(queue, rows).await;
        Ok(read)
    }

    /// Fails the step of a message whose claim failed on its own, and deletes the message.
    async fn fail_unclaimable(
        &self,
        queue: &QueueName,
        msg_id: i64,
        message: &serde_json::Value,
        error: &sqlx::Error,
    ) {
        let step = match StepMessage::decode(message) {
            Ok(m) => m.step_uuid,
            Err(e) => return self.reject_malformed(queue, msg_id, &e.to_string()).await,
        };
        metrics::counter!(m::UNCLAIMABLE_STEPS).increment(1);
        tracing::error!(queue = %queue, step = %step, error = %error, "step cannot be claimed; failing it");
        let failed: Result<Option<Uuid>, _> =
            sqlx::query_scalar("SELECT tasker.fail_unclaimable_step($1, $2, $3)")
                .bind(step)
                .bind(&self.worker_id)
                .bind(error.to_string())
                .fetch_one(&self.pool)
                .await;
        match failed {
            Ok(task) => {
                // Failing the step may have finished its task: wake its waiters.
                if let Some(task) = task {
                    self.queues.notifier().task_finished(vec![task]);
                }
                if let Err(e) = self.queues.delete(queue, msg_id, &self.pool).await {
                    tracing::warn!(msg_id, error = %e, "could not delete the failed step's message");
                }
            }
            Err(e) => {
                tracing::warn!(step = %step, error = %e, "could not fail the unclaimable step; its message will be read again")
            }
        }
    }

    /// Dispatches the steps claimed (their messages deleted by the claim), defers the
    /// messages of scheduled ones, drops the rest; returns how many messages there were.
    /// A busy step's message is a stale copy: its claim's holder runs it, and should that
    /// claim be lost, whoever releases the step sends a new message.
    async fn take(&self, queue: &QueueName, rows: Vec<ClaimRow>) -> usize {
        let read = rows.len();
        let mut seen = HashSet::new();
        let mut finished = Vec::new();
        for row in rows {
            let Some(step) = row.step_uuid else {
                let reason = match StepMessage::decode(&row.message) {
                    Err(e) => e.to_string(),
                    Ok(_) => "step_uuid is not a hyphenated UUID".into(),
                };
                self.reject_malformed(queue, row.msg_id, &reason).await;
                continue;
            };
            if !seen.insert(step) {
                // Another message for the same step is being handled in this batch.
                finished.push(row.msg_id);
                continue;
            }
            let wait_until = match row.claim {
                Some(StepClaim::Claimed(claim)) => {
                    self.dispatch_claimed(queue, *claim).await;
                    continue;
                }
                Some(StepClaim::Busy { .. }) => {
                    metrics::counter!(m::CLAIM_CONFLICTS).increment(1);
                    finished.push(row.msg_id);
                    continue;
                }
                Some(StepClaim::Scheduled { run_at }) => run_at,
                other => {
                    let outcome = other.as_ref().map(StepClaim::outcome);
                    tracing::debug!(step = %step, outcome = ?outcome, "step needs no work; dropping message");
                    finished.push(row.msg_id);
                    continue;
                }
            };
            // Scheduled: its task's run_at is later; the message stays hidden until then.
            let wait = wait_until
                .map(|t| (t - Utc::now()).num_seconds().clamp(0, i32::MAX as i64 - 1) as i32 + 1)
                .unwrap_or(self.lease_seconds);
            let _ = self
                .queues
                .extend_visibility(queue, &[row.msg_id], wait)
                .await;
            tracing::debug!(step = %step, wait_seconds = wait, "step not claimable yet; deferring message");
        }
        if !finished.is_empty() {
            let _ = self.queues.delete_batch(queue, &finished, &self.pool).await;
        }
        read
    }

    async fn dispatch_claimed(&self, queue: &QueueName, claim: ClaimedStep) {
        let step = dispatched(claim, queue, &self.in_flight);
        if self.dispatch.send(step).await.is_err() {
            tracing::warn!("dispatch channel closed; claimed step will be handed back");
        }
        m::record_channel(m::DISPATCH_DEPTH, m::DISPATCH_SATURATION, &self.dispatch);
    }

    async fn reject_malformed(&self, queue: &QueueName, msg_id: i64, reason: &str) {
        metrics::counter!(m::MALFORMED_MESSAGES).increment(1);
        tracing::error!(queue = %queue, msg_id, reason, "malformed step message");
        let done = if self.archive_malformed {
            self.queues.archive(queue, msg_id).await
        } else {
            self.queues.delete(queue, msg_id, &self.pool).await
        };
        if let Err(e) = done {
            tracing::warn!(msg_id, error = %e, "could not remove malformed message");
        }
    }
}

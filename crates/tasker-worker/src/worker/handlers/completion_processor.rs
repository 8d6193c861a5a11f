//! CompletionProcessorService: records results from the completion channel, up to
//! `max_concurrent_completions` at once. Recording is one statement (SQL `complete_steps`,
//! with the worker messages of the recorded results deleted beside it): result and audit
//! row, then the result applied
//! as the orchestrator would (step complete, retry scheduled or error, children that became
//! ready enqueued, the task finalized), so a result needs no second hop through the
//! orchestration results queue. It only succeeds while this worker still holds the step's
//! claim. With `[worker] results_via = "orchestration"` the worker only stores the result
//! (SQL `record_step_results`) and sends it to the orchestration results queue, and the
//! orchestrator's ResultProcessor applies it. A result past the payload limits
//! (`max_payload_bytes`, nesting, NUL characters) is replaced by a visible `invalid_result`
//! failure before recording; database errors are retried with backoff until
//! `completion_retry_deadline_ms`, and a result the database refuses outright is replaced
//! the same way.
//! Post-handler callbacks run after the result is recorded.

use super::dispatch_service::{CompletedStep, PostHandlerCallback};
use crate::step::DispatchedStep;
use crate::worker::actors::step_executor_actor::{dispatched, may_be_one_steps_fault};
use crate::worker::domain_event_callback::durable_events;
use crate::worker::in_flight::InFlight;
use crate::worker::worker_metrics as m;
use futures::FutureExt;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::claim::{ClaimedStep, StepClaim};
use tasker_shared::config::{BackoffConfig, ResultsVia};
use tasker_shared::database::HotConnection;
use tasker_shared::outcome::RecordingOutcome;
use tasker_shared::queue::{worker_queue, Notifier, QueueName, ORCHESTRATION_RESULTS_QUEUE};
use tasker_shared::result::{ErrorType, StepError, StepExecutionResult};
use tasker_shared::TaskState;
use tokio::sync::mpsc::Permit;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// Results recorded in one transaction at most.
const MAX_BATCH: usize = 64;
/// A recording starts beside one already running only for at least this many results;
/// fewer wait for the running one and go together in the next. Each recording has a fixed
/// cost in Postgres, so when steps trickle in (tasks created one by one), two small
/// recordings at once cost more than one a little later: measured with 1,000 tasks created
/// one by one, one recording at a time took 12% less Postgres CPU per step.
const CONCURRENT_BATCH_MIN: usize = 16;
/// With no recording running, fewer than [`CONCURRENT_BATCH_MIN`] results wait at most this
/// long for the steps this worker's handlers still have (queued or running) before they are
/// recorded. The roots of a task created in this process finish within a fraction of a
/// millisecond of one another; one recording for all of them costs Postgres one transaction
/// and one commit flush where the first result alone started a recording and the rest
/// waited for the next (1.4 recordings a task).
const LINGER: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    Recorded,
    /// The claim had moved on (lease expired, step re-claimed or cancelled): refused.
    Refused,
    /// Could not reach the database before the deadline.
    GaveUp,
}

/// How results are recorded: the keys of `[worker]` and `ffi_dispatch` that apply here.
#[derive(Debug, Clone)]
pub struct CompletionSettings {
    /// Each post-handler callback gets this long.
    pub callback_timeout: Duration,
    /// Database errors are retried this long before giving up.
    pub retry_deadline: Duration,
    /// Results recorded at once.
    pub concurrency: usize,
    /// Retry delays of failed steps (`[backoff]`), applied as the result is recorded.
    pub backoff: BackoffConfig,
    /// Children a recording readies, taken by this worker in the same transaction.
    pub child_claims: Option<ChildClaims>,
    /// `[worker] max_payload_bytes`: a larger result fails its step with `invalid_result`.
    pub max_payload_bytes: usize,
    /// `[worker] results_via`: whether this worker applies its results or the orchestrator.
    pub results_via: ResultsVia,
}

/// How a recording claims the children it leaves ready, in its namespaces, for this worker:
/// a chain of steps runs on without a queue read and a claim transaction per step. Only
/// as many as the worker could start at once (handlers not busy with a claimed step,
/// within `max_steps_in_flight`, and free slots on the dispatch channel, reserved before
/// the recording so handing them over never waits): the rest go to the queue, for
/// whichever worker is free. None once the worker is stopping.
#[derive(Debug, Clone)]
pub struct ChildClaims {
    /// Weak, so that the recordings do not keep the dispatch channel open at shutdown.
    pub dispatch: mpsc::WeakSender<DispatchedStep>,
    /// `max_concurrent_handlers`: Rust handlers, or Ruby handler threads.
    pub handlers: usize,
    pub max_in_flight: usize,
    pub lease_seconds: i32,
    pub stop: CancellationToken,
}

/// One row of `tasker.complete_steps`: what became of one step's result, or a child it
/// enqueued.
#[derive(sqlx::FromRow)]
struct Completion {
    step_uuid: uuid::Uuid,
    task_uuid: Option<uuid::Uuid>,
    namespace: Option<String>,
    outcome: RecordingOutcome,
    /// The transaction sent worker messages (children enqueued, or an outcome's new steps).
    enqueued: bool,
    /// An enqueued child this worker claimed in the same transaction.
    claim: Option<StepClaim>,
    /// A completed step's task's state once recorded; None where not reported.
    task_state: Option<String>,
}

/// Until when `waiting` results, the oldest of which arrived at `oldest`, wait for the
/// steps whose handlers have not finished (`unfinished`) before they are recorded; None:
/// record them as soon as a transaction is free. Only a small batch with no recording
/// running waits, and only while handlers still have steps.
fn linger_until(
    oldest: Option<Instant>,
    waiting: usize,
    recording: bool,
    unfinished: usize,
    now: Instant,
) -> Option<Instant> {
    let until = oldest? + LINGER;
    (waiting > 0 && waiting < CONCURRENT_BATCH_MIN && !recording && unfinished > 0 && until > now)
        .then_some(until)
}

impl Completion {
    /// Whether the recording may have finished the step's task: its waiters are then told.
    /// A state this build does not know counts as possibly finished: a waiter told once too
    /// often reads the task and waits on; one never told waits for its timeout.
    fn may_finish_task(&self) -> bool {
        self.outcome.settles_step()
            && self
                .task_state
                .as_deref()
                .is_none_or(|s| s.parse::<TaskState>().map_or(true, TaskState::is_terminal))
    }
}

#[derive(Clone)]
pub struct CompletionProcessorService {
    /// The pool, with a connection kept beside it for one recording at a time (concurrent
    /// ones take pooled connections; see HotConnection).
    kept: Arc<HotConnection>,
    notifier: Notifier,
    worker_id: String,
    in_flight: Arc<InFlight>,
    callbacks: Vec<Arc<dyn PostHandlerCallback>>,
    callback_timeout: Duration,
    retry_deadline: Duration,
    concurrency: usize,
    backoff: BackoffConfig,
    child_claims: Option<ChildClaims>,
    max_payload_bytes: usize,
    results_via: ResultsVia,
}

impl CompletionProcessorService {
    pub fn new(
        pool: PgPool,
        notifier: Notifier,
        worker_id: String,
        in_flight: Arc<InFlight>,
        callbacks: Vec<Arc<dyn PostHandlerCallback>>,
        settings: CompletionSettings,
    ) -> Self {
        Self {
            kept: Arc::new(HotConnection::new(pool)),
            notifier,
            worker_id,
            in_flight,
            callbacks,
            callback_timeout: settings.callback_timeout,
            retry_deadline: settings.retry_deadline,
            concurrency: settings.concurrency,
            backoff: settings.backoff,
            child_claims: settings.child_claims,
            max_payload_bytes: settings.max_payload_bytes,
            results_via: settings.results_via,
        }
    }

    /// Runs until every sender of the completion channel is gone and all results are
    /// recorded: shutdown flushes rather than drops. Results are taken off the channel as
    /// they arrive (up to a batch ahead), which marks their steps executed so the worker can
    /// claim more while they wait. With no recording running, results start recording with
    /// every result that arrived by then, once the worker has no step left unfinished or
    /// [`LINGER`] after the first arrived; beside a running one, only once
    /// [`CONCURRENT_BATCH_MIN`] are waiting (and a transaction is free).
    pub async fn run(self, mut receiver: mpsc::Receiver<CompletedStep>) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut running = tokio::task::JoinSet::new();
        let mut waiting: Vec<CompletedStep> = Vec::new();
        let mut open = true;
        // When the oldest of `waiting` arrived.
        let mut oldest: Option<Instant> = None;
        while open || !waiting.is_empty() {
            let linger = open
                .then(|| {
                    linger_until(
                        oldest,
                        waiting.len(),
                        !running.is_empty(),
                        self.in_flight.unexecuted_steps(),
                        Instant::now(),
                    )
                })
                .flatten();
            // A recording hands its permit back before its task ends, so with nothing left
            // to join every permit is free.
            let start = !waiting.is_empty()
                && linger.is_none()
                && (running.is_empty() || waiting.len() >= CONCURRENT_BATCH_MIN);
            tokio::select! {
                biased;
                permit = permits.clone().acquire_owned(), if start => {
                    let permit = permit.expect("never closed");
                    while waiting.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(done) => self.take(&mut waiting, done),
                            Err(_) => break,
                        }
                    }
                    let batch: Vec<_> = waiting.drain(..waiting.len().min(MAX_BATCH)).collect();
                    oldest = (!waiting.is_empty()).then(Instant::now);
                    let this = self.clone();
                    running.spawn(async move {
                        this.handle_batch(batch).await;
                        drop(permit);
                    });
                }
                // A recording ended: what waits for it may start now.
                _ = running.join_next(), if !running.is_empty() => {}
                next = receiver.recv(), if open && waiting.len() < MAX_BATCH => match next {
                    Some(done) => {
                        oldest.get_or_insert_with(Instant::now);
                        self.take(&mut waiting, done);
                    }
                    None => open = false,
                },
                _ = tokio::time::sleep_until(
                    tokio::time::Instant::from_std(linger.unwrap_or_else(Instant::now)),
                ), if linger.is_some() => {}
            }
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
    }

    /// A result that breaks the payload limits is replaced here, before any recording, by
    /// the failure that says why: the database would refuse it, or a reader choke on it.
    fn take(&self, waiting: &mut Vec<CompletedStep>, mut done: CompletedStep) {
        self.in_flight.mark_executed(&done.step.context.step_uuid);
        let succeeded = done.result.success;
        done.result = done.result.within_limits(self.max_payload_bytes);
        if let (true, Some(e)) = (succeeded, &done.result.error) {
            tracing::error!(step = %done.step.context.step_uuid, error = %e.message, "handler result refused");
        }
        waiting.push(done);
    }

    /// Records a batch in one transaction; if that fails, each result on its own (with
    /// retries, and a visible failure for a payload the database refuses).
    pub async fn handle_batch(&self, batch: Vec<CompletedStep>) {
        if batch.len() == 1 {
            let done = batch.into_iter().next().expect("one element");
            self.handle(done).await;
            return;
        }
        match self.record_batch(&batch).await {
            Ok(refused) => {
                for done in batch {
                    let outcome = if refused.contains(&done.step.context.step_uuid) {
                        RecordOutcome::Refused
                    } else {
                        RecordOutcome::Recorded
                    };
                    self.finish(&done, outcome).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, results = batch.len(), "recording a batch failed; recording one by one");
                for done in batch {
                    self.handle(done).await;
                }
            }
        }
    }

    pub async fn handle(&self, done: CompletedStep) -> RecordOutcome {
        let outcome = self.record_with_retry(&done).await;
        self.finish(&done, outcome).await;
        outcome
    }

    async fn finish(&self, done: &CompletedStep, outcome: RecordOutcome) {
        self.in_flight.remove(&done.step.context.step_uuid);
        match outcome {
            RecordOutcome::Recorded => self.run_callbacks(done).await,
            RecordOutcome::Refused => {
                metrics::counter!(m::LATE_RESULTS).increment(1);
                tracing::warn!(
                    step = %done.step.context.step_uuid, attempt = done.step.context.attempt,
                    "result refused: this worker no longer holds the step's claim"
                );
            }
            RecordOutcome::GaveUp => tracing::error!(
                step = %done.step.context.step_uuid,
                "result could not be recorded before the deadline; the step's lease will expire and it will run again"
            ),
        }
    }

    async fn record_batch(&self, batch: &[CompletedStep]) -> Result<Vec<uuid::Uuid>, sqlx::Error> {
        let rows: Vec<serde_json::Value> = batch
            .iter()
            .map(|done| result_row(done, &done.result))
            .collect();
        let steps: Vec<&CompletedStep> = batch.iter().collect();
        let completions = self.complete(rows, &steps, true).await?;
        Ok(completions
            .into_iter()
            .filter(|c| c.outcome == RecordingOutcome::Refused)
            .map(|c| c.step_uuid)
            .collect())
    }

    /// Records and applies results in one transaction, then wakes the workers of the
    /// namespaces that got new steps (only if it enqueued any: most completions make no
    /// new work, and waking for them cost the workers an empty read each) and the waiters
    /// of the tasks that may have finished.
    async fn complete(
        &self,
        rows: Vec<serde_json::Value>,
        steps: &[&CompletedStep],
        claim_children: bool,
    ) -> Result<Vec<Completion>, sqlx::Error> {
        if self.results_via == ResultsVia::Orchestration {
            return self.send_to_orchestration(rows, steps).await;
        }
        // The recorded results have no worker messages left (their claims deleted them).
        // The messages of the children the recording enqueues go into the queues the
        // results came from (a task's steps share its namespace's queue), one static INSERT
        // per queue, rather than by send_step_messages' dynamic SQL.
        let mut by_queue: BTreeMap<&QueueName, Option<&str>> = BTreeMap::new();
        for done in steps {
            let ctx = &done.step.context;
            let namespace = by_queue.entry(&done.step.queue).or_default();
            if worker_queue(&ctx.namespace).is_ok_and(|q| q == done.step.queue) {
                *namespace = Some(&ctx.namespace);
            }
        }
        let send_namespaces: Vec<&str> = by_queue.values().copied().flatten().collect();
        let claims = self
            .child_claims
            .as_ref()
            .filter(|c| claim_children && !c.stop.is_cancelled());
        let dispatch = claims.and_then(|c| c.dispatch.upgrade());
        let mut permits = match (claims, &dispatch) {
            (Some(c), Some(tx)) => {
                // Handlers not busy with a claimed step; messages being read right now
                // count against max_steps_in_flight only.
                let room = c
                    .handlers
                    .saturating_sub(self.in_flight.unexecuted_steps())
                    .min(c.max_in_flight.saturating_sub(self.in_flight.unexecuted()))
                    .min(tx.capacity());
                (room > 0).then(|| tx.try_reserve_many(room).ok()).flatten()
            }
            _ => None,
        };
        let claim_max = permits.as_ref().map_or(0, |p| p.len());
        let sql = recording_statement(by_queue.into_iter());
        let lease_seconds = claims.map_or(0, |c| c.lease_seconds);
        let query = sqlx::query_as::<_, Completion>(&sql)
            .bind(&self.worker_id)
            .bind(serde_json::Value::Array(rows))
            .bind(self.backoff.jitter_ratio)
            .bind(self.backoff.max_retry_after_ms as i64)
            .bind(&send_namespaces)
            .bind(claim_max as i32)
            .bind(lease_seconds);
        // Room held for the children the statement may claim counts against the limit
        // until they are entries of their own.
        self.in_flight.reserve(claim_max);
        let completions = async {
            let mut lease = self.kept.lease().await?;
            let rows = query.fetch_all(&mut *lease).await;
            lease.settle(rows)
        }
        .await;
        self.in_flight.unreserve(claim_max);
        let mut completions = completions?;
        let mut namespaces = BTreeSet::new();
        // Tasks this recording may have finished.
        let mut settled = BTreeSet::new();
        for c in &mut completions {
            if c.outcome == RecordingOutcome::Enqueued {
                // A child this recording enqueued, its message sent by the statement above:
                // this worker's to run if it claimed it, the queue's consumers' otherwise.
                let claim = c.claim.take().and_then(StepClaim::into_claimed);
                match (claim, permits.as_mut().and_then(Iterator::next)) {
                    (Some(claim), Some(permit)) => self.hand_over(claim, c, permit),
                    _ => namespaces.extend(c.namespace.as_deref()),
                }
                continue;
            }
            metrics::counter!("tasker_results_total", "outcome" => c.outcome.as_str()).increment(1);
            if c.may_finish_task() {
                settled.extend(c.task_uuid);
            }
            if c.enqueued && c.outcome != RecordingOutcome::Refused {
                namespaces.extend(c.namespace.as_deref());
            }
        }
        self.notifier.task_finished(settled.into_iter().collect());
        for ns in namespaces {
            if let Ok(queue) = worker_queue(ns) {
                self.notifier.notify(&queue);
            }
        }
        Ok(completions)
    }

    /// Stores the results (`tasker.record_step_results`, which also writes their durable
    /// events and sends each to the orchestration results queue), then wakes the
    /// orchestrator: its ResultProcessor applies them.
    async fn send_to_orchestration(
        &self,
        rows: Vec<serde_json::Value>,
        steps: &[&CompletedStep],
    ) -> Result<Vec<Completion>, sqlx::Error> {
        let mut lease = self.kept.lease().await?;
        let refused = sqlx::query_scalar("SELECT tasker.record_step_results($1, $2)")
            .bind(&self.worker_id)
            .bind(serde_json::Value::Array(rows))
            .fetch_all(&mut *lease)
            .await;
        let refused: Vec<uuid::Uuid> = lease.settle(refused)?;
        let completions: Vec<Completion> = steps
            .iter()
            .map(|done| {
                let ctx = &done.step.context;
                let outcome = if refused.contains(&ctx.step_uuid) {
                    RecordingOutcome::Refused
                } else {
                    RecordingOutcome::Sent
                };
                metrics::counter!("tasker_results_total", "outcome" => outcome.as_str())
                    .increment(1);
                Completion {
                    step_uuid: ctx.step_uuid,
                    task_uuid: Some(ctx.task_uuid),
                    namespace: Some(ctx.namespace.clone()),
                    outcome,
                    enqueued: false,
                    claim: None,
                    task_state: None,
                }
            })
            .collect();
        if completions.len() > refused.len() {
            let queue =
                QueueName::new(ORCHESTRATION_RESULTS_QUEUE).expect("constant queue name is valid");
            self.notifier.notify(&queue);
        }
        Ok(completions)
    }

    /// Puts a child this recording claimed on the dispatch channel, in a slot reserved
    /// before the recording.
    fn hand_over(&self, claim: ClaimedStep, c: &Completion, permit: Permit<'_, DispatchedStep>) {
        let Some(queue) = c.namespace.as_deref().and_then(|ns| worker_queue(ns).ok()) else {
            tracing::error!(step = %c.step_uuid, "claimed child without a namespace; its lease will expire and it will run again");
            return;
        };
        permit.send(dispatched(claim, &queue, &self.in_flight));
        metrics::counter!(m::CHILDREN_CLAIMED).increment(1);
    }

    async fn record_with_retry(&self, done: &CompletedStep) -> RecordOutcome {
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut result = done.result.clone();
        let mut cleaned = false;
        let mut claim_children = true;
        loop {
            match self.record(done, &result, claim_children).await {
                Ok(true) => return RecordOutcome::Recorded,
                Ok(false) => return RecordOutcome::Refused,
                Err(e) if claim_children && may_be_one_steps_fault(&e) => {
                    // The children this recording claims may be what fails (a convergence
                    // step whose parents' results are too large to gather): recorded
                    // without claiming them, they go to the queue, where a claim that
                    // fails fails only its own step.
                    tracing::warn!(step = %done.step.context.step_uuid, error = %e, "recording failed; recording again without claiming the children it readies");
                    claim_children = false;
                }
                Err(sqlx::Error::Database(e))
                    if is_data_error(e.code().as_deref()) && result.success =>
                {
                    // The payload itself is unacceptable (e.g. a NUL in a string): record a
                    // failure that says so instead of retrying something that cannot work.
                    tracing::error!(step = %done.step.context.step_uuid, error = %e, "result payload refused by the database");
                    result = StepExecutionResult::failure(
                        result.step_uuid,
                        StepError::new(
                            ErrorType::InvalidResult,
                            format!("the handler's result could not be stored: {e}"),
                        ),
                        result.metadata.clone(),
                    );
                }
                Err(sqlx::Error::Database(e))
                    if is_data_error(e.code().as_deref()) && !result.success && !cleaned =>
                {
                    // A failure the database refuses (a NUL in its message, most often) is
                    // stored with such characters replaced, not retried until the deadline
                    // and dropped.
                    tracing::warn!(step = %done.step.context.step_uuid, error = %e, "failure refused by the database; storing it with NUL characters replaced");
                    result = result.without_nul_characters();
                    cleaned = true;
                }
                Err(e) => {
                    metrics::counter!(m::RECORD_RETRIES).increment(1);
                    if start.elapsed() + delay > self.retry_deadline {
                        tracing::error!(step = %done.step.context.step_uuid, error = %e, "giving up recording result");
                        return RecordOutcome::GaveUp;
                    }
                    tracing::warn!(step = %done.step.context.step_uuid, error = %e, retry_in_ms = delay.as_millis() as u64, "recording result failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn record(
        &self,
        done: &CompletedStep,
        result: &StepExecutionResult,
        claim_children: bool,
    ) -> Result<bool, sqlx::Error> {
        let completions = self
            .complete(vec![result_row(done, result)], &[done], claim_children)
            .await?;
        Ok(completions
            .iter()
            .all(|c| c.outcome != RecordingOutcome::Refused))
    }

    /// The result is already recorded: a callback that fails, panics or overruns its
    /// timeout is logged and can no longer affect the step.
    async fn run_callbacks(&self, done: &CompletedStep) {
        for cb in &self.callbacks {
            let fut =
                AssertUnwindSafe(cb.on_handler_complete(&done.step, &done.result)).catch_unwind();
            match tokio::time::timeout(self.callback_timeout, fut).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    tracing::error!(callback = cb.name(), step = %done.step.context.step_uuid, "post-handler callback panicked")
                }
                Err(_) => {
                    tracing::warn!(callback = cb.name(), step = %done.step.context.step_uuid, "post-handler callback timed out")
                }
            }
        }
    }
}

/// The recording statement for results from these queues: `tasker.complete_steps` ($1-$7),
/// then, for a queue whose namespace the caller knows, a static INSERT of the messages of
/// the children the recording enqueued in that namespace and did not claim for this worker
/// (a claimed step has no message). Returns complete_steps' rows.
pub fn recording_statement<'a>(
    queues: impl Iterator<Item = (&'a QueueName, Option<&'a str>)>,
) -> String {
    let mut sql = String::from(
        "WITH done AS MATERIALIZED (
           SELECT * FROM tasker.complete_steps($1, $2, $3, $4, $5, $6, $7))",
    );
    for (i, (queue, namespace)) in queues.enumerate() {
        // A namespace the caller does not know had its messages sent by complete_steps.
        // One it knows is its worker queue's, an identifier (QueueName), safe as a literal.
        let Some(namespace) = namespace else { continue };
        sql.push_str(&format!(
            ", sent_{i} AS (INSERT INTO {table} (vt, message)
                 SELECT clock_timestamp(), d.message
                   FROM done d
                  WHERE d.outcome = '{enqueued}' AND d.namespace = '{namespace}'
                    AND (d.claim).step_uuid IS NULL)",
            table = queue.table(),
            enqueued = RecordingOutcome::Enqueued,
        ));
    }
    sql.push_str(
        " SELECT d.step_uuid, d.task_uuid, d.namespace, d.outcome, d.enqueued, d.claim,
                 d.task_state
            FROM done d",
    );
    sql
}

/// A result as `tasker.complete_steps` takes it, with the durable domain events it publishes, which the recording writes to the
/// namespace's events queue.
fn result_row(done: &CompletedStep, result: &StepExecutionResult) -> serde_json::Value {
    let ctx = &done.step.context;
    let mut row = serde_json::json!({
        "step_uuid": ctx.step_uuid, "attempt": ctx.attempt, "success": result.success,
        "result": result.result, "error": result.error,
        "execution_ms": result.metadata.execution_time_ms, "metadata": result.metadata,
        "outcome": result.outcome,
    });
    let events = durable_events(&done.step, result);
    if !events.is_empty() {
        row["events"] = serde_json::json!(events);
        row["events_namespace"] = serde_json::json!(ctx.namespace);
    }
    row
}

/// SQLSTATE class 22 (data exception): the value, not the connection, is the problem.
fn is_data_error(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("22"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(outcome: RecordingOutcome, task_state: Option<&str>) -> Completion {
        Completion {
            step_uuid: uuid::Uuid::now_v7(),
            task_uuid: Some(uuid::Uuid::now_v7()),
            namespace: Some("ns".into()),
            outcome,
            enqueued: false,
            claim: None,
            task_state: task_state.map(Into::into),
        }
    }

    #[test]
    fn a_small_batch_waits_for_running_handlers_for_a_moment_only() {
        let t0 = Instant::now();
        let soon = t0 + LINGER / 2;
        assert_eq!(
            linger_until(Some(t0), 3, false, 7, soon),
            Some(t0 + LINGER),
            "three results wait for the seven steps still with handlers"
        );
        for (why, oldest, waiting, recording, unfinished, now) in [
            ("nothing waits", None, 0, false, 7, soon),
            ("every handler is done", Some(t0), 3, false, 0, soon),
            ("the moment has passed", Some(t0), 3, false, 7, t0 + LINGER),
            (
                "the batch is big enough",
                Some(t0),
                CONCURRENT_BATCH_MIN,
                false,
                7,
                soon,
            ),
            // It waits for that recording anyway (CONCURRENT_BATCH_MIN).
            ("a recording is running", Some(t0), 3, true, 7, soon),
        ] {
            assert_eq!(
                linger_until(oldest, waiting, recording, unfinished, now),
                None,
                "{why}"
            );
        }
    }

    #[test]
    fn waiters_are_told_of_tasks_a_recording_may_have_finished_only() {
        use RecordingOutcome::*;
        for (outcome, state, told) in [
            (Completed, Some("steps_in_process"), false),
            (Completed, Some("complete"), true),
            (Completed, Some("error"), true),
            (Completed, Some("a_state_added_later"), true),
            // A failure's task state is not reported: it may have failed the task.
            (Failed, None, true),
            (RetryScheduled, None, false),
            (Refused, None, false),
            (Ignored, None, false),
        ] {
            assert_eq!(
                completion(outcome, state).may_finish_task(),
                told,
                "{outcome} with task state {state:?}"
            );
        }
    }
}

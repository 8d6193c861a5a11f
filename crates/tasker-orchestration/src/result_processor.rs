//! Consumes the orchestration results queue. A batch of result messages is applied in one
//! transaction per group of tasks (SQL `process_step_results`): each step moves to complete,
//! waiting_for_retry (with backoff) or error, every task touched is finalized once, and the
//! messages are deleted. Duplicate and stale messages change nothing.

use crate::OrchestrationError;
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use tasker_shared::config::BackoffConfig;
use tasker_shared::messages::StepResultMessage;
use tasker_shared::outcome::RecordingOutcome;
use tasker_shared::queue::{worker_queue, QueueClient, QueueName, QueuedMessage};

/// What became of one result message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultOutcome {
    /// Recorded: what the recording did with its step.
    Recorded(RecordingOutcome),
    /// The body could not be decoded; archived.
    Malformed,
}

#[derive(Clone)]
pub struct ResultProcessor {
    pool: PgPool,
    queues: QueueClient,
    queue: QueueName,
    backoff: BackoffConfig,
    actor: String,
    concurrency: usize,
}

#[derive(sqlx::FromRow)]
struct Applied {
    msg_id: i64,
    task_uuid: uuid::Uuid,
    namespace: Option<String>,
    outcome: RecordingOutcome,
}

impl ResultProcessor {
    pub fn new(
        pool: PgPool,
        queues: QueueClient,
        queue: QueueName,
        backoff: BackoffConfig,
        actor: String,
        concurrency: usize,
    ) -> Self {
        Self {
            pool,
            queues,
            queue,
            backoff,
            actor,
            concurrency: concurrency.max(1),
        }
    }

    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    /// Handles one message (see [`ResultProcessor::process_batch`]).
    pub async fn process(
        &self,
        message: &QueuedMessage,
    ) -> Result<ResultOutcome, OrchestrationError> {
        let outcomes = self.process_batch(std::slice::from_ref(message)).await?;
        Ok(outcomes
            .get(&message.msg_id)
            .copied()
            .unwrap_or(ResultOutcome::Recorded(RecordingOutcome::Ignored)))
    }

    /// Applies a batch. Messages are split by task into up to `concurrency` groups that run
    /// in parallel, each in its own transaction (groups share no task, so they never wait on
    /// each other). On a database error that group commits nothing and its messages reappear
    /// after their visibility timeout.
    pub async fn process_batch(
        &self,
        messages: &[QueuedMessage],
    ) -> Result<HashMap<i64, ResultOutcome>, OrchestrationError> {
        let mut outcomes = HashMap::with_capacity(messages.len());
        let mut groups: Vec<Vec<serde_json::Value>> = vec![Vec::new(); self.concurrency];
        for m in messages {
            match StepResultMessage::decode(&m.message) {
                Ok(r) => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    r.task_uuid.hash(&mut h);
                    groups[(h.finish() as usize) % self.concurrency].push(serde_json::json!({
                        "msg_id": m.msg_id, "task_uuid": r.task_uuid, "step_uuid": r.step_uuid,
                        "attempt": r.attempt, "success": r.success, "worker_id": r.worker_id,
                    }));
                }
                Err(e) => {
                    tracing::error!(msg_id = m.msg_id, error = %e, "archiving malformed result message");
                    self.queues.archive(&self.queue, m.msg_id).await?;
                    outcomes.insert(m.msg_id, ResultOutcome::Malformed);
                    metrics::counter!("tasker_results_total", "outcome" => "malformed")
                        .increment(1);
                }
            }
        }
        let runs = groups
            .into_iter()
            .filter(|g| !g.is_empty())
            .map(|g| self.apply(g));
        let mut namespaces = BTreeSet::new();
        let mut settled = BTreeSet::new();
        let mut first_error = None;
        for applied in futures::future::join_all(runs).await {
            match applied {
                Ok(rows) => {
                    for row in rows {
                        let outcome = row.outcome;
                        metrics::counter!("tasker_results_total", "outcome" => outcome.as_str())
                            .increment(1);
                        if outcome.settles_step() {
                            settled.insert(row.task_uuid);
                        }
                        if outcome != RecordingOutcome::Ignored {
                            namespaces.extend(row.namespace);
                        } else {
                            tracing::debug!(
                                msg_id = row.msg_id,
                                "ignored duplicate or stale result"
                            );
                        }
                        outcomes.insert(row.msg_id, ResultOutcome::Recorded(outcome));
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Those of these tasks that finalizing finished wake their waiters.
        self.queues
            .notifier()
            .task_finished(settled.into_iter().collect());
        // Finalizing may have enqueued children: wake those namespaces' workers.
        for ns in namespaces {
            if let Ok(queue) = worker_queue(&ns) {
                self.queues.notify(&queue);
            }
        }
        match first_error {
            Some(e) if outcomes.is_empty() => Err(e),
            Some(e) => {
                tracing::warn!(error = %e, "part of a result batch failed; it will be redelivered");
                Ok(outcomes)
            }
            None => Ok(outcomes),
        }
    }

    async fn apply(
        &self,
        group: Vec<serde_json::Value>,
    ) -> Result<Vec<Applied>, OrchestrationError> {
        Ok(sqlx::query_as(
            "SELECT msg_id, task_uuid, namespace, outcome FROM tasker.process_step_results($1, $2, $3, $4)",
        )
        .bind(serde_json::Value::Array(group))
        .bind(&self.actor)
        .bind(self.backoff.jitter_ratio)
        .bind(self.backoff.max_retry_after_ms as i64)
        .fetch_all(&self.pool)
        .await?)
    }
}

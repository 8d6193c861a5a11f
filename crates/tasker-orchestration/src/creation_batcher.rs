//! CreationBatcher: requests to create fixed-DAG tasks that arrive while others are being
//! created share one statement (`tasker.create_tasks`), one transaction and one commit.
//! Nothing waits to fill a batch: a request goes as soon as a batch slot is free, with
//! whatever else arrived meanwhile, so a lone request costs one hop more, not a delay.

use crate::task_request::{CreatedTask, TASKS_CREATED};
use crate::task_spec::TaskSpec;
use std::collections::HashMap;
use std::sync::Arc;
use tasker_shared::queue::{worker_queue, Notifier};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

/// Requests waiting for a batch; beyond this a request is created on its own.
const CAPACITY: usize = 1_000;
/// Batch statements running at once: one fills while the other runs.
const CONCURRENT_BATCHES: usize = 2;
/// A batch stops taking requests at this many tasks or steps.
const MAX_BATCH_TASKS: usize = 200;
const MAX_BATCH_STEPS: usize = 5_000;

pub const BATCH_SIZE: &str = "tasker_task_creation_batch_size";
pub const WAITING: &str = "tasker_task_creation_waiting";
pub const OVERFLOW: &str = "tasker_task_creation_overflow_total";

/// One fixed-DAG task to create, with at least one root step.
pub(crate) struct BatchItem {
    pub namespace: String,
    pub task: TaskSpec,
}

struct Waiting {
    item: BatchItem,
    /// The item comes back when the batch's statement failed: the caller creates the task
    /// on its own (so that it gets its own error, if it has one).
    reply: oneshot::Sender<Result<CreatedTask, BatchItem>>,
}

#[derive(Clone)]
pub(crate) struct CreationBatcher {
    tx: mpsc::Sender<Waiting>,
}

impl CreationBatcher {
    /// Must be called inside a tokio runtime. The batching loop ends when the last clone
    /// of this batcher is dropped, after the batches it started.
    pub fn spawn(pool: sqlx::PgPool, actor: String, notifier: Notifier) -> Self {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let creator = Creator {
            pool,
            actor,
            notifier,
        };
        tokio::spawn(run(creator, rx));
        Self { tx }
    }

    /// The created task, or the item back when the batch could not take it (too many
    /// waiting, the loop gone with its runtime, or the batch's statement failed): the
    /// caller then creates it on its own. `None` if the batch ended without replying (its
    /// task panicked or its runtime stopped).
    pub async fn create(&self, item: BatchItem) -> Option<Result<CreatedTask, BatchItem>> {
        let (reply, created) = oneshot::channel();
        match self.tx.try_send(Waiting { item, reply }) {
            Ok(()) => created.await.ok(),
            Err(mpsc::error::TrySendError::Full(w)) => {
                metrics::counter!(OVERFLOW).increment(1);
                Some(Err(w.item))
            }
            Err(mpsc::error::TrySendError::Closed(w)) => Some(Err(w.item)),
        }
    }
}

async fn run(creator: Creator, mut rx: mpsc::Receiver<Waiting>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_BATCHES));
    let mut running = JoinSet::new();
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        // Whatever arrived while a slot was taken joins this batch.
        let mut steps = first.item.task.steps.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_TASKS && steps < MAX_BATCH_STEPS {
            let Ok(next) = rx.try_recv() else { break };
            steps += next.item.task.steps.len();
            batch.push(next);
        }
        metrics::gauge!(WAITING).set(rx.len() as f64);
        metrics::histogram!(BATCH_SIZE).record(batch.len() as f64);
        let creator = creator.clone();
        running.spawn(async move {
            creator.create_all(batch).await;
            drop(slot);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

#[derive(Clone)]
struct Creator {
    pool: sqlx::PgPool,
    actor: String,
    notifier: Notifier,
}

impl Creator {
    /// One statement per namespace (its worker messages go to that namespace's queue).
    async fn create_all(&self, batch: Vec<Waiting>) {
        let mut by_namespace: HashMap<String, Vec<Waiting>> = HashMap::new();
        for w in batch {
            by_namespace
                .entry(w.item.namespace.clone())
                .or_default()
                .push(w);
        }
        for (namespace, group) in by_namespace {
            match self.create_group(&namespace, &group).await {
                Ok(rows) => {
                    let mut created_any = false;
                    let mut by_idx: HashMap<i32, CreatedTask> = rows
                        .into_iter()
                        .map(|(idx, task_uuid, created, state)| {
                            created_any |= created;
                            (
                                idx,
                                CreatedTask {
                                    task_uuid,
                                    created,
                                    state,
                                },
                            )
                        })
                        .collect();
                    if created_any {
                        if let Ok(queue) = worker_queue(&namespace) {
                            self.notifier.notify(&queue);
                        }
                    }
                    for (i, w) in group.into_iter().enumerate() {
                        let created = by_idx.remove(&(i as i32 + 1)).ok_or(w.item);
                        if created.as_ref().is_ok_and(|c| c.created) {
                            metrics::counter!(TASKS_CREATED, "namespace" => namespace.clone())
                                .increment(1);
                        }
                        let _ = w.reply.send(created);
                    }
                }
                Err(e) => {
                    tracing::warn!(namespace = %namespace, tasks = group.len(), error = %e,
                        "creating tasks together failed; creating each on its own");
                    for w in group {
                        let _ = w.reply.send(Err(w.item));
                    }
                }
            }
        }
    }

    async fn create_group(
        &self,
        namespace: &str,
        group: &[Waiting],
    ) -> Result<Vec<(i32, Uuid, bool, String)>, sqlx::Error> {
        let tasks: Vec<&TaskSpec> = group.iter().map(|w| &w.item.task).collect();
        sqlx::query_as("SELECT idx, task_uuid, created, state FROM tasker.create_tasks($1, $2, $3)")
            .bind(namespace)
            .bind(&self.actor)
            .bind(tasks)
            .fetch_all(&self.pool)
            .await
    }
}

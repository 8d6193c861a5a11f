//! The batched import example (config/tasks/batched_import.yaml): a batchable step, its
//! batch workers and a deferred convergence over their results.

use serde_json::json;
use tasker_worker::{batch_ranges, HandlerError, HandlerOutput, StepContext, StepHandler};

fn context_int(step: &StepContext, key: &str) -> Result<u64, HandlerError> {
    step.task_context
        .get(key)
        .and_then(|v| v.as_u64())
        .ok_or_else(|| {
            HandlerError::permanent(format!("context has no non-negative integer '{key}'"))
        })
}

/// Splits `rows` rows into batches of `batch_size`.
pub struct Plan;

#[async_trait::async_trait]
impl StepHandler for Plan {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let rows = context_int(step, "rows")?;
        let size = context_int(step, "batch_size")?.max(1);
        Ok(HandlerOutput::new(json!({ "total": rows })).with_batches(batch_ranges(rows, size)))
    }
}

/// "Imports" rows start_cursor..end_cursor of its batch; row i holds the number i.
pub struct ProcessBatch;

#[async_trait::async_trait]
impl StepHandler for ProcessBatch {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let batch = step
            .batch()
            .ok_or_else(|| HandlerError::permanent("step has no batch (is it a batch worker?)"))?;
        let cursor = |k: &str| {
            batch[k]
                .as_u64()
                .ok_or_else(|| HandlerError::permanent(format!("batch has no integer '{k}'")))
        };
        let (start, end) = (cursor("start_cursor")?, cursor("end_cursor")?);
        let sum: u64 = (start..end).sum();
        Ok(HandlerOutput::new(json!({
            "batch_id": batch["batch_id"],
            "count": end.saturating_sub(start),
            "sum": sum,
        })))
    }
}

/// Adds up the batch workers' counts and sums, in batch order.
pub struct Aggregate;

#[async_trait::async_trait]
impl StepHandler for Aggregate {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let results = step.batch_results("process_batch");
        let total = |k: &str| results.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
        let order: Vec<&serde_json::Value> = results.iter().map(|r| &r["batch_id"]).collect();
        Ok(HandlerOutput::new(json!({
            "batches": results.len(),
            "count": total("count"),
            "sum": total("sum"),
            "batch_ids": order,
        })))
    }
}

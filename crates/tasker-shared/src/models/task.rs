use super::{StepRow, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Executor, PgPool, Postgres};
use uuid::Uuid;

/// A task with the identity of its template: a row of the view `tasker.task_rows`, read by
/// column name or, as a whole (`SELECT t`), as its row type, field by field in the view's
/// column order.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, sqlx::Type)]
#[sqlx(type_name = "tasker.task_rows", no_pg_array)]
pub struct TaskRow {
    pub task_uuid: Uuid,
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub state: String,
    pub context: serde_json::Value,
    pub correlation_id: Uuid,
    pub idempotency_key: Option<String>,
    pub initiator: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// A scheduled task: no step starts before this time.
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
}

/// The view names the columns once, for these reads and `tasker.create_task`'s with `p_read`.
const SELECT: &str = "SELECT * FROM tasker.task_rows t";

impl TaskRow {
    pub async fn find<'c, E: Executor<'c, Database = Postgres>>(
        executor: E,
        task: Uuid,
    ) -> Result<Option<Self>, StoreError> {
        Ok(sqlx::query_as(&format!("{SELECT} WHERE t.task_uuid = $1"))
            .bind(task)
            .fetch_optional(executor)
            .await?)
    }

    /// The task and its steps (ordered as [`StepRow::for_task`] orders them) from one
    /// statement, so both come from the same snapshot and cost one round trip.
    pub async fn find_with_steps<'c, E: Executor<'c, Database = Postgres>>(
        executor: E,
        task: Uuid,
    ) -> Result<Option<(Self, Vec<StepRow>)>, StoreError> {
        Ok(Self::find_with(executor, task, false)
            .await?
            .map(|(t, steps)| (t, steps.unwrap_or_default())))
    }

    /// The task, and its steps too if it is terminal, from one statement: for a waiter,
    /// whose reads of an unfinished task need only its state.
    pub async fn find_with_steps_if_terminal<'c, E: Executor<'c, Database = Postgres>>(
        executor: E,
        task: Uuid,
    ) -> Result<Option<(Self, Option<Vec<StepRow>>)>, StoreError> {
        Self::find_with(executor, task, true).await
    }

    async fn find_with<'c, E: Executor<'c, Database = Postgres>>(
        executor: E,
        task: Uuid,
        only_if_terminal: bool,
    ) -> Result<Option<(Self, Option<Vec<StepRow>>)>, StoreError> {
        // The rows as their views' row types, in the binary format: Postgres spent most of
        // this statement writing them out as JSON (timestamps above all), and the client
        // as much again parsing that back.
        sqlx::query_as(
            "SELECT t,
                    CASE WHEN NOT $2 OR t.state = ANY ($3) THEN
                      (SELECT coalesce(array_agg(s ORDER BY s.position, s.name), '{}')
                         FROM tasker.step_rows s WHERE s.task_uuid = t.task_uuid)
                    END
               FROM tasker.task_rows t WHERE t.task_uuid = $1",
        )
        .bind(task)
        .bind(only_if_terminal)
        .bind(&crate::task_waiter::TERMINAL_TASK_STATES[..])
        .fetch_optional(executor)
        .await
        .map_err(|e| StoreError::undecodable(e, "task", task))
    }

    /// The task; for one that is not there, [`StoreError::Removed`] when retention removed
    /// it, else [`StoreError::NotFound`].
    pub async fn get(pool: &PgPool, task: Uuid) -> Result<Self, StoreError> {
        match Self::find(pool, task).await? {
            Some(row) => Ok(row),
            None => Err(super::missing_task(pool, task).await),
        }
    }

    /// Newest first, optionally filtered by state and namespace.
    pub async fn list<'c, E: Executor<'c, Database = Postgres>>(
        executor: E,
        state: Option<&str>,
        namespace: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Self>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "{SELECT} WHERE ($1::text IS NULL OR t.state = $1) AND ($2::text IS NULL OR t.namespace = $2)
              ORDER BY t.created_at DESC, t.task_uuid DESC LIMIT $3 OFFSET $4"
        ))
        .bind(state)
        .bind(namespace)
        .bind(limit)
        .bind(offset)
        .fetch_all(executor)
        .await?)
    }

    pub fn task_state(&self) -> Result<crate::state::TaskState, StoreError> {
        Ok(self.state.parse()?)
    }
}

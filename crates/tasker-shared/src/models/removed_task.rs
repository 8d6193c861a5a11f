//! Tasks retention removed: what asking for one answers instead of "not found".

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use std::fmt;
use uuid::Uuid;

/// The schema retention's archive mode moves tasks to.
pub const ARCHIVE_SCHEMA: &str = "tasker_archive";

/// A task removed by retention: its tombstone (`tasker.removed_tasks`), or, once that is
/// pruned, its row in the archive.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RemovedTask {
    pub task_uuid: Uuid,
    /// The final state it was removed in.
    pub state: String,
    /// `None` when only the archive still knows the task.
    pub removed_at: Option<DateTime<Utc>>,
    /// Its rows are in [`ARCHIVE_SCHEMA`].
    pub archived: bool,
}

impl RemovedTask {
    pub async fn find(pool: &PgPool, task: Uuid) -> Result<Option<Self>, sqlx::Error> {
        sqlx::query_as(
            "SELECT r.task_uuid, r.state, r.removed_at, r.archived
               FROM tasker.removed_tasks r WHERE r.task_uuid = $1
             UNION ALL
             SELECT a.task_uuid, a.state, NULL, true
               FROM tasker_archive.tasks a WHERE a.task_uuid = $1
             LIMIT 1",
        )
        .bind(task)
        .fetch_optional(pool)
        .await
    }
}

impl fmt::Display for RemovedTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} was removed by retention ({}",
            self.task_uuid, self.state
        )?;
        if let Some(at) = self.removed_at {
            write!(f, ", removed {}", at.format("%Y-%m-%d %H:%M:%S UTC"))?;
        }
        if self.archived {
            write!(
                f,
                "); it is archived: SELECT * FROM {ARCHIVE_SCHEMA}.task_rows WHERE task_uuid = '{}' \
                 (its steps, transitions and results are in the other {ARCHIVE_SCHEMA} tables)",
                self.task_uuid
            )
        } else {
            write!(f, "); its rows were deleted")
        }
    }
}

/// The error for a task that is not in the live tables: removed by retention, or unknown.
pub async fn missing_task(pool: &PgPool, task: Uuid) -> StoreError {
    match RemovedTask::find(pool, task).await {
        Ok(Some(removed)) => StoreError::Removed(removed),
        Ok(None) => StoreError::NotFound {
            what: "task",
            id: task.to_string(),
        },
        Err(e) => StoreError::Database(e),
    }
}

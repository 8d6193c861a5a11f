//! Retention: finished tasks are kept for their final state's period (`[retention]`), then
//! removed, or moved to the `tasker_archive` schema, a batch of tasks per transaction
//! (`tasker.remove_finished_tasks`). Run every `interval_seconds` by the orchestrator and by
//! `tasker retention run`. Open tasks are never removed, however old. Durable domain events
//! older than `domain_events_after` go too, so a queue nobody consumes stays bounded.

use serde::Serialize;
use sqlx::PgPool;
use std::time::Duration;
use tasker_shared::config::{Period, RetentionConfig, RetentionMode};
use tokio_util::sync::CancellationToken;

/// Tasks removed in delete mode, by final state.
pub const TASKS_REMOVED: &str = "tasker_retention_tasks_removed_total";
/// Tasks moved to the archive in archive mode, by final state.
pub const TASKS_ARCHIVED: &str = "tasker_retention_tasks_archived_total";
/// Durable domain events deleted past `domain_events_after`, from queues and their archives.
pub const DOMAIN_EVENTS_REMOVED: &str = "tasker_retention_domain_events_removed_total";

/// How long the counts of recorded steps (`tasker.step_recordings`, a row per recording) are
/// kept: the dashboard reads their last ten minutes.
pub const RECORDING_COUNTS_KEPT: Duration = Duration::from_secs(3600);

/// The final states, each kept for the period `RetentionConfig::period_of` gives it.
pub const FINAL_STATES: [&str; 4] = ["complete", "error", "resolved_manually", "cancelled"];

/// What a run did (or, dry, would do) for one final state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateReport {
    pub state: &'static str,
    pub period: Period,
    pub tasks: u64,
}

/// What a run did, or a dry run found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetentionReport {
    pub mode: RetentionMode,
    pub dry_run: bool,
    pub states: Vec<StateReport>,
    /// Tombstones of tasks removed longer ago than `tombstone_after`, forgotten.
    pub tombstones_pruned: u64,
    /// Rows of `tasker.step_recordings` (the dashboard's recent counts) older than
    /// [`RECORDING_COUNTS_KEPT`], deleted.
    pub recording_counts_pruned: u64,
    /// Durable domain events sent longer ago than `domain_events_after`, deleted from their
    /// queues and the queues' archives.
    pub domain_events_removed: u64,
    /// The run stopped at shutdown before it was through.
    pub interrupted: bool,
    /// What a removal's page images are written to the WAL with ([`removal_wal_compression`]).
    pub wal_compression: String,
}

impl RetentionReport {
    pub fn tasks(&self) -> u64 {
        self.states.iter().map(|s| s.tasks).sum()
    }
}

/// What a removal compresses the page images in its WAL with (a page's first change after a
/// checkpoint logs it whole; those are most of a removal's WAL): the server's
/// `wal_compression` when that is on; else, where the role may set it (a superuser, or `GRANT
/// SET ON PARAMETER wal_compression`), what `tasker.remove_finished_tasks` sets for itself,
/// lz4 where the server has it; else "off".
pub async fn removal_wal_compression(pool: &PgPool) -> Result<String, sqlx::Error> {
    let (setting, values, version): (String, Option<Vec<String>>, i32) = sqlx::query_as(
        "SELECT setting, enumvals, current_setting('server_version_num')::integer
           FROM pg_settings WHERE name = 'wal_compression'",
    )
    .fetch_one(pool)
    .await?;
    if setting != "off" {
        return Ok(setting);
    }
    // Parameter privileges came with Postgres 15; before, only a superuser may.
    let may_set: bool = if version >= 150000 {
        sqlx::query_scalar("SELECT has_parameter_privilege('wal_compression', 'SET')")
    } else {
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    }
    .fetch_one(pool)
    .await?;
    Ok(match (may_set, values) {
        (false, _) => "off",
        (true, Some(values)) if values.iter().any(|v| v == "lz4") => "lz4",
        (true, _) => "pglz",
    }
    .into())
}

/// Counts, per final state, the tasks a run would remove now; removes nothing.
pub async fn dry_run(
    pool: &PgPool,
    config: &RetentionConfig,
) -> Result<RetentionReport, sqlx::Error> {
    let mut states = Vec::new();
    for (state, period) in periods(config) {
        // The range of tasks_finished_idx a run would take.
        let tasks: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasker.tasks
              WHERE state = $1 AND completed_at < now() - $2::interval",
        )
        .bind(state)
        .bind(period.as_duration())
        .fetch_one(pool)
        .await?;
        states.push(StateReport {
            state,
            period,
            tasks: tasks as u64,
        });
    }
    let tombstones: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.removed_tasks WHERE removed_at < now() - $1::interval",
    )
    .bind(config.tombstone_after.as_duration())
    .fetch_one(pool)
    .await?;
    let mut events = 0;
    for table in event_tables(pool).await? {
        let old: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM pgmq.{table} WHERE enqueued_at < now() - $1::interval"
        ))
        .bind(config.domain_events_after.as_duration())
        .fetch_one(pool)
        .await?;
        events += old as u64;
    }
    let recordings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.step_recordings WHERE recorded_at < now() - $1::interval",
    )
    .bind(RECORDING_COUNTS_KEPT)
    .fetch_one(pool)
    .await?;
    Ok(RetentionReport {
        mode: config.mode,
        dry_run: true,
        states,
        tombstones_pruned: tombstones as u64,
        recording_counts_pruned: recordings as u64,
        domain_events_removed: events,
        interrupted: false,
        wal_compression: removal_wal_compression(pool).await?,
    })
}

/// Removes every task past its period, a batch per transaction, state by state, then prunes
/// old tombstones. `stop` is looked at between batches: a run cut short has committed what
/// it removed, and the next run carries on.
pub async fn run_once(
    pool: &PgPool,
    config: &RetentionConfig,
    stop: &CancellationToken,
) -> Result<RetentionReport, sqlx::Error> {
    let archive = config.mode == RetentionMode::Archive;
    let counter = if archive {
        TASKS_ARCHIVED
    } else {
        TASKS_REMOVED
    };
    let batch = config.batch_size as i32;
    let mut report = RetentionReport {
        mode: config.mode,
        dry_run: false,
        states: Vec::new(),
        tombstones_pruned: 0,
        recording_counts_pruned: 0,
        domain_events_removed: 0,
        interrupted: false,
        wal_compression: removal_wal_compression(pool).await?,
    };
    for (state, period) in periods(config) {
        let mut tasks = 0u64;
        loop {
            if stop.is_cancelled() {
                report.interrupted = true;
                break;
            }
            let removed: i32 =
                sqlx::query_scalar("SELECT tasker.remove_finished_tasks($1, $2, $3, $4)")
                    .bind(state)
                    .bind(period.as_duration())
                    .bind(batch)
                    .bind(archive)
                    .fetch_one(pool)
                    .await?;
            tasks += removed as u64;
            metrics::counter!(counter, "state" => state).increment(removed as u64);
            if removed < batch {
                break;
            }
        }
        if tasks > 0 {
            tracing::info!(state, tasks, %period, mode = config.mode.as_str(), "retention removed finished tasks");
        }
        report.states.push(StateReport {
            state,
            period,
            tasks,
        });
    }
    if !report.interrupted {
        report.tombstones_pruned = delete_older(
            pool,
            "DELETE FROM tasker.removed_tasks WHERE task_uuid IN (
               SELECT r.task_uuid FROM tasker.removed_tasks r
                WHERE r.removed_at < now() - $1::interval
                ORDER BY r.removed_at LIMIT $2)",
            config.tombstone_after.as_duration(),
            batch,
        )
        .await?;
        report.recording_counts_pruned = delete_older(
            pool,
            "DELETE FROM tasker.step_recordings WHERE ctid IN (
               SELECT r.ctid FROM tasker.step_recordings r
                WHERE r.recorded_at < now() - $1::interval
                ORDER BY r.recorded_at LIMIT $2)",
            RECORDING_COUNTS_KEPT,
            batch,
        )
        .await?;
    }
    if !report.interrupted {
        for table in event_tables(pool).await? {
            report.domain_events_removed +=
                remove_old_events(pool, &table, config, stop, batch).await?;
        }
        metrics::counter!(DOMAIN_EVENTS_REMOVED).increment(report.domain_events_removed);
    }
    Ok(report)
}

/// Runs `delete` (which deletes up to `$2` rows older than `$1`) until a run deletes fewer
/// than `batch`, each run its own transaction; how many rows went.
async fn delete_older(
    pool: &PgPool,
    delete: &str,
    older_than: Duration,
    batch: i32,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let n = sqlx::query(delete)
            .bind(older_than)
            .bind(i64::from(batch))
            .execute(pool)
            .await?
            .rows_affected();
        deleted += n;
        if n < batch as u64 {
            return Ok(deleted);
        }
    }
}

/// The queue and archive tables of every `<namespace>_domain_events` queue.
async fn event_tables(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT p || queue_name FROM pgmq.meta, unnest(ARRAY['q_', 'a_']) AS p
          WHERE queue_name LIKE '%\\_domain\\_events' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
}

/// Deletes the events of one table sent before `domain_events_after`, oldest first, a batch
/// per statement. Each looks only at the batch of lowest message ids (ids grow with time),
/// so a run costs what it removes, not what is kept.
async fn remove_old_events(
    pool: &PgPool,
    table: &str,
    config: &RetentionConfig,
    stop: &CancellationToken,
    batch: i32,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "DELETE FROM pgmq.{table} WHERE msg_id IN (
           SELECT k.msg_id FROM (SELECT msg_id, enqueued_at FROM pgmq.{table}
                                  ORDER BY msg_id LIMIT $2) k
            WHERE k.enqueued_at < now() - $1::interval)"
    );
    let mut removed = 0;
    while !stop.is_cancelled() {
        let n = sqlx::query(&sql)
            .bind(config.domain_events_after.as_duration())
            .bind(i64::from(batch))
            .execute(pool)
            .await?
            .rows_affected();
        removed += n;
        if n < batch as u64 {
            break;
        }
    }
    Ok(removed)
}

fn periods(config: &RetentionConfig) -> impl Iterator<Item = (&'static str, Period)> + '_ {
    FINAL_STATES
        .into_iter()
        .filter_map(|state| config.period_of(state).map(|period| (state, period)))
}

/// The orchestrator's loop: a run every `interval_seconds` until shutdown.
pub async fn run(pool: PgPool, config: RetentionConfig, shutdown: CancellationToken) {
    // A run stops between batches at shutdown; the limit only catches a stuck statement, and
    // leaves a long first run (a backlog of history) room to work through it.
    let limit = config.interval().max(Duration::from_secs(600));
    crate::periodic::every(
        "retention",
        config.interval(),
        limit,
        shutdown.clone(),
        || async {
            let report = run_once(&pool, &config, &shutdown).await?;
            if report.tombstones_pruned > 0 {
                tracing::debug!(
                    tombstones = report.tombstones_pruned,
                    "retention forgot old removed tasks"
                );
            }
            Ok::<_, sqlx::Error>(())
        },
    )
    .await
}

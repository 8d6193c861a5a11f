//! `/ui`: tasks by state, step throughput and failures over the last minutes, live workers,
//! and the newest tasks blocked by failures.

use super::{render, Layout, UiError};
use crate::OrchestrationCore;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Duration, DurationRound, Utc};
use sqlx::PgPool;
use tasker_shared::state::TaskState;
use uuid::Uuid;

/// Counts stop here (the dashboard's, and the blocked-tasks gauge's): counting every row of a
/// large table would make each page view, or each gauge refresh, scan it.
pub const COUNT_CAP: i64 = 10_000;
/// Throughput is shown for this many whole minutes.
const MINUTES: i64 = 10;

/// How many tasks are in one state, counted up to [`COUNT_CAP`].
pub struct StateCount {
    pub state: &'static str,
    pub count: String,
    pub terminal: bool,
}

/// Tasks per state, each count stopping at [`COUNT_CAP`] (an index range scan on
/// `(state, task_uuid)` per state, however large the table).
pub async fn state_counts(pool: &PgPool) -> Result<Vec<StateCount>, UiError> {
    let states: Vec<&'static str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.state,
                (SELECT count(*) FROM (SELECT 1 FROM tasker.tasks t
                                        WHERE t.state = s.state LIMIT $2) capped)
           FROM unnest($1::text[]) AS s(state)",
    )
    .bind(&states)
    .bind(COUNT_CAP + 1)
    .fetch_all(pool)
    .await?;
    Ok(TaskState::ALL
        .iter()
        .map(|s| {
            let n = rows
                .iter()
                .find(|(name, _)| name == s.as_str())
                .map_or(0, |r| r.1);
            StateCount {
                state: s.as_str(),
                count: capped(n),
                terminal: s.is_terminal(),
            }
        })
        .collect())
}

/// A count that may have stopped at the cap, as shown.
pub fn capped(n: i64) -> String {
    if n > COUNT_CAP {
        format!("{COUNT_CAP}+")
    } else {
        n.to_string()
    }
}

pub struct Minute {
    pub label: String,
    pub completed: i64,
    pub failed: i64,
    pub per_second: String,
    /// Bar heights in pixels, scaled to the busiest minute.
    pub completed_px: i64,
    pub failed_px: i64,
}

pub struct BlockedTask {
    pub task_uuid: Uuid,
    pub namespace: String,
    pub name: String,
    pub state: String,
    pub updated_at: String,
}

#[derive(Template)]
#[template(path = "dashboard/overview.html")]
struct OverviewPage {
    layout: Layout,
    states: Vec<StateCount>,
    minutes: Vec<Minute>,
    recent_rate: String,
    recent_failed: i64,
    workers_live: i64,
    workers_registered: i64,
    blocked: Vec<BlockedTask>,
}

const BAR_PX: i64 = 60;

async fn minutes(pool: &PgPool) -> Result<Vec<Minute>, UiError> {
    let now = Utc::now();
    let first =
        now.duration_trunc(Duration::minutes(1)).unwrap_or(now) - Duration::minutes(MINUTES - 1);
    let rows: Vec<(DateTime<Utc>, i64, i64)> = sqlx::query_as(
        "SELECT date_trunc('minute', recorded_at) AS minute,
                coalesce(sum(succeeded), 0), coalesce(sum(failed), 0)
           FROM tasker.recording_counts
          WHERE recorded_at >= $1
          GROUP BY 1",
    )
    .bind(first)
    .fetch_all(pool)
    .await?;
    let busiest = rows.iter().map(|r| r.1 + r.2).max().unwrap_or(0).max(1);
    Ok((0..MINUTES)
        .map(|i| {
            let at = first + Duration::minutes(i);
            let (completed, failed) = rows
                .iter()
                .find(|r| r.0 == at)
                .map_or((0, 0), |r| (r.1, r.2));
            Minute {
                label: at.format("%H:%M").to_string(),
                completed,
                failed,
                per_second: format!("{:.1}", (completed + failed) as f64 / 60.0),
                completed_px: completed * BAR_PX / busiest,
                failed_px: failed * BAR_PX / busiest,
            }
        })
        .collect())
}

pub async fn page(State(core): State<OrchestrationCore>) -> Result<Response, UiError> {
    let pool = &core.pool;
    let states = state_counts(pool).await?;
    let minutes = minutes(pool).await?;
    let (recent, recent_failed): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(succeeded + failed), 0), coalesce(sum(failed), 0)
           FROM tasker.recording_counts WHERE recorded_at > now() - interval '1 minute'",
    )
    .fetch_one(pool)
    .await?;
    let (workers_live, workers_registered): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE last_seen_at > now() - make_interval(secs => $1)),
                count(*)
           FROM tasker.workers",
    )
    .bind(crate::state_gauges::LIVE_WITHIN.as_secs_f64())
    .fetch_one(pool)
    .await?;
    let blocked: Vec<(Uuid, String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT t.task_uuid, n.name, nt.name, t.state, t.updated_at
           FROM tasker.tasks t
           JOIN tasker.named_tasks nt USING (named_task_uuid)
           JOIN tasker.namespaces n USING (namespace_uuid)
          WHERE t.state IN ('blocked_by_failures', 'error')
          ORDER BY t.task_uuid DESC LIMIT 10",
    )
    .fetch_all(pool)
    .await?;
    render(&OverviewPage {
        layout: Layout::new(&core, "Overview", "overview"),
        states,
        minutes,
        recent_rate: format!("{:.1}", recent as f64 / 60.0),
        recent_failed,
        workers_live,
        workers_registered,
        blocked: blocked
            .into_iter()
            .map(|(task_uuid, namespace, name, state, updated)| BlockedTask {
                task_uuid,
                namespace,
                name,
                state,
                updated_at: super::when(&updated),
            })
            .collect(),
    })
}

//! `/ui/workers`: the worker registry (`tasker.workers`), live when its heartbeat is recent,
//! with the steps each worker holds and the results it recorded lately; processes that claim
//! or record steps without being registered; and the channel, semaphore and FFI figures of
//! workers running inside this server process. Those figures are per process: a worker in
//! another process exports them on its own `/metrics`, which the registry does not locate.

use super::task::step_href;
use super::{render, when, Layout, UiError};
use crate::state_gauges::LIVE_WITHIN;
use crate::OrchestrationCore;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Held steps listed per worker.
const HELD_SHOWN: i64 = 20;

#[derive(sqlx::FromRow)]
struct WorkerRow {
    worker_id: String,
    host: String,
    pid: i32,
    namespaces: Vec<String>,
    started_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    live: bool,
    seen_seconds_ago: f64,
    held: i64,
    recorded_5m: i64,
}

pub struct Held {
    pub task_uuid: Uuid,
    pub step_name: String,
    pub href: String,
}

pub struct Worker {
    pub worker_id: String,
    pub host: String,
    pub pid: i32,
    pub namespaces: String,
    pub started_at: String,
    pub last_seen_at: String,
    pub seen_ago: String,
    pub live: bool,
    pub held: i64,
    pub recorded_5m: i64,
    pub held_steps: Vec<Held>,
}

/// One figure of this process's metrics.
pub struct Figure {
    pub name: &'static str,
    pub meaning: &'static str,
    pub value: String,
}

/// The per-process worker gauges worth reading at a glance.
const FIGURES: &[(&str, &str)] = &[
    (
        "tasker_worker_dispatch_channel_depth",
        "steps waiting in the dispatch channel",
    ),
    (
        "tasker_worker_dispatch_channel_saturation",
        "dispatch channel fill (1 = full)",
    ),
    (
        "tasker_worker_completion_channel_depth",
        "results waiting in the completion channel",
    ),
    (
        "tasker_worker_completion_channel_saturation",
        "completion channel fill (1 = full)",
    ),
    ("tasker_worker_handlers_in_flight", "handlers running now"),
    (
        "tasker_worker_handler_permits_available",
        "free handler semaphore permits (at the last dispatch)",
    ),
    (
        "tasker_worker_steps_in_flight",
        "steps claimed and not yet recorded",
    ),
    ("tasker_ffi_pending_steps", "FFI steps waiting for a poll"),
    (
        "tasker_ffi_starving_steps",
        "FFI steps waiting past the starvation threshold",
    ),
    (
        "tasker_ffi_completion_timeouts_total",
        "FFI steps failed for never being completed",
    ),
];

/// This process's figures from its own metrics registry (empty when no worker runs in it).
fn local_figures() -> Vec<Figure> {
    let text = tasker_shared::observability::render();
    FIGURES
        .iter()
        .filter_map(|(name, meaning)| {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(' ')
                        .map(|v| v.trim().to_string())
                })
                .map(|value| Figure {
                    name,
                    meaning,
                    value,
                })
        })
        .collect()
}

#[derive(Template)]
#[template(path = "dashboard/workers.html")]
struct WorkersPage {
    layout: Layout,
    live_within: u64,
    workers: Vec<Worker>,
    unregistered: Vec<(String, i64, i64)>,
    figures: Vec<Figure>,
}

pub async fn page(State(core): State<OrchestrationCore>) -> Result<Response, UiError> {
    let pool = &core.pool;
    let rows: Vec<WorkerRow> = sqlx::query_as(
        "SELECT w.worker_id, w.host, w.pid, w.namespaces, w.started_at, w.last_seen_at,
                w.last_seen_at > now() - make_interval(secs => $1) AS live,
                extract(epoch FROM now() - w.last_seen_at)::float8 AS seen_seconds_ago,
                (SELECT count(*) FROM tasker.held_steps h
                  WHERE h.worker_id = w.worker_id) AS held,
                (SELECT coalesce(sum(r.succeeded + r.failed), 0) FROM tasker.recording_counts r
                  WHERE r.recorded_at > now() - interval '5 minutes'
                    AND r.worker_id = w.worker_id) AS recorded_5m
           FROM tasker.workers w
          ORDER BY live DESC, w.last_seen_at DESC",
    )
    .bind(LIVE_WITHIN.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let held: Vec<(String, Uuid, String)> = sqlx::query_as(
        "SELECT worker_id, task_uuid, name FROM (
           SELECT h.worker_id, h.task_uuid, h.name,
                  row_number() OVER (PARTITION BY h.worker_id ORDER BY h.started_at) AS n
             FROM tasker.held_steps h) ranked
          WHERE n <= $1",
    )
    .bind(HELD_SHOWN)
    .fetch_all(pool)
    .await?;
    // Work done by processes missing from the registry (older workers, or rows removed by
    // hand) would otherwise be invisible here.
    let unregistered: Vec<(String, i64, i64)> = sqlx::query_as(
        "WITH claims AS (
           SELECT worker_id, count(*) AS held FROM tasker.held_steps GROUP BY 1),
         recorded AS (
           SELECT worker_id, sum(succeeded + failed) AS recorded FROM tasker.recording_counts
            WHERE recorded_at > now() - interval '5 minutes' GROUP BY 1)
         SELECT worker_id, coalesce(c.held, 0), coalesce(r.recorded, 0)
           FROM claims c FULL JOIN recorded r USING (worker_id)
          WHERE worker_id NOT IN (SELECT worker_id FROM tasker.workers)
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let workers = rows
        .into_iter()
        .map(|r| Worker {
            held_steps: held
                .iter()
                .filter(|(owner, _, _)| *owner == r.worker_id)
                .map(|(_, task, step)| Held {
                    task_uuid: *task,
                    step_name: step.clone(),
                    href: step_href(*task, step),
                })
                .collect(),
            worker_id: r.worker_id,
            host: r.host,
            pid: r.pid,
            namespaces: r.namespaces.join(", "),
            started_at: when(&r.started_at),
            last_seen_at: when(&r.last_seen_at),
            seen_ago: format!("{:.0} s ago", r.seen_seconds_ago.max(0.0)),
            live: r.live,
            held: r.held,
            recorded_5m: r.recorded_5m,
        })
        .collect();
    render(&WorkersPage {
        layout: Layout::new(&core, "Workers", "workers"),
        live_within: LIVE_WITHIN.as_secs(),
        workers,
        unregistered,
        figures: local_figures(),
    })
}

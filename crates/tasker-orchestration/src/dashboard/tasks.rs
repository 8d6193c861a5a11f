//! `/ui/tasks`: the task list. Filters live in the URL (`state`, `namespace`, `name`, `q` for
//! text in the context); pages are keyset pages, newest first (`before` is the last task
//! shown: task ids are time-ordered v7 UUIDs), so page 1,000 costs what page 1 does.

use super::overview::{capped, state_counts, StateCount, COUNT_CAP};
use super::{percent_encode, render, when, Layout, UiError};
use crate::OrchestrationCore;
use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{Postgres, QueryBuilder, Transaction};
use std::time::Duration;
use tasker_shared::state::TaskState;
use uuid::Uuid;

const PAGE: i64 = 50;
/// A text filter (`q`) matching few of many tasks scans until it fills a page: the list
/// gives up after this long with a clear message rather than hold a connection.
const LIST_BUDGET: Duration = Duration::from_secs(10);
/// The count is a nicety: it gives up sooner and the page says so.
const COUNT_BUDGET: Duration = Duration::from_secs(1);

/// Bounds every statement of the transaction (read-only: it only scopes the timeout, and is
/// rolled back when dropped).
async fn limit_time(tx: &mut Transaction<'_, Postgres>, budget: Duration) -> Result<(), UiError> {
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = {}",
        budget.as_millis()
    ))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether Postgres cancelled the statement (statement_timeout: SQLSTATE 57014).
fn cancelled(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "57014")
}

#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    state: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    q: String,
    before: Option<Uuid>,
}

impl Filters {
    fn some(s: &str) -> Option<&str> {
        let s = s.trim();
        (!s.is_empty()).then_some(s)
    }

    /// The filters as a query string (without the page cursor), for links that keep them.
    fn query(&self) -> String {
        [
            ("state", &self.state),
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("q", &self.q),
        ]
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", percent_encode(v.trim())))
        .collect::<Vec<_>>()
        .join("&")
    }

    /// Appends the WHERE clause these filters make.
    fn push_where(&self, q: &mut QueryBuilder<'_, Postgres>) {
        q.push(" WHERE true");
        if let Some(s) = Self::some(&self.state) {
            q.push(" AND t.state = ").push_bind(s.to_string());
        }
        if let Some(n) = Self::some(&self.namespace) {
            q.push(" AND n.name = ").push_bind(n.to_string());
        }
        if let Some(n) = Self::some(&self.name) {
            q.push(" AND nt.name = ").push_bind(n.to_string());
        }
        if let Some(text) = Self::some(&self.q) {
            q.push(" AND t.context::text ILIKE ")
                .push_bind(format!("%{}%", escape_like(text)));
        }
    }
}

/// `%`, `_` and `\` in the searched text are literal.
fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

const FROM: &str = " FROM tasker.tasks t
   JOIN tasker.named_tasks nt USING (named_task_uuid)
   JOIN tasker.namespaces n USING (namespace_uuid)";

#[derive(sqlx::FromRow)]
struct Row {
    task_uuid: Uuid,
    namespace: String,
    name: String,
    version: String,
    state: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

pub struct TaskLine {
    pub task_uuid: Uuid,
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub state: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Template)]
#[template(path = "dashboard/tasks.html")]
struct TasksPage {
    layout: Layout,
    filters: Filters,
    filter_query: String,
    states: Vec<StateCount>,
    namespaces: Vec<String>,
    names: Vec<String>,
    tasks: Vec<TaskLine>,
    matching: String,
    next: Option<String>,
    paged: bool,
}

pub async fn page(
    State(core): State<OrchestrationCore>,
    filters: Result<Query<Filters>, QueryRejection>,
) -> Result<Response, UiError> {
    let Query(filters) = filters.map_err(|e| UiError::BadRequest {
        field: "query",
        message: e.body_text(),
    })?;
    if let Some(s) = Filters::some(&filters.state) {
        s.parse::<TaskState>().map_err(|_| UiError::BadRequest {
            field: "state",
            message: format!("unknown task state '{s}'"),
        })?;
    }
    let pool = &core.pool;

    let mut list: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT t.task_uuid, n.name AS namespace, nt.name, nt.version, t.state, t.created_at,
                t.updated_at",
    );
    list.push(FROM);
    filters.push_where(&mut list);
    if let Some(before) = filters.before {
        list.push(" AND t.task_uuid < ").push_bind(before);
    }
    list.push(" ORDER BY t.task_uuid DESC LIMIT ")
        .push_bind(PAGE + 1);
    let mut tx = pool.begin().await?;
    limit_time(&mut tx, LIST_BUDGET).await?;
    let mut rows: Vec<Row> = list
        .build_query_as()
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| {
            if cancelled(&e) {
                UiError::BadRequest {
                    field: "q",
                    message: format!(
                        "the search took longer than {} s; narrow it with a state, namespace or name",
                        LIST_BUDGET.as_secs()
                    ),
                }
            } else {
                e.into()
            }
        })?;
    drop(tx);
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);

    let mut count: QueryBuilder<'_, Postgres> = QueryBuilder::new("SELECT count(*) FROM (SELECT 1");
    count.push(FROM);
    filters.push_where(&mut count);
    count
        .push(" LIMIT ")
        .push_bind(COUNT_CAP + 1)
        .push(") capped");
    let mut tx = pool.begin().await?;
    limit_time(&mut tx, COUNT_BUDGET).await?;
    let matching = match count.build_query_scalar::<i64>().fetch_one(&mut *tx).await {
        Ok(n) => capped(n),
        Err(e) if cancelled(&e) => "many".to_string(),
        Err(e) => return Err(e.into()),
    };
    drop(tx);

    let namespaces: Vec<String> =
        sqlx::query_scalar("SELECT name FROM tasker.namespaces ORDER BY name")
            .fetch_all(pool)
            .await?;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT name FROM tasker.named_tasks ORDER BY name")
            .fetch_all(pool)
            .await?;
    let filter_query = filters.query();
    let next = more.then(|| {
        let last = rows.last().map(|r| r.task_uuid).unwrap_or_default();
        if filter_query.is_empty() {
            format!("/ui/tasks?before={last}")
        } else {
            format!("/ui/tasks?{filter_query}&before={last}")
        }
    });
    render(&TasksPage {
        layout: Layout::new(&core, "Tasks", "tasks"),
        paged: filters.before.is_some(),
        filters,
        filter_query,
        states: state_counts(pool).await?,
        namespaces,
        names,
        tasks: rows
            .into_iter()
            .map(|r| TaskLine {
                task_uuid: r.task_uuid,
                namespace: r.namespace,
                name: r.name,
                version: r.version,
                state: r.state,
                created_at: when(&r.created_at),
                updated_at: when(&r.updated_at),
            })
            .collect(),
        matching,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_survive_in_links() {
        let f = Filters {
            state: "error".into(),
            q: "a b&c".into(),
            ..Filters::default()
        };
        assert_eq!(f.query(), "state=error&q=a%20b%26c");
        assert_eq!(escape_like("50%_a\\"), "50\\%\\_a\\\\");
    }
}

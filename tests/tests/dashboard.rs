//! The dashboard, page by page and action by action, against a real database with real
//! tasks (no browser, no network: the router is called directly, HTML is asserted).

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use serde_json::json;
use std::time::Duration;
use tasker_tests::toml_value::Value as Toml;
use tasker_tests::{FakeOutcome, FakeWorker, Harness};
use tower::ServiceExt;
use uuid::Uuid;

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let start = self
            .body
            .find(r#"name="csrf" value=""#)
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body))
            + r#"name="csrf" value=""#.len();
        let end = start + self.body[start..].find('"').unwrap();
        self.body[start..end].to_string()
    }
}

async fn send(app: &axum::Router, req: Request<Body>) -> Page {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 8 << 20)
        .await
        .unwrap();
    Page {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(app: &axum::Router, uri: &str) -> Page {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn get_ok(app: &axum::Router, uri: &str) -> String {
    let page = get(app, uri).await;
    assert_eq!(page.status, StatusCode::OK, "{uri}: {}", page.body);
    page.body
}

/// A same-origin form POST, as a browser sends it.
async fn post_form(app: &axum::Router, uri: &str, form: &str) -> Page {
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "127.0.0.1:3000")
        .header(header::ORIGIN, "http://127.0.0.1:3000")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(form.to_string()))
        .unwrap();
    send(app, req).await
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The `<tr>` of one step in the task page's step table.
fn step_row<'a>(page: &'a str, step: &str) -> &'a str {
    let start = page
        .find(&format!(r#"<tr data-step-name="{step}""#))
        .unwrap_or_else(|| panic!("no row for step {step}"));
    let end = start + page[start..].find("</tr>").unwrap();
    &page[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_a_finished_diamond_and_a_blocked_task() {
    let h = Harness::with_rust_worker(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let diamond = h
        .create(
            "diamond_workflow",
            "diamond_math",
            json!({"value": 3, "note": "needle-4711"}),
        )
        .await;
    let blocked = h
        .create("error_scenarios", "permanent_failure", json!({"value": 1}))
        .await;
    assert_eq!(
        h.wait(diamond, Duration::from_secs(20)).await.state,
        "complete"
    );
    assert_eq!(
        h.wait(blocked, Duration::from_secs(20)).await.state,
        "error"
    );

    let overview = get_ok(&app, "/ui").await;
    assert!(overview.contains("Tasks by state"), "{overview}");
    for state in ["complete", "error", "pending", "cancelled"] {
        assert!(
            overview.contains(&format!(r#"data-task-state="{state}""#)),
            "{state} is counted"
        );
    }
    assert!(
        overview.contains(&format!(r#"data-task-uuid="{blocked}""#)),
        "the blocked task is listed: {overview}"
    );
    assert!(!overview.contains(&format!(r#"data-task-uuid="{diamond}""#)));
    assert!(overview.contains("steps/s over the last minute"));
    assert!(overview.contains(r#"<script src="/ui/static/dashboard.js" defer>"#));

    let all = get_ok(&app, "/ui/tasks").await;
    assert!(all.contains(&format!(r#"data-task-uuid="{diamond}""#)));
    assert!(all.contains(&format!(r#"data-task-uuid="{blocked}""#)));
    assert!(all.contains(r#"data-matching="2""#), "{all}");
    for (filter, shows, hides) in [
        ("state=complete", diamond, blocked),
        ("state=error", blocked, diamond),
        ("namespace=error_scenarios", blocked, diamond),
        ("name=diamond_math", diamond, blocked),
        ("q=needle-4711", diamond, blocked),
    ] {
        let page = get_ok(&app, &format!("/ui/tasks?{filter}")).await;
        assert!(
            page.contains(&format!(r#"data-task-uuid="{shows}""#)),
            "{filter}"
        );
        assert!(
            !page.contains(&format!(r#"data-task-uuid="{hides}""#)),
            "{filter}"
        );
        assert!(page.contains(r#"data-matching="1""#), "{filter}");
    }
    let none = get_ok(&app, "/ui/tasks?q=100%25").await;
    assert!(none.contains(r#"data-matching="0""#), "% is literal");
    assert_eq!(
        get(&app, "/ui/tasks?state=sleeping").await.status,
        StatusCode::BAD_REQUEST
    );

    let page = get_ok(&app, &format!("/ui/tasks/{diamond}")).await;
    assert!(page.contains(&format!(r#"data-task-uuid="{diamond}""#)));
    assert!(page.contains(r#"<svg class="dag""#));
    assert_eq!(
        count(&page, r#"<path class="edge""#),
        4,
        "a diamond has 4 edges"
    );
    for step in ["start", "left", "right", "join"] {
        assert!(step_row(&page, step).contains(r#"data-step-state="complete""#));
        assert!(
            page.contains(&format!(
                r#"<g class="node state-complete" data-step-name="{step}" data-step-state="complete">"#
            )),
            "{step} is drawn green"
        );
    }
    assert!(page.contains("needle-4711"), "the context is shown");
    assert!(
        page.contains("<pre class=\"json\">37</pre>"),
        "join's result"
    );
    assert!(page.contains("steps_in_process"), "the timeline");
    assert!(!page.contains(r#"data-action="reset""#), "nothing to reset");
    assert!(
        !page.contains(r#"data-action="cancel""#),
        "a complete task stays"
    );

    let page = get_ok(&app, &format!("/ui/tasks/{blocked}")).await;
    let failed = step_row(&page, "fail_fast");
    assert!(failed.contains(r#"data-step-state="error""#), "{failed}");
    assert!(failed.contains(&format!(
        r#"action="/ui/tasks/{blocked}/steps/fail_fast/reset""#
    )));
    assert!(failed.contains(r#"data-confirm="Reset step fail_fast?"#));
    assert!(failed.contains("validation_error"), "{failed}");
    assert!(step_row(&page, "start").contains(r#"data-step-state="complete""#));
    assert!(!step_row(&page, "start").contains("data-action"));
    assert!(page.contains(
        r#"<g class="node state-error" data-step-name="fail_fast" data-step-state="error">"#
    ));

    let step = get_ok(&app, &format!("/ui/tasks/{blocked}/steps/fail_fast")).await;
    assert!(step.contains(&format!(
        r#"data-task-uuid="{blocked}" data-step-name="fail_fast" data-step-state="error""#
    )));
    assert!(
        step.contains(r#"data-attempt="1" data-success="false""#),
        "{step}"
    );
    assert!(step.contains("Examples::Errors::PermanentFailure"));
    assert!(step.contains("validation_error"));
    assert!(
        step.contains("none scheduled"),
        "no retry for a permanent failure"
    );
    assert!(step.contains(r#"data-action="reset""#));
    let done = get_ok(&app, &format!("/ui/tasks/{diamond}/steps/join")).await;
    assert!(done.contains(r#"data-step-state="complete""#));
    assert!(done.contains(r#"href="/ui/tasks/"#) && done.contains("/steps/left\">left</a>"));

    let failures = get_ok(&app, "/ui/failures").await;
    assert!(failures.contains(
        r#"data-handler="Examples::Errors::PermanentFailure" data-error-type="validation_error""#
    ));
    assert!(failures.contains(&format!(
        r#"data-task-uuid="{blocked}" data-step-name="fail_fast" data-step-state="error""#
    )));

    let templates = get_ok(&app, "/ui/templates").await;
    assert!(templates.contains(r#"data-template="diamond_workflow/diamond_math/1.0.0""#));
    assert!(templates.contains(r#"<g class="node state-template" data-step-name="join">"#));

    let workers = get_ok(&app, "/ui/workers").await;
    assert!(
        workers.contains("tasker_worker_dispatch_channel_depth"),
        "this process runs a worker"
    );

    assert_eq!(
        get(&app, &format!("/ui/tasks/{}", Uuid::now_v7()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, &format!("/ui/tasks/{diamond}/steps/nope"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/ui/tasks/not-a-uuid").await.status,
        StatusCode::BAD_REQUEST
    );
    let js = get(&app, "/ui/static/dashboard.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.body.contains("data-ready"));
    let csp = overview_headers(&app).await;
    assert!(csp.contains("default-src 'none'"), "{csp}");
    h.shutdown().await;
}

async fn overview_headers(app: &axum::Router) -> String {
    get(app, "/ui")
        .await
        .headers
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_list_pages_by_keyset() {
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let mut created = Vec::new();
    for i in 0..55 {
        created.push(
            h.create("linear_workflow", "linear_math", json!({"value": i}))
                .await,
        );
    }
    let first = get_ok(&app, "/ui/tasks?namespace=linear_workflow").await;
    assert_eq!(count(&first, "<tr data-task-uuid="), 50);
    assert!(first.contains(r#"data-matching="55""#));
    assert!(
        first.contains(&format!(r#"data-task-uuid="{}""#, created[54])),
        "newest first"
    );
    assert!(!first.contains(&format!(r#"data-task-uuid="{}""#, created[4])));
    let next = first
        .split(r#"rel="next""#)
        .next()
        .and_then(|s| s.rsplit("href=\"").next())
        .map(|s| s.trim_end_matches("\" ").replace("&#38;", "&"))
        .unwrap();
    assert_eq!(
        next,
        format!("/ui/tasks?namespace=linear_workflow&before={}", created[5])
    );
    let second = get_ok(&app, &next).await;
    assert_eq!(count(&second, "<tr data-task-uuid="), 5);
    for t in &created[..5] {
        assert!(second.contains(&format!(r#"data-task-uuid="{t}""#)));
    }
    assert!(!second.contains(r#"rel="next""#));
    assert!(second.contains(r#"rel="first""#));
    h.shutdown().await;
}

/// Fails the diamond's first step for good, so the task ends in error.
async fn fail_for_good(fake: &FakeWorker, task: Uuid) {
    let row = fake
        .run_task("diamond_workflow", task, Duration::from_secs(10), |_, _| {
            FakeOutcome::Failure {
                retryable: false,
                retry_after_ms: None,
            }
        })
        .await;
    assert_eq!(row.state, "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_confirmed_protected_and_done_like_the_api() {
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 2}))
        .await;
    fail_for_good(&fake, task).await;
    let page = get(&app, &format!("/ui/tasks/{task}")).await;
    let csrf = page.csrf();
    let reset = format!("/ui/tasks/{task}/steps/start/reset");

    let p = post_form(&app, &reset, "confirmed=yes").await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "no token: {}", p.body);
    let p = post_form(&app, &reset, "confirmed=yes&csrf=1.abcd").await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "forged token");
    let cross = Request::post(&reset)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "127.0.0.1:3000")
        .header(header::ORIGIN, "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(format!("confirmed=yes&csrf={csrf}")))
        .unwrap();
    assert_eq!(send(&app, cross).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.steps(task).await[0].state,
        "error",
        "nothing happened yet"
    );

    let confirm = post_form(&app, &reset, &format!("csrf={csrf}")).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains(r#"name="confirmed" value="yes""#));
    assert!(confirm.body.contains("Reset step start?"));
    assert_eq!(h.steps(task).await[0].state, "error", "unconfirmed");

    let done = post_form(
        &app,
        &reset,
        &format!("csrf={}&confirmed=yes", confirm.csrf()),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(
        done.location(),
        format!("/ui/tasks/{task}?done=reset&step=start")
    );
    let after = get_ok(&app, done.location()).await;
    assert!(after.contains("Step start was reset and will run again."));
    let transitions = tasker_shared::models::TransitionRow::for_step(
        &h.db.pool,
        h.steps(task).await[0].step_uuid,
    )
    .await
    .unwrap();
    assert!(transitions
        .iter()
        .any(|t| t.actor == "dashboard" && t.to_state == "pending"));
    let row = fake
        .run_task("diamond_workflow", task, Duration::from_secs(10), |_, _| {
            FakeOutcome::Success(json!(1))
        })
        .await;
    assert_eq!(row.state, "complete", "the reset step ran again");
    let again = post_form(&app, &reset, &format!("csrf={csrf}&confirmed=yes")).await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "a complete task is left alone"
    );

    let other = h
        .create("diamond_workflow", "diamond_math", json!({"value": 5}))
        .await;
    fail_for_good(&fake, other).await;
    let resolved = post_form(
        &app,
        &format!("/ui/tasks/{other}/steps/start/resolve"),
        &format!("csrf={csrf}&confirmed=yes"),
    )
    .await;
    assert_eq!(resolved.status, StatusCode::SEE_OTHER, "{}", resolved.body);
    assert_eq!(h.steps(other).await[0].state, "resolved_manually");
    let bogus = post_form(
        &app,
        &format!("/ui/tasks/{other}/steps/start/explode"),
        &format!("csrf={csrf}&confirmed=yes"),
    )
    .await;
    assert_eq!(bogus.status, StatusCode::NOT_FOUND);

    let pending = h
        .create("diamond_workflow", "diamond_math", json!({"value": 7}))
        .await;
    let page = get_ok(&app, &format!("/ui/tasks/{pending}")).await;
    assert!(page.contains(r#"data-action="cancel""#));
    let cancel = format!("/ui/tasks/{pending}/cancel");
    let confirm = post_form(&app, &cancel, &format!("csrf={csrf}")).await;
    assert!(confirm.body.contains("Cancel task"), "{}", confirm.body);
    assert_ne!(
        tasker_shared::models::TaskRow::get(&h.db.pool, pending)
            .await
            .unwrap()
            .state,
        "cancelled",
        "unconfirmed"
    );
    let done = post_form(&app, &cancel, &format!("csrf={csrf}&confirmed=yes")).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(
        tasker_shared::models::TaskRow::get(&h.db.pool, pending)
            .await
            .unwrap()
            .state,
        "cancelled"
    );
    let twice = post_form(&app, &cancel, &format!("csrf={csrf}&confirmed=yes")).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert!(
        twice.body.contains("cancel is not possible"),
        "{}",
        twice.body
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_page_reads_the_registry_and_the_claims() {
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    fake.drain("linear_workflow", |_, _| FakeOutcome::Hold)
        .await;
    sqlx::query(
        "INSERT INTO tasker.workers (worker_id, host, pid, namespaces, last_seen_at) VALUES
           ('fake-worker', 'host-a', 101, '{linear_workflow}', now()),
           ('gone-worker', 'host-b', 202, '{ecommerce}', now() - interval '10 minutes')",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    // The fake worker's lock held, as a live worker holds its own: otherwise the reaper
    // finds it dead once its grace has passed and releases its step.
    let mut alive = h.db.pool.acquire().await.unwrap();
    sqlx::query(
        "SELECT pg_advisory_lock(lock_key) FROM tasker.workers WHERE worker_id = 'fake-worker'",
    )
    .execute(&mut *alive)
    .await
    .unwrap();
    let page = get_ok(&app, "/ui/workers").await;
    let row = |id: &str| {
        let start = page
            .find(&format!(r#"<tr data-worker-id="{id}""#))
            .unwrap_or_else(|| panic!("no row for {id}: {page}"));
        page[start..start + page[start..].find("</tr>").unwrap()].to_string()
    };
    let live = row("fake-worker");
    assert!(live.contains(r#"data-worker-live="true""#), "{live}");
    assert!(
        live.contains(&format!(
            r#"data-task-uuid="{task}" data-step-name="add_two" data-step-state="in_progress""#
        )),
        "{live}"
    );
    assert!(live.contains("host-a") && live.contains("linear_workflow"));
    let gone = row("gone-worker");
    assert!(gone.contains(r#"data-worker-live="false""#));
    assert!(gone.contains(">down<"));

    tasker_orchestration::refresh_state_gauges(&h.db.pool)
        .await
        .unwrap();
    let metrics = tasker_shared::observability::render();
    for line in [
        "tasker_workers_live 1",
        "tasker_workers_stale 1",
        "tasker_steps_waiting 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    let overview = get_ok(&app, "/ui").await;
    assert!(overview.contains(r#"data-workers-live="1""#));
    // A second task's first step waits in the queue: counted, unlike the held step, whose
    // message the fake worker left behind.
    h.create("linear_workflow", "linear_math", json!({"value": 2}))
        .await;
    tasker_orchestration::refresh_state_gauges(&h.db.pool)
        .await
        .unwrap();
    let metrics = tasker_shared::observability::render();
    assert!(
        metrics.lines().any(|l| l == "tasker_steps_waiting 1"),
        "{metrics}"
    );
    drop(alive);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocked_tasks_gauge_counts_up_to_the_dashboards_cap() {
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    // Failed tasks as retention keeps them: final, in `error`, beside one still blocked.
    let add = |state: &'static str, n: i64| {
        let pool = h.db.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO tasker.tasks (named_task_uuid, state)
                 SELECT named_task_uuid, $2 FROM tasker.tasks, generate_series(1, $3)
                  WHERE task_uuid = $1",
            )
            .bind(task)
            .bind(state)
            .bind(n)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    add("blocked_by_failures", 1).await;
    add("error", 2).await;
    let figures = tasker_orchestration::refresh_state_gauges(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(figures.blocked, 3, "below the cap the count is exact");

    let cap = tasker_orchestration::COUNT_CAP;
    add("error", cap).await;
    let figures = tasker_orchestration::refresh_state_gauges(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(figures.blocked, cap, "the count stops at the cap");
    let overview = get_ok(&app, "/ui").await;
    assert!(
        overview.contains(&format!("{cap}+")),
        "the dashboard's count of error tasks stops there too: {overview}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_rule_applies_to_the_dashboard() {
    let h =
        Harness::orchestration_only(&[("orchestration.api_key", Toml::String("s3cret".into()))])
            .await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let anonymous = get(&app, "/ui/tasks?state=error").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(
        anonymous.location(),
        "/ui/login?next=%2Fui%2Ftasks%3Fstate%3Derror"
    );
    let form = get(&app, "/ui/login?next=/ui/tasks").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(r#"name="api_key""#));
    let css = get(&app, "/ui/static/dashboard.css").await;
    assert_eq!(css.status, StatusCode::OK, "the login page is styled");

    let wrong = post_form(
        &app,
        "/ui/login",
        &format!("api_key=nope&next=%2Fui%2Ftasks&csrf={}", form.csrf()),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());
    let right = post_form(
        &app,
        "/ui/login",
        &format!("api_key=s3cret&next=%2Fui%2Ftasks&csrf={}", form.csrf()),
    )
    .await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    assert_eq!(right.location(), "/ui/tasks");
    let cookie = right.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("s3cret"),
        "the key itself is never in the cookie"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let with_cookie = send(
        &app,
        Request::get("/ui/tasks")
            .header(header::COOKIE, &session)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(with_cookie.status, StatusCode::OK);
    let forged = send(
        &app,
        Request::get("/ui/tasks")
            .header(header::COOKIE, "tasker_ui_session=00")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(forged.status, StatusCode::SEE_OTHER);

    let link = get(&app, "/ui/failures?api_key=s3cret").await;
    assert_eq!(link.status, StatusCode::SEE_OTHER);
    assert_eq!(
        link.location(),
        "/ui/failures",
        "the key leaves the address bar"
    );
    assert!(link.headers.get(header::SET_COOKIE).is_some());
    let header_key = send(
        &app,
        Request::get("/ui/workers")
            .header("x-api-key", "s3cret")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(header_key.status, StatusCode::OK);

    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 1}))
        .await;
    let p = post_form(
        &app,
        &format!("/ui/tasks/{task}/cancel"),
        &format!("csrf={}&confirmed=yes", form.csrf()),
    )
    .await;
    assert_eq!(
        p.status,
        StatusCode::UNAUTHORIZED,
        "actions need the key too"
    );
    h.shutdown().await;
}

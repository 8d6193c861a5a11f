//! The dashboard in a real browser: headless Chromium from Debian's `chromium` and
//! `chromium-driver` packages, driven over WebDriver (fantoccini), against the server
//! `tasker server` runs (`api::serve` on a TCP port) with a Rust worker doing the work.
//! It loads a finished diamond task and a blocked task, declines and then confirms a reset
//! of the failed step, and watches the task complete; and logs in with an API key.
//!
//! Without Chromium these tests say so loudly and pass, unless `TASKER_BROWSER_TESTS=required`
//! (bin/test sets it, and bin/setup installs the packages), when they fail.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tasker_shared::models::TemplateRegistry;
use tasker_shared::template::parse_template;
use tasker_tests::toml_value::Value as Toml;
use tasker_tests::Harness;

/// A step that fails on its first attempt with no retry left, so the task is blocked until
/// an operator resets it; the second attempt succeeds.
const RESET_TO_RECOVER: &str = r#"
name: reset_to_recover
namespace: error_scenarios
version: 1.0.0
description: Blocked until an operator resets the failed step
steps:
  - name: flaky
    handler: { callable: Examples::Errors::Flaky, initialization: { fail_times: 1 } }
    retry: { retryable: true, max_attempts: 1 }
  - name: after_flaky
    handler: { callable: Examples::Math::Compute, initialization: { operation: add, operand: 1 } }
    dependencies: [flaky]
"#;

const WAIT: Duration = Duration::from_secs(30);

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Chromium and its driver, or `None` (after saying so) when they are not installed.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = on_path(&["chromium", "chromium-browser"]);
    let driver = on_path(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            let message = "chromium and chromedriver are not installed (Debian packages \
                           `chromium` and `chromium-driver`; bin/setup installs them)";
            if std::env::var("TASKER_BROWSER_TESTS").as_deref() == Ok("required") {
                panic!("{message}, and TASKER_BROWSER_TESTS=required");
            }
            eprintln!("\n!!!!!!!! SKIPPING THE DASHBOARD BROWSER TESTS: {message} !!!!!!!!\n");
            None
        }
    }
}

/// A chromedriver this test started; stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

async fn start_driver(driver: &PathBuf) -> Driver {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d
}

async fn connect(driver: &Driver, chromium: &PathBuf) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    // Prompts left open must fail the test, not be dismissed silently.
    caps.insert("unhandledPromptBehavior".into(), json!("ignore"));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Serves the API and dashboard as `tasker server` does, until the orchestrator stops.
async fn serve(h: &Harness) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token = h.orchestrator.as_ref().expect("orchestrator").token();
    tokio::spawn(tasker_orchestration::api::serve(
        h.core.clone(),
        listener,
        token,
    ));
    base
}

/// Loads a page and waits for the dashboard's script to mark it drawn.
async fn open(client: &Client, url: &str) {
    client.goto(url).await.expect("page loads");
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("body[data-ready]"))
        .await
        .unwrap_or_else(|e| panic!("{url} never set data-ready: {e}"));
}

async fn click(client: &Client, css: &str) {
    let element = client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} to click: {e}"));
    element.click().await.unwrap();
}

async fn count(client: &Client, css: &str) -> usize {
    client.find_all(Locator::Css(css)).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_diamond_a_blocked_task_and_a_reset_in_chromium() {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let h = Harness::with_rust_worker(&[]).await;
    let template = parse_template(RESET_TO_RECOVER, std::path::Path::new("reset.yaml")).unwrap();
    TemplateRegistry::new(h.db.pool.clone())
        .register(&template)
        .await
        .unwrap();
    let diamond = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let blocked = h
        .create("error_scenarios", "reset_to_recover", json!({"value": 5}))
        .await;
    assert_eq!(h.wait(diamond, WAIT).await.state, "complete");
    assert_eq!(h.wait(blocked, WAIT).await.state, "error");
    let base = serve(&h).await;
    let driver = start_driver(&driver).await;
    let client = connect(&driver, &chromium).await;

    open(&client, &format!("{base}/ui/tasks/{diamond}")).await;
    assert_eq!(
        count(&client, "svg.dag g[data-step-state=\"complete\"]").await,
        4,
        "the diamond is drawn, every step green"
    );
    assert_eq!(
        count(&client, "table.steps tr[data-step-state=\"complete\"]").await,
        4
    );
    assert_eq!(count(&client, "button[data-action=\"reset\"]").await, 0);
    let join = client
        .find(Locator::Css("svg.dag g[data-step-name=\"join\"]"))
        .await
        .unwrap();
    assert_eq!(
        join.attr("data-step-state").await.unwrap().as_deref(),
        Some("complete")
    );

    let task_url = format!("{base}/ui/tasks/{blocked}");
    open(&client, &task_url).await;
    let task = client
        .find(Locator::Css(&format!(
            "article[data-task-uuid=\"{blocked}\"]"
        )))
        .await
        .unwrap();
    assert_eq!(
        task.attr("data-task-state").await.unwrap().as_deref(),
        Some("error")
    );
    let failed = "tr[data-step-name=\"flaky\"][data-step-state=\"error\"]";
    assert_eq!(count(&client, failed).await, 1, "the failed step is shown");
    assert_eq!(
        count(
            &client,
            "svg.dag g[data-step-name=\"flaky\"][data-step-state=\"error\"]"
        )
        .await,
        1
    );
    let reset = format!("{failed} button[data-action=\"reset\"]");

    // Declining the confirmation changes nothing.
    click(&client, &reset).await;
    client.dismiss_alert().await.expect("a confirmation dialog");
    let step = h.steps(blocked).await;
    assert_eq!(step[0].state, "error", "declined: the step is still failed");

    // Confirming resets it; the worker runs it again and the task completes, which the
    // page shows (after the redirect, or at the latest through its live refresh).
    click(&client, &reset).await;
    client.accept_alert().await.expect("a confirmation dialog");
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("p.notice"))
        .await
        .expect("the reset is acknowledged");
    let notice = client.find(Locator::Css("p.notice")).await.unwrap();
    assert_eq!(
        notice.text().await.unwrap(),
        "Step flaky was reset and will run again."
    );
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&format!(
            "article[data-task-uuid=\"{blocked}\"][data-task-state=\"complete\"]"
        )))
        .await
        .expect("the page shows the task complete");
    assert_eq!(
        count(&client, "table.steps tr[data-step-state=\"complete\"]").await,
        2
    );
    assert_eq!(h.wait(blocked, WAIT).await.state, "complete");

    open(&client, &format!("{task_url}/steps/flaky")).await;
    assert_eq!(count(&client, "tr[data-attempt]").await, 2, "both attempts");

    for (page, css) in [
        ("/ui", "tr[data-task-state=\"complete\"]"),
        ("/ui/tasks", &format!("tr[data-task-uuid=\"{diamond}\"]")),
        ("/ui/failures", "h2"),
        ("/ui/workers", "tr[data-metric]"),
        (
            "/ui/templates",
            "section[data-template=\"error_scenarios/reset_to_recover/1.0.0\"] svg.dag",
        ),
    ] {
        open(&client, &format!("{base}{page}")).await;
        assert!(count(&client, css).await > 0, "{page}: {css}");
    }
    client.close().await.unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_with_the_api_key_in_chromium() {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let h =
        Harness::orchestration_only(&[("orchestration.api_key", Toml::String("s3cret".into()))])
            .await;
    let base = serve(&h).await;
    let driver = start_driver(&driver).await;
    let client = connect(&driver, &chromium).await;

    open(&client, &format!("{base}/ui/tasks?state=error")).await;
    assert!(
        client.current_url().await.unwrap().path() == "/ui/login",
        "sent to the login form"
    );
    // Each answer is recognised by what only it shows: the error, or the task filters.
    for (key, shows, path) in [
        ("wrong", "p.error", "/ui/login"),
        ("s3cret", "form.filters", "/ui/tasks"),
    ] {
        let input = client
            .find(Locator::Css("input[name=\"api_key\"]"))
            .await
            .unwrap();
        input.send_keys(key).await.unwrap();
        click(&client, "form.login button[type=\"submit\"]").await;
        client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(shows))
            .await
            .unwrap_or_else(|e| panic!("after key {key}: no {shows}: {e}"));
        assert_eq!(client.current_url().await.unwrap().path(), path);
    }
    assert_eq!(
        client.current_url().await.unwrap().query(),
        Some("state=error"),
        "the filters survive the login"
    );
    let cookies = client.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "tasker_ui_session")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_ne!(session.value(), "s3cret");
    client.close().await.unwrap();
    h.shutdown().await;
}

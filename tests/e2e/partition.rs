//! Two hosts: the orchestrator, Postgres and worker A on this one; worker B in a network
//! namespace of its own, joined to this one by a veth pair, reaching Postgres through a
//! TCP relay on this side of it. The link is cut, while B runs steps, for longer than
//! `liveness_timeout_ms`, then restored. B's steps run again on A, B's late results are
//! refused, no result is recorded twice, and every task completes. Needs root (`ip netns`);
//! skipped, saying so, where it is not available. The only test in its binary.

mod support;

use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{log_path, tasker, tasker_via};
use tasker_tests::testing::TestDatabase;
use tasker_tests::{register_examples, wait_for_task};
use tokio::net::{TcpListener, TcpStream};

const TEST: &str = "partition";

const ENV: &[(&str, &str)] = &[
    ("TASKER_WORKER__LIVENESS_INTERVAL_MS", "200"),
    ("TASKER_WORKER__LIVENESS_GRACE_MS", "500"),
    ("TASKER_WORKER__LIVENESS_TIMEOUT_MS", "3000"),
    ("TASKER_ORCHESTRATION__DEAD_WORKER_CHECK_INTERVAL_MS", "500"),
];

/// How long B is cut off: well past liveness_timeout_ms (3 s) and the steps' sleep (4 s),
/// so B finishes its handlers while cut off and sends their results only once it is back.
const CUT: Duration = Duration::from_secs(9);

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace joined to this one by a veth pair; removed on drop.
struct Link {
    netns: String,
    host_side: String,
    host_ip: Ipv4Addr,
}

impl Link {
    fn create() -> Option<Link> {
        let id = std::process::id() % 10_000;
        let netns = format!("tasker_part_{id}");
        let host_side = format!("tkp{id}h");
        let peer = format!("tkp{id}n");
        let subnet = (id % 250) as u8;
        let host_ip = Ipv4Addr::new(10, 213, subnet, 1);
        let link = Link {
            netns,
            host_side,
            host_ip,
        };
        let ns_ip = format!("10.213.{subnet}.2/30");
        let ok = ip(&["netns", "add", &link.netns])
            && ip(&[
                "link",
                "add",
                &link.host_side,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ])
            && ip(&["link", "set", &peer, "netns", &link.netns])
            && ip(&[
                "addr",
                "add",
                &format!("{host_ip}/30"),
                "dev",
                &link.host_side,
            ])
            && ip(&["link", "set", &link.host_side, "up"])
            && ip(&["-n", &link.netns, "addr", "add", &ns_ip, "dev", &peer])
            && ip(&["-n", &link.netns, "link", "set", &peer, "up"])
            && ip(&["-n", &link.netns, "link", "set", "lo", "up"]);
        ok.then_some(link)
    }

    fn set(&self, up: bool) {
        assert!(
            ip(&[
                "link",
                "set",
                &self.host_side,
                if up { "up" } else { "down" }
            ]),
            "setting {} {}",
            self.host_side,
            if up { "up" } else { "down" }
        );
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        ip(&["link", "del", &self.host_side]);
        ip(&["netns", "del", &self.netns]);
    }
}

/// Relays every connection to `listen`'s address to Postgres at `upstream`: the other
/// namespace's only way to the database, so cutting the link cuts its connections.
async fn relay(listen: TcpListener, upstream: SocketAddr) {
    while let Ok((mut client, _)) = listen.accept().await {
        tokio::spawn(async move {
            if let Ok(mut server) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}

/// Postgres's address in a `postgresql://user@host:port/db` URL.
fn upstream_of(url: &str) -> SocketAddr {
    let after_at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    let host_port = after_at.split('/').next().unwrap();
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{port}").parse().expect("a host:port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_past_its_liveness_timeout_loses_its_steps_and_its_late_results() {
    let Some(link) = Link::create() else {
        eprintln!("cannot create a network namespace and veth pair here (needs root and `ip netns`); nothing to test");
        return;
    };
    let db = TestDatabase::new().await;
    register_examples(&db).await;

    let listener = TcpListener::bind((link.host_ip, 0)).await.unwrap();
    let relay_port = listener.local_addr().unwrap().port();
    tokio::spawn(relay(listener, upstream_of(&db.url)));
    let (url_head, url_db) = db.url.rsplit_once('/').unwrap();
    let (creds, _) = url_head
        .rsplit_once('@')
        .unwrap_or(("postgresql://postgres", ""));
    let relayed_url = format!("{creds}@{}:{relay_port}/{url_db}", link.host_ip);

    let _server = tasker(TEST, "server", &db, &["server"], ENV);
    let mut b_env = ENV.to_vec();
    b_env.push(("DATABASE_URL", &relayed_url));
    let _b = tasker_via(
        &["ip", "netns", "exec", &link.netns],
        TEST,
        "worker-b",
        &db,
        &["worker", "-n", "sleep_workflow"],
        &b_env,
    );

    let mut tasks = Vec::new();
    for i in 0..4 {
        tasks.push(
            support::create(
                &db,
                "sleep_workflow",
                "parallel_sleep",
                json!({"sleep_ms": 4000 + i}),
            )
            .await,
        );
    }
    // Only B runs until it holds steps; then A starts, and B is cut off.
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasker.workflow_steps WHERE state = 'in_progress'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if held > 0 {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "worker B claimed nothing; see {}",
            log_path(TEST, "worker-b").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let b_id: String = sqlx::query_scalar(
        "SELECT claim_owner FROM tasker.workflow_steps WHERE state = 'in_progress' LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let _a = tasker(
        TEST,
        "worker-a",
        &db,
        &["worker", "-n", "sleep_workflow"],
        ENV,
    );
    link.set(false);
    tokio::time::sleep(CUT).await;
    link.set(true);

    for &t in &tasks {
        let task = wait_for_task(&db.pool, t, Duration::from_secs(120)).await;
        assert_eq!(task.state, "complete", "task {t}");
    }
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT step_uuid FROM tasker.step_result_audits WHERE success
                                GROUP BY step_uuid HAVING count(*) > 1) AS d",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(twice, 0, "a step's success was recorded more than once");
    let released: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.workflow_step_transitions
          WHERE to_state = 'enqueued' AND metadata->>'reason' = 'worker_lost'
            AND metadata->>'worker_id' = $1",
    )
    .bind(&b_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        released >= held,
        "B held {held} steps when cut off; {released} were released from it"
    );
    let recorded_by_b: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.step_result_audits a
          WHERE a.worker_id = $1
            AND EXISTS (SELECT 1 FROM tasker.workflow_step_transitions l
                         WHERE l.step_uuid = a.step_uuid AND l.to_state = 'enqueued'
                           AND l.metadata->>'reason' = 'worker_lost')",
    )
    .bind(&b_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded_by_b, 0,
        "a result of B's for a step taken from it was recorded"
    );
    // B's handlers finished while it was cut off; once back, their results were refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(log_path(TEST, "worker-b")).unwrap_or_default();
        if log.contains("result refused: this worker no longer holds the step's claim") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker B never reported a refused late result; see {}",
            log_path(TEST, "worker-b").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

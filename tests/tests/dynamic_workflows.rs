//! Decision points, batch fan-out and deferred convergence (DESIGN.md "Dynamic workflows"):
//! orchestration and the recording SQL against the real Postgres, with a test double on the
//! worker side so each outcome is exactly what the test says.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;
use tasker_orchestration::task_operations::{act_on_step, cancel_task, StepAction};
use tasker_orchestration::{OrchestrationError, TaskRequest};
use tasker_shared::models::{StepRow, TemplateRegistry, TransitionRow};
use tasker_shared::template::parse_template;
use tasker_tests::{toml_value, FakeOutcome, FakeWorker, Harness};
use uuid::Uuid;

const T: Duration = Duration::from_secs(30);
const NS: &str = "dyn_tests";

/// A decision whose branch holds a batchable step, and a decision inside a branch.
const CHAINS: &str = r#"
name: chains
namespace: dyn_tests
version: 1.0.0
steps:
  - name: route
    type: decision
    handler: { callable: X }
  - name: small
    dependencies: [route]
    handler: { callable: X }
  - name: big
    type: batchable
    dependencies: [route]
    batch: { worker: chunk, max_workers: 3 }
    handler: { callable: X }
  - name: chunk
    type: batch_worker
    dependencies: [big]
    handler: { callable: X }
  - name: gather
    type: deferred_convergence
    dependencies: [small, chunk]
    handler: { callable: X }
  - name: outer
    type: decision
    handler: { callable: X }
  - name: other
    dependencies: [outer]
    handler: { callable: X }
  - name: inner
    type: decision
    dependencies: [outer]
    handler: { callable: X }
  - name: left
    dependencies: [inner]
    handler: { callable: X }
  - name: left_after
    dependencies: [left]
    handler: { callable: X }
  - name: right
    dependencies: [inner]
    handler: { callable: X }
  - name: join
    type: deferred_convergence
    dependencies: [other, left_after, right]
    handler: { callable: X }
"#;

/// A batchable step whose worker can be made to fail for good.
const FRAGILE: &str = r#"
name: fragile_batch
namespace: dyn_tests
version: 1.0.0
steps:
  - name: plan
    type: batchable
    batch: { worker: work, max_workers: 10 }
    handler: { callable: X }
  - name: work
    type: batch_worker
    dependencies: [plan]
    handler: { callable: X }
    retry: { retryable: false, max_attempts: 1 }
  - name: total
    type: deferred_convergence
    dependencies: [work]
    handler: { callable: X }
"#;

async fn harness(overrides: &[(&str, toml_value::Value)]) -> Harness {
    let h = Harness::orchestration_only(overrides).await;
    let registry = TemplateRegistry::new(h.db.pool.clone());
    for text in [CHAINS, FRAGILE] {
        let t = parse_template(text, Path::new("dynamic_workflows.rs")).unwrap();
        registry.register(&t).await.unwrap();
    }
    h
}

fn ok(_: &str, _: i32) -> FakeOutcome {
    FakeOutcome::Success(json!(1))
}

fn choose(names: &[&str]) -> Value {
    json!({ "next_steps": names })
}

fn batches(n: usize) -> Value {
    json!({ "batches": (0..n).map(|i| json!({"batch_id": format!("{i:03}"), "start_cursor": i * 10, "end_cursor": i * 10 + 10})).collect::<Vec<_>>() })
}

async fn names(h: &Harness, task: Uuid) -> Vec<String> {
    let mut v: Vec<String> = h.steps(task).await.into_iter().map(|s| s.name).collect();
    v.sort();
    v
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

async fn step(h: &Harness, task: Uuid, name: &str) -> StepRow {
    StepRow::find_by_name(&h.db.pool, task, name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("task {task} has no step {name}"))
}

/// When a step first moved to `state`, from its transition log.
async fn reached(h: &Harness, step: &StepRow, state: &str) -> chrono::DateTime<chrono::Utc> {
    TransitionRow::for_step(&h.db.pool, step.step_uuid)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.to_state == state)
        .unwrap_or_else(|| panic!("{} never reached {state}", step.name))
        .created_at
}

/// The names a step's parents (edges into it), with whether the edge is a gate.
async fn parents(h: &Harness, step: &StepRow) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = sqlx::query_as(
        "SELECT p.name, e.gate FROM tasker.workflow_step_edges e
           JOIN tasker.workflow_steps p ON p.step_uuid = e.from_step_uuid
          WHERE e.to_step_uuid = $1",
    )
    .bind(step.step_uuid)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_chooses_one_several_or_none() {
    let h = harness(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    for (chosen, amount) in [
        (vec!["manager_approval"], 5000),
        (vec!["manager_approval", "finance_review"], 50000),
        (vec![], 0),
    ] {
        let task = h
            .create("approvals", "approval_routing", json!({"amount": amount}))
            .await;
        // Only what is certain exists before the decision: the convergence step waits on it.
        assert_eq!(names(&h, task).await, sorted(&["route", "finalize"]));
        let finalize = step(&h, task, "finalize").await;
        assert_eq!(parents(&h, &finalize).await, [("route".to_string(), false)]);

        let pick = choose(&chosen);
        let row = fake
            .run_task("approvals", task, T, |name, _| match name {
                "route" => FakeOutcome::Decided(json!({"route": "x"}), pick.clone()),
                _ => FakeOutcome::Success(json!({"approved_by": name})),
            })
            .await;
        assert_eq!(row.state, "complete", "choosing {chosen:?}");
        let mut expected = vec!["route", "finalize"];
        expected.extend(&chosen);
        assert_eq!(names(&h, task).await, sorted(&expected));
        let finalize = step(&h, task, "finalize").await;
        let mut want: Vec<(String, bool)> = expected
            .iter()
            .filter(|n| **n != "finalize")
            .map(|n| (n.to_string(), false))
            .collect();
        want.sort();
        assert_eq!(parents(&h, &finalize).await, want);
        // The convergence step ran after every created branch completed.
        let started = reached(&h, &finalize, "enqueued").await;
        for b in &chosen {
            assert!(reached(&h, &step(&h, task, b).await, "complete").await <= started);
        }
        assert_eq!(
            step(&h, task, "route").await.results,
            Some(json!({"route": "x"}))
        );
    }
    h.shutdown().await;
}

/// Namespace, template, the step deciding, its outcome, the error_type expected and text the
/// message must quote.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Option<Value>,
    &'static str,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_malformed_outcomes_fail_permanently_and_create_nothing() {
    let h = harness(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let cases: Vec<Case> = vec![
        (
            "approvals",
            "approval_routing",
            "route",
            Some(choose(&["nope"])),
            "invalid_decision",
            "\"nope\"",
        ),
        (
            "dyn_tests",
            "chains",
            "route",
            Some(choose(&["chunk"])),
            "invalid_decision",
            "\"chunk\"",
        ),
        (
            "approvals",
            "approval_routing",
            "route",
            Some(json!({"next_steps": "auto_approve"})),
            "invalid_decision",
            "\"auto_approve\"",
        ),
        (
            "approvals",
            "approval_routing",
            "route",
            Some(json!({"next_steps": [7]})),
            "invalid_decision",
            "7",
        ),
        (
            "approvals",
            "approval_routing",
            "route",
            None,
            "invalid_decision",
            "no next_steps",
        ),
        (
            "approvals",
            "approval_routing",
            "route",
            Some(json!({"choose": ["auto_approve"]})),
            "invalid_decision",
            "choose",
        ),
        (
            "approvals",
            "approval_routing",
            "route",
            Some(batches(1)),
            "invalid_batch",
            "only a batchable step",
        ),
        (
            "imports",
            "batched_import",
            "plan",
            Some(batches(101)),
            "invalid_batch",
            "101 batches",
        ),
        (
            "imports",
            "batched_import",
            "plan",
            Some(json!({"batches": [{"a": 1}, "x"]})),
            "invalid_batch",
            "batches[1]",
        ),
        (
            "imports",
            "batched_import",
            "plan",
            Some(json!({"batches": {"a": 1}})),
            "invalid_batch",
            "{\"a\": 1}",
        ),
        (
            "imports",
            "batched_import",
            "plan",
            None,
            "invalid_batch",
            "no batches",
        ),
        (
            "imports",
            "batched_import",
            "plan",
            Some(choose(&["aggregate"])),
            "invalid_decision",
            "only a decision step",
        ),
    ];
    for (ns, name, decider, outcome, error_type, named) in cases {
        let task = h
            .create(ns, name, json!({"amount": 1, "rows": 1, "batch_size": 1}))
            .await;
        let before = names(&h, task).await;
        let row = fake
            .run_task(ns, task, T, |step, _| match (step == decider, &outcome) {
                (true, Some(o)) => FakeOutcome::Decided(json!({"r": 1}), o.clone()),
                _ => FakeOutcome::Success(json!({"r": 1})),
            })
            .await;
        assert_eq!(row.state, "error", "{ns}/{name} {outcome:?}");
        tasker_tests::wait_for_results_applied(&h.db.pool, task, T).await;
        let s = step(&h, task, decider).await;
        let err = s.last_error.clone().unwrap();
        assert_eq!(err["error_type"], json!(error_type), "{outcome:?}: {err}");
        assert_eq!(err["retryable"], json!(false));
        assert!(
            err["message"].as_str().unwrap().contains(named),
            "{outcome:?}: {err}"
        );
        assert_eq!(
            (s.state.as_str(), s.attempts),
            ("error", 1),
            "final on the first attempt"
        );
        assert_eq!(s.results, None, "a refused outcome's result is not kept");
        assert_eq!(
            names(&h, task).await,
            before,
            "nothing created for {outcome:?}"
        );
    }
    // A standard step may not decide either.
    let task = h
        .create(
            "imports",
            "batched_import",
            json!({"rows": 0, "batch_size": 1}),
        )
        .await;
    let row = fake
        .run_task("imports", task, T, |step, _| match step {
            "plan" => FakeOutcome::Decided(json!(1), batches(0)),
            _ => FakeOutcome::Decided(json!(1), choose(&[])),
        })
        .await;
    assert_eq!(row.state, "error");
    let agg = step(&h, task, "aggregate").await;
    assert_eq!(
        agg.last_error.unwrap()["error_type"],
        json!("invalid_decision")
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_create_numbered_workers_and_empty_batches_still_converge() {
    let h = harness(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;

    let task = h
        .create(
            "imports",
            "batched_import",
            json!({"rows": 30, "batch_size": 10}),
        )
        .await;
    assert_eq!(names(&h, task).await, sorted(&["plan", "aggregate"]));
    let agg = step(&h, task, "aggregate").await;
    assert_eq!(
        parents(&h, &agg).await,
        [("plan".to_string(), true)],
        "a gate edge"
    );
    let row = fake
        .run_task("imports", task, T, |name, _| match name {
            "plan" => FakeOutcome::Decided(json!({"total": 30}), batches(3)),
            _ => FakeOutcome::Success(json!({"count": 10})),
        })
        .await;
    assert_eq!(row.state, "complete");
    let workers = [
        "process_batch_000",
        "process_batch_001",
        "process_batch_002",
    ];
    let mut expected = vec!["plan", "aggregate"];
    expected.extend(workers);
    assert_eq!(names(&h, task).await, sorted(&expected));
    for (i, w) in workers.iter().enumerate() {
        let s = step(&h, task, w).await;
        assert_eq!(s.step_type, "batch_worker");
        assert_eq!(s.inputs["batch"]["start_cursor"], json!(i * 10));
        assert_eq!(s.inputs["batch"]["batch_id"], json!(format!("{i:03}")));
        assert_eq!(parents(&h, &s).await, [("plan".to_string(), false)]);
    }
    let agg = step(&h, task, "aggregate").await;
    let mut want: Vec<(String, bool)> = workers.iter().map(|w| (w.to_string(), false)).collect();
    want.push(("plan".to_string(), true));
    want.sort();
    assert_eq!(parents(&h, &agg).await, want);
    let started = reached(&h, &step(&h, task, "aggregate").await, "enqueued").await;
    for w in workers {
        assert!(reached(&h, &step(&h, task, w).await, "complete").await <= started);
    }

    // No batches: the convergence step still runs, right after the batchable step.
    let task = h
        .create(
            "imports",
            "batched_import",
            json!({"rows": 0, "batch_size": 10}),
        )
        .await;
    let row = fake
        .run_task("imports", task, T, |name, _| match name {
            "plan" => FakeOutcome::Decided(json!({"total": 0}), batches(0)),
            _ => FakeOutcome::Success(json!({"batches": 0})),
        })
        .await;
    assert_eq!(row.state, "complete");
    assert_eq!(names(&h, task).await, sorted(&["plan", "aggregate"]));
    assert_eq!(step(&h, task, "aggregate").await.state, "complete");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_duplicates_and_replays_create_nothing_twice() {
    let h = harness(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;

    // A failed attempt (even one carrying an outcome) creates nothing; the retry that
    // succeeds creates the batch once.
    let task = h
        .create(
            "imports",
            "batched_import",
            json!({"rows": 20, "batch_size": 10}),
        )
        .await;
    let row = fake
        .run_task("imports", task, T, |name, attempt| match (name, attempt) {
            ("plan", 1) => FakeOutcome::Failure {
                retryable: true,
                retry_after_ms: Some(0),
            },
            ("plan", _) => FakeOutcome::Decided(json!({"total": 20}), batches(2)),
            _ => FakeOutcome::Success(json!({"count": 10})),
        })
        .await;
    assert_eq!(row.state, "complete");
    assert_eq!(step(&h, task, "plan").await.attempts, 2);
    assert_eq!(
        names(&h, task).await,
        sorted(&[
            "plan",
            "aggregate",
            "process_batch_000",
            "process_batch_001"
        ])
    );

    // The same recorded result delivered twice, and its orchestration message replayed.
    let task = h
        .create("approvals", "approval_routing", json!({"amount": 5}))
        .await;
    let route = step(&h, task, "route").await;
    wait_until_enqueued(&h, &route).await;
    let claimed: String =
        sqlx::query_scalar("SELECT outcome FROM tasker.claim_steps($1, 'w1', 60)")
            .bind(vec![route.step_uuid])
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(claimed, "claimed");
    let payload = json!([{
        "step_uuid": route.step_uuid, "attempt": 1, "success": true, "result": {"route": "auto"},
        "error": null, "execution_ms": 1, "metadata": {}, "outcome": choose(&["auto_approve"]),
    }]);
    for delivery in 0..2 {
        let refused: Vec<Uuid> = sqlx::query_scalar("SELECT tasker.record_step_results('w1', $1)")
            .bind(&payload)
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
        assert_eq!(refused.is_empty(), delivery == 0, "delivery {delivery}");
        assert_eq!(
            names(&h, task).await,
            sorted(&["route", "finalize", "auto_approve"])
        );
    }
    let edges: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasker.workflow_step_edges WHERE task_uuid = $1")
            .bind(task)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(
        edges, 3,
        "route -> finalize, route -> auto_approve, auto_approve -> finalize: once each"
    );
    let message = json!([{"msg_id": -1, "task_uuid": task, "step_uuid": route.step_uuid, "attempt": 1, "success": true, "worker_id": "w1"}]);
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let out: String = sqlx::query_scalar(
            "SELECT outcome FROM tasker.process_step_results($1, 'test', 0, 1000)",
        )
        .bind(&message)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        outcomes.push(out);
    }
    // The orchestrator's own processor may have applied the recorded message before the
    // first replay (then both are ignored): either way it is applied once, never twice.
    assert!(
        outcomes == ["completed", "ignored"] || outcomes == ["ignored", "ignored"],
        "{outcomes:?}"
    );
    let completions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.workflow_step_transitions
          WHERE step_uuid = $1 AND to_state = 'complete'",
    )
    .bind(route.step_uuid)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(completions, 1, "the result applied exactly once");
    // Applying the outcome again (what a replay inside the database would do) adds nothing.
    let created: i32 = sqlx::query_scalar("SELECT tasker.expand_steps($1, 'test')")
        .bind(task)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(created, 0);
    assert_eq!(
        fake.run_task("approvals", task, T, ok).await.state,
        "complete"
    );
    assert_eq!(
        names(&h, task).await,
        sorted(&["route", "finalize", "auto_approve"])
    );
    h.shutdown().await;
}

async fn wait_until_enqueued(h: &Harness, s: &StepRow) {
    let start = std::time::Instant::now();
    while step(h, s.task_uuid, &s.name).await.state != "enqueued" {
        assert!(start.elapsed() < T);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_worker_failing_for_good_blocks_until_reset() {
    let h = harness(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let task = h.create(NS, "fragile_batch", json!({})).await;
    let fail_001 = |name: &str, _: i32| match name {
        "plan" => FakeOutcome::Decided(json!(null), batches(3)),
        "work_001" => FakeOutcome::Failure {
            retryable: false,
            retry_after_ms: None,
        },
        _ => FakeOutcome::Success(json!(1)),
    };
    assert_eq!(fake.run_task(NS, task, T, fail_001).await.state, "error");
    tasker_tests::wait_for_results_applied(&h.db.pool, task, T).await;
    assert_eq!(step(&h, task, "work_001").await.state, "error");
    assert_eq!(
        step(&h, task, "total").await.state,
        "pending",
        "the convergence step never ran"
    );
    // Its readiness comes from counters kept as parents were added and finished: three
    // copies and the batchable step's gate, one copy still unfinished.
    assert_eq!(parent_counts(&h, task, "total").await, (4, 3));

    let reset = act_on_step(
        &h.db.pool,
        h.core.queues.notifier(),
        task,
        "work_001",
        &StepAction::Reset,
        "test",
    )
    .await
    .unwrap();
    assert_eq!(reset.state, "enqueued");
    assert_eq!(fake.run_task(NS, task, T, ok).await.state, "complete");
    assert_eq!(step(&h, task, "total").await.state, "complete");
    assert_eq!(
        names(&h, task).await,
        sorted(&["plan", "total", "work_000", "work_001", "work_002"])
    );
    assert_eq!(parent_counts(&h, task, "total").await, (4, 4));

    // Resolving the failed copy by hand counts it as finished too.
    let task = h.create(NS, "fragile_batch", json!({})).await;
    assert_eq!(fake.run_task(NS, task, T, fail_001).await.state, "error");
    act_on_step(
        &h.db.pool,
        h.core.queues.notifier(),
        task,
        "work_001",
        &StepAction::Resolve,
        "test",
    )
    .await
    .unwrap();
    assert_eq!(fake.run_task(NS, task, T, ok).await.state, "complete");
    assert_eq!(parent_counts(&h, task, "total").await, (4, 4));
    h.shutdown().await;
}

/// A step's (total_parents, completed_parents) as readiness reports them.
async fn parent_counts(h: &Harness, task: Uuid, name: &str) -> (i32, i32) {
    sqlx::query_as(
        "SELECT total_parents, completed_parents FROM tasker.get_step_readiness_status($1) WHERE name = $2",
    )
    .bind(task)
    .bind(name)
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_then_batch_then_convergence() {
    let h = harness(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let decide = |name: &str, _: i32| match name {
        "route" => FakeOutcome::Decided(json!("big"), choose(&["big"])),
        "big" => FakeOutcome::Decided(json!(2), batches(2)),
        "outer" => FakeOutcome::Decided(json!(null), choose(&[])),
        _ => FakeOutcome::Success(json!(1)),
    };
    let task = h.create(NS, "chains", json!({})).await;
    assert_eq!(
        names(&h, task).await,
        sorted(&["route", "gather", "outer", "join"])
    );
    assert_eq!(fake.run_task(NS, task, T, decide).await.state, "complete");
    assert_eq!(
        names(&h, task).await,
        sorted(&[
            "route",
            "big",
            "chunk_000",
            "chunk_001",
            "gather",
            "outer",
            "join"
        ])
    );
    let gather = step(&h, task, "gather").await;
    let p: HashSet<String> = parents(&h, &gather)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(p.contains("chunk_000") && p.contains("chunk_001"), "{p:?}");
    let started = reached(&h, &gather, "enqueued").await;
    for c in ["chunk_000", "chunk_001", "big"] {
        assert!(
            reached(&h, &step(&h, task, c).await, "complete").await <= started,
            "{c}"
        );
    }

    // Decision chooses the standard branch: no batch at all.
    let task = h.create(NS, "chains", json!({})).await;
    let row = fake
        .run_task(NS, task, T, |name, a| match name {
            "route" => FakeOutcome::Decided(json!("small"), choose(&["small"])),
            _ => decide(name, a),
        })
        .await;
    assert_eq!(row.state, "complete");
    assert_eq!(
        names(&h, task).await,
        sorted(&["route", "small", "gather", "outer", "join"])
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_inside_a_branch() {
    let h = harness(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let task = h.create(NS, "chains", json!({})).await;
    let row = fake
        .run_task(NS, task, T, |name, _| match name {
            "route" => FakeOutcome::Decided(json!(null), choose(&[])),
            "outer" => FakeOutcome::Decided(json!(null), choose(&["inner", "other"])),
            "inner" => FakeOutcome::Decided(json!(null), choose(&["left"])),
            _ => FakeOutcome::Success(json!(1)),
        })
        .await;
    assert_eq!(row.state, "complete");
    assert_eq!(
        names(&h, task).await,
        sorted(&[
            "route",
            "gather",
            "outer",
            "inner",
            "other",
            "left",
            "left_after",
            "join"
        ])
    );
    let join = step(&h, task, "join").await;
    let p: Vec<String> = parents(&h, &join)
        .await
        .into_iter()
        .filter(|(_, gate)| !gate)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(p, sorted(&["left_after", "other"]));
    let started = reached(&h, &join, "enqueued").await;
    for s in ["left_after", "other", "inner"] {
        assert!(
            reached(&h, &step(&h, task, s).await, "complete").await <= started,
            "{s}"
        );
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_steps_per_task_caps_templates_and_batches() {
    let h = harness(&[(
        "orchestration.max_steps_per_task",
        toml_value::Value::Integer(8),
    )])
    .await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let err = h
        .core
        .initializer
        .create_task(&TaskRequest {
            namespace: NS.into(),
            name: "chains".into(),
            version: "1.0.0".into(),
            context: json!({}),
            idempotency_key: None,
            initiator: None,
            run_at: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OrchestrationError::TooManySteps {
                steps: 12,
                max: 8,
                ..
            }
        ),
        "{err}"
    );

    // plan + total leave room for 6 copies (the worker template is not a step).
    for (n, state) in [(7, "error"), (6, "complete")] {
        let task = h.create(NS, "fragile_batch", json!({})).await;
        let row = fake
            .run_task(NS, task, T, |name, _| match name {
                "plan" => FakeOutcome::Decided(json!(null), batches(n)),
                _ => FakeOutcome::Success(json!(1)),
            })
            .await;
        assert_eq!(row.state, state, "{n} batches");
        if state == "error" {
            let e = step(&h, task, "plan").await.last_error.unwrap();
            assert_eq!(e["error_type"], json!("invalid_batch"));
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("max_steps_per_task"),
                "{e}"
            );
        }
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_landing_after_cancellation_creates_nothing() {
    let h = harness(&[]).await;
    let task = h
        .create(
            "imports",
            "batched_import",
            json!({"rows": 30, "batch_size": 10}),
        )
        .await;
    let plan = step(&h, task, "plan").await;
    wait_until_enqueued(&h, &plan).await;
    let claimed: String =
        sqlx::query_scalar("SELECT outcome FROM tasker.claim_steps($1, 'w1', 60)")
            .bind(vec![plan.step_uuid])
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(claimed, "claimed");
    cancel_task(&h.db.pool, task, "test").await.unwrap();
    let refused: Vec<Uuid> = sqlx::query_scalar("SELECT tasker.record_step_results('w1', $1)")
        .bind(json!([{
            "step_uuid": plan.step_uuid, "attempt": 1, "success": true, "result": {"total": 30},
            "error": null, "execution_ms": 1, "metadata": {}, "outcome": batches(3),
        }]))
        .fetch_all(&h.db.pool)
        .await
        .unwrap();
    assert!(refused.is_empty(), "the in-flight result is still recorded");
    assert_eq!(names(&h, task).await, sorted(&["plan", "aggregate"]));
    h.shutdown().await;
}

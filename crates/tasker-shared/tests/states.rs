use proptest::prelude::*;
use std::collections::BTreeSet;
use tasker_shared::models::{transition_step, transition_task, StoreError};
use tasker_shared::state::{StepState, TaskState, STEP_TRANSITIONS, TASK_TRANSITIONS};
use tasker_shared::testing::TestDatabase;
use uuid::Uuid;

proptest! {
    #[test]
    fn step_transition_table_is_the_only_truth(from in 0..StepState::ALL.len(), to in 0..StepState::ALL.len()) {
        let (f, t) = (StepState::ALL[from], StepState::ALL[to]);
        let listed = STEP_TRANSITIONS.contains(&(f, t));
        prop_assert_eq!(f.can_transition_to(t), listed);
        prop_assert_eq!(f.check_transition(t, "s").is_ok(), listed);
        if f == StepState::Complete || f == StepState::Cancelled || f == StepState::ResolvedManually {
            prop_assert!(!listed, "terminal {} must not move", f);
        }
    }

    #[test]
    fn task_transition_table_is_the_only_truth(from in 0..TaskState::ALL.len(), to in 0..TaskState::ALL.len()) {
        let (f, t) = (TaskState::ALL[from], TaskState::ALL[to]);
        let listed = TASK_TRANSITIONS.contains(&(f, t));
        prop_assert_eq!(f.can_transition_to(t), listed);
        prop_assert_eq!(f.check_transition(t, "t").is_ok(), listed);
        if matches!(f, TaskState::Complete | TaskState::Cancelled | TaskState::ResolvedManually) {
            prop_assert!(!listed, "terminal {} must not move", f);
        }
    }

    #[test]
    fn state_names_round_trip(i in 0..StepState::ALL.len(), j in 0..TaskState::ALL.len()) {
        prop_assert_eq!(StepState::ALL[i].as_str().parse::<StepState>().unwrap(), StepState::ALL[i]);
        prop_assert_eq!(TaskState::ALL[j].as_str().parse::<TaskState>().unwrap(), TaskState::ALL[j]);
    }
}

#[tokio::test]
async fn sql_transition_tables_match_rust() {
    let db = TestDatabase::new().await;
    let sql_steps: BTreeSet<(String, String)> =
        sqlx::query_as("SELECT from_state, to_state FROM tasker.step_state_transitions")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let rust_steps: BTreeSet<(String, String)> = STEP_TRANSITIONS
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(sql_steps, rust_steps);
    let sql_tasks: BTreeSet<(String, String)> =
        sqlx::query_as("SELECT from_state, to_state FROM tasker.task_state_transitions")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let rust_tasks: BTreeSet<(String, String)> = TASK_TRANSITIONS
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(sql_tasks, rust_tasks);
}

async fn one_step_task(db: &TestDatabase) -> (Uuid, Uuid) {
    let ns: Uuid = sqlx::query_scalar(
        "INSERT INTO tasker.namespaces (name) VALUES ('ns') RETURNING namespace_uuid",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let nt: Uuid = sqlx::query_scalar(
        "INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template) VALUES ($1, 't', '1', '{}') RETURNING named_task_uuid",
    ).bind(ns).fetch_one(&db.pool).await.unwrap();
    let task: Uuid = sqlx::query_scalar(
        "INSERT INTO tasker.tasks (named_task_uuid) VALUES ($1) RETURNING task_uuid",
    )
    .bind(nt)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let step: Uuid = sqlx::query_scalar(
        "INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable, max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms)
         VALUES ($1, 's', 0, 'X', 3, true, 'none', 0, 0) RETURNING step_uuid",
    ).bind(task).fetch_one(&db.pool).await.unwrap();
    (task, step)
}

#[tokio::test]
async fn every_allowed_step_transition_succeeds_in_sql_and_history_is_kept() {
    let db = TestDatabase::new().await;
    let (_, step) = one_step_task(&db).await;
    for (from, to) in STEP_TRANSITIONS {
        // With an error, as every step moved into a failed or retrying state has one.
        sqlx::query(
            "UPDATE tasker.workflow_steps SET state = $2, last_error = '{\"message\": \"x\"}'
              WHERE step_uuid = $1",
        )
        .bind(step)
        .bind(from.as_str())
        .execute(&db.pool)
        .await
        .unwrap();
        assert!(
            transition_step(&db.pool, step, *from, *to, "test", serde_json::json!({}))
                .await
                .unwrap(),
            "{from} -> {to}"
        );
    }
    let (count, recent): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE most_recent) FROM tasker.workflow_step_transitions WHERE step_uuid = $1",
    ).bind(step).fetch_one(&db.pool).await.unwrap();
    assert_eq!(count as usize, STEP_TRANSITIONS.len());
    assert_eq!(recent, 1);
}

#[tokio::test]
async fn every_allowed_task_transition_succeeds_in_sql() {
    let db = TestDatabase::new().await;
    let (task, _) = one_step_task(&db).await;
    for (from, to) in TASK_TRANSITIONS {
        sqlx::query("UPDATE tasker.tasks SET state = $2 WHERE task_uuid = $1")
            .bind(task)
            .bind(from.as_str())
            .execute(&db.pool)
            .await
            .unwrap();
        assert!(
            transition_task(&db.pool, task, *from, *to, "test", serde_json::json!({}))
                .await
                .unwrap(),
            "{from} -> {to}"
        );
    }
    let history = tasker_shared::models::TransitionRow::for_task(&db.pool, task)
        .await
        .unwrap();
    assert_eq!(history.len(), TASK_TRANSITIONS.len());
    assert!(history.last().unwrap().most_recent);
}

#[tokio::test]
async fn illegal_transitions_are_refused_in_rust_and_in_sql() {
    let db = TestDatabase::new().await;
    let (_, step) = one_step_task(&db).await;
    let err = transition_step(
        &db.pool,
        step,
        StepState::Pending,
        StepState::Complete,
        "t",
        serde_json::json!({}),
    )
    .await;
    assert!(
        err.is_ok(),
        "pending -> complete is an operator action and allowed"
    );
    let err = transition_step(
        &db.pool,
        step,
        StepState::Complete,
        StepState::Pending,
        "t",
        serde_json::json!({}),
    )
    .await;
    assert!(matches!(err, Err(StoreError::IllegalTransition(_))));
    // Bypassing the Rust check, the SQL function refuses it too.
    let sql = sqlx::query_scalar::<_, bool>(
        "SELECT tasker.transition_step($1, 'complete', 'in_progress', 't')",
    )
    .bind(step)
    .fetch_one(&db.pool)
    .await;
    assert!(sql.unwrap_err().to_string().contains("not allowed"));
}

#[tokio::test]
async fn compare_and_swap_loses_when_state_moved_underneath() {
    let db = TestDatabase::new().await;
    let (_, step) = one_step_task(&db).await;
    transition_step(
        &db.pool,
        step,
        StepState::Pending,
        StepState::Enqueued,
        "o",
        serde_json::json!({}),
    )
    .await
    .unwrap();
    // Two workers race to claim the same enqueued step: exactly one wins.
    let (a, b) = tokio::join!(
        transition_step(
            &db.pool,
            step,
            StepState::Enqueued,
            StepState::InProgress,
            "w1",
            serde_json::json!({})
        ),
        transition_step(
            &db.pool,
            step,
            StepState::Enqueued,
            StepState::InProgress,
            "w2",
            serde_json::json!({})
        ),
    );
    assert_eq!(
        [a.unwrap(), b.unwrap()].iter().filter(|won| **won).count(),
        1
    );
    // A stale view of the state loses.
    assert!(!transition_step(
        &db.pool,
        step,
        StepState::Enqueued,
        StepState::Cancelled,
        "o",
        serde_json::json!({})
    )
    .await
    .unwrap());
}

#[tokio::test]
async fn each_step_and_task_has_exactly_one_most_recent_transition() {
    let db = TestDatabase::new().await;
    let (task, step) = one_step_task(&db).await;
    // A step's transitions are a list in its row: each transition appends one, the last is
    // the most recent, and sort keys are the places in the list.
    for (from, to) in [
        (StepState::Pending, StepState::Enqueued),
        (StepState::Enqueued, StepState::InProgress),
    ] {
        assert!(
            transition_step(&db.pool, step, from, to, "test", serde_json::json!({}))
                .await
                .unwrap()
        );
    }
    let rows: Vec<(i32, bool, String)> = sqlx::query_as(
        "SELECT sort_key, most_recent, to_state FROM tasker.workflow_step_transitions
          WHERE step_uuid = $1 ORDER BY sort_key",
    )
    .bind(step)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (0, false, "enqueued".to_string()),
            (1, true, "in_progress".to_string())
        ]
    );
    // A task's transitions are a list in its row too.
    for (from, to) in [
        (TaskState::Pending, TaskState::Initializing),
        (TaskState::Initializing, TaskState::EnqueuingSteps),
    ] {
        assert!(
            transition_task(&db.pool, task, from, to, "test", serde_json::json!({}))
                .await
                .unwrap()
        );
    }
    let rows: Vec<(i32, bool, String)> = sqlx::query_as(
        "SELECT sort_key, most_recent, to_state FROM tasker.task_transitions
          WHERE task_uuid = $1 ORDER BY sort_key",
    )
    .bind(task)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (0, false, "initializing".to_string()),
            (1, true, "enqueuing_steps".to_string())
        ]
    );
}

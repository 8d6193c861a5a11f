use sqlx::postgres::PgListener;
use std::time::Duration;
use tasker_shared::queue::{
    notify_channel, sent_by_this_process, worker_queue, QueueClient, QueueName,
};
use tasker_shared::testing::TestDatabase;

#[tokio::test]
async fn notifier_wakes_listeners_and_read_hides_message() {
    let db = TestDatabase::new().await;
    let queues = QueueClient::new(db.pool.clone()).await;
    let q = worker_queue("billing").unwrap();
    queues.ensure_queue(&q).await.unwrap();
    queues.ensure_queue(&q).await.unwrap();

    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen(&notify_channel(&q)).await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    queues
        .send_batch(
            &q,
            &[serde_json::json!({"n": 1}), serde_json::json!({"n": 2})],
            &mut *tx,
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    queues.notify(&q);

    let note = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a NOTIFY arrives")
        .unwrap();
    assert_eq!(note.channel(), notify_channel(&q));
    assert!(
        sent_by_this_process(note.payload()),
        "the payload names this process, so its own consumers can skip the echo"
    );
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(notify_channel(&q))
        .execute(&db.pool)
        .await
        .unwrap();
    let foreign = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a NOTIFY arrives")
        .unwrap();
    assert!(!sent_by_this_process(foreign.payload()));

    let read = queues.read(&q, 30, 10).await.unwrap();
    assert_eq!(read.len(), 2);
    assert!(
        queues.read(&q, 30, 10).await.unwrap().is_empty(),
        "read messages are invisible"
    );
    assert_eq!(queues.depth(&q).await.unwrap(), 2);
    let ids: Vec<i64> = read.iter().map(|m| m.msg_id).collect();
    assert_eq!(queues.delete_batch(&q, &ids, &db.pool).await.unwrap(), 2);
    assert_eq!(queues.depth(&q).await.unwrap(), 0);
}

#[tokio::test]
async fn rolled_back_send_leaves_no_message() {
    let db = TestDatabase::new().await;
    let queues = QueueClient::new(db.pool.clone()).await;
    let q = QueueName::new("rollback_check").unwrap();
    queues.ensure_queue(&q).await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    queues
        .send(&q, &serde_json::json!({}), &mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(queues.depth(&q).await.unwrap(), 0);
}

#[tokio::test]
async fn migrate_is_idempotent_and_creates_orchestration_queue() {
    let db = TestDatabase::new().await;
    tasker_shared::database::migrate(&db.pool).await.unwrap();
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = 'orchestration_step_results')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(exists);
}

#[tokio::test]
async fn create_database_if_missing_creates_once() {
    let name = format!("tasker_t_create_{}", uuid::Uuid::new_v4().simple());
    let server = tasker_shared::testing::server_url();
    let url = format!("{}/{}", server.rsplit_once('/').unwrap().0, name);
    assert!(tasker_shared::database::create_database_if_missing(&url)
        .await
        .unwrap());
    assert!(!tasker_shared::database::create_database_if_missing(&url)
        .await
        .unwrap());
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&server).await.unwrap();
    sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn queue_tables_full_of_dead_rows_are_vacuumed() {
    let db = TestDatabase::new().await;
    let queues = QueueClient::new(db.pool.clone()).await;
    let q = worker_queue("churn").unwrap();
    queues.ensure_queue(&q).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query(&format!(
        "WITH sent AS (SELECT pgmq.send_batch('{q}', array_fill('{{}}'::jsonb, ARRAY[1500])) AS id)
         SELECT pgmq.delete('{q}', array_agg(id)) FROM sent",
        q = q.as_str()
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    // This session's counts reach the statistics system when it next goes idle.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let table = format!("pgmq.q_{}", q.as_str());
    let dead = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = 'pgmq' AND relname = $1",
        )
        .bind(format!("q_{}", q.as_str()))
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dead().await < 1500 {
        assert!(
            std::time::Instant::now() < deadline,
            "dead rows never counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let size = || async {
        sqlx::query_scalar::<_, i64>("SELECT pg_relation_size($1::regclass)")
            .bind(&table)
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let before = size().await;
    assert!(before > 0);

    let vacuumed = tasker_shared::queue::vacuum_queues(&db.pool, 1000)
        .await
        .unwrap();
    assert_eq!(vacuumed, std::slice::from_ref(&table));
    assert_eq!(dead().await, 0);
    // The emptied pages stay: truncating them would have locked the queue against every
    // send and read, for pages the next sends fill again.
    assert_eq!(size().await, before, "the vacuum truncated the queue table");
    assert!(
        tasker_shared::queue::vacuum_queues(&db.pool, 1000)
            .await
            .unwrap()
            .is_empty(),
        "nothing left to vacuum"
    );
}

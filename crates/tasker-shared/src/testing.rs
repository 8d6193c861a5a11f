//! A fresh, fully migrated database per test, copied from a template database that is built
//! once per schema version. Tests run in parallel against the real Postgres and leave nothing
//! behind: the database is dropped when the handle is dropped.

use crate::database::{migrate, quote_ident, MIGRATOR};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Where test databases are created: `TASKER_TEST_DATABASE_URL`, else a local server.
pub fn server_url() -> String {
    std::env::var("TASKER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

fn server_options() -> PgConnectOptions {
    PgConnectOptions::from_str(&server_url())
        .expect("TASKER_TEST_DATABASE_URL is not a valid Postgres URL")
        .disable_statement_logging()
}

async fn admin() -> PgConnection {
    server_options()
        .database("postgres")
        .connect()
        .await
        .expect("cannot reach Postgres for tests (set TASKER_TEST_DATABASE_URL)")
}

/// Names the template after the migrations and the PGMQ crate, so a schema change builds
/// a new template instead of reusing a stale one.
fn template_name() -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for m in MIGRATOR.iter() {
        m.version.hash(&mut h);
        m.checksum.hash(&mut h);
    }
    "pgmq-0.33".hash(&mut h);
    format!("tasker_tpl_{:016x}", h.finish())
}

async fn ensure_template(conn: &mut PgConnection) -> String {
    let name = template_name();
    // Several test binaries may start at once: one builds, the others wait.
    sqlx::query("SELECT pg_advisory_lock(7415)")
        .execute(&mut *conn)
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    if !exists {
        let building = format!("{name}_building");
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&building)
        ))
        .execute(&mut *conn)
        .await
        .unwrap();
        sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&building)))
            .execute(&mut *conn)
            .await
            .unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(server_options().database(&building))
            .await
            .unwrap();
        migrate(&pool)
            .await
            .expect("migrating the test template database");
        pool.close().await;
        // A closed connection's server process can linger for a moment; RENAME needs none.
        let rename = format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(&building),
            quote_ident(&name)
        );
        for attempt in 0.. {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&building)
            .execute(&mut *conn)
            .await
            .unwrap();
            match sqlx::query(&rename).execute(&mut *conn).await {
                Ok(_) => break,
                Err(e) if attempt < 50 => {
                    tracing::debug!(error = %e, "template database still in use; retrying rename");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("renaming the test template database: {e}"),
            }
        }
    }
    sqlx::query("SELECT pg_advisory_unlock(7415)")
        .execute(&mut *conn)
        .await
        .unwrap();
    name
}

/// One test's private database.
pub struct TestDatabase {
    pub pool: PgPool,
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// Creates a migrated database (PGMQ installed, orchestration queue created).
    pub async fn new() -> Self {
        Self::with_max_connections(10).await
    }

    pub async fn with_max_connections(max: u32) -> Self {
        let mut conn = admin().await;
        let template = ensure_template(&mut conn).await;
        Self::create(conn, &template, max).await
    }

    /// An empty database (no schema, no PGMQ), for tests of migrating itself.
    pub async fn empty() -> Self {
        Self::create(admin().await, "template0", 4).await
    }

    async fn create(mut conn: PgConnection, template: &str, max: u32) -> Self {
        let name = format!("tasker_t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&name),
            quote_ident(template)
        ))
        .execute(&mut conn)
        .await
        .expect("creating a test database");
        conn.close().await.ok();
        let options = server_options().database(&name);
        let url = options.to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .connect_with(options)
            .await
            .expect("connecting to the test database");
        Self { pool, name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // Drop runs inside the test's runtime, which cannot be blocked on; a helper thread
        // with its own small runtime does the DROP.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping the test database");
            rt.block_on(async move {
                let mut conn = admin().await;
                let _ = sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&name)
                ))
                .execute(&mut conn)
                .await;
                conn.close().await.ok();
            });
        });
        let _ = handle.join();
    }
}

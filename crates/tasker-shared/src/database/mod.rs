//! Connecting to Postgres, creating the database, running migrations and installing PGMQ.

use crate::config::DatabaseConfig;
use crate::queue::{QueueClient, QueueError, QueueName, ORCHESTRATION_RESULTS_QUEUE};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;
use std::time::Duration;

mod hot_connection;
mod legacy;

pub use hot_connection::{HotConnection, Lease};

pub use legacy::{adopt_squashed_migrations, BASELINE_VERSION, SQUASHED_VERSIONS};

/// The schema and SQL functions, compiled in so every binary and the gem can migrate: a
/// baseline and the changes since (`db/` holds the current definitions; docs/sql.md).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// A pooled connection idle at least this long is pinged before it is handed out, so one
/// the server dropped meanwhile (a restart, an idle timeout) is replaced rather than
/// failing its caller's statement. One used more recently goes out as is: pinging it
/// cost a round trip per statement (0.2 ms of a 0.7 ms read from Ruby, idle) and a
/// wake-up of its backend, for a server that was there a moment ago.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Serialises concurrent `migrate` runs against one database.
const MIGRATE_LOCK_KEY: i64 = 0x7461_736b_6572_0001;

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("invalid database URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("creating database '{name}': {source}")]
    Create {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("running migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the database ran some of the migrations squashed into the baseline but not {missing:?}: \
         migrate it with a Tasker from before the squash (commit 51467bd) first"
    )]
    PartialLegacySchema { missing: Vec<i64> },
    #[error("installing PGMQ: {0}")]
    Pgmq(#[from] pgmq::PgmqError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

fn options(url: &str) -> Result<PgConnectOptions, DatabaseError> {
    PgConnectOptions::from_str(url)
        .map(|o| o.disable_statement_logging())
        .map_err(|e| DatabaseError::InvalidUrl {
            url: redact(url),
            reason: e.to_string(),
        })
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The database name in a URL.
pub fn database_name(url: &str) -> Result<String, DatabaseError> {
    options(url)?
        .get_database()
        .map(str::to_string)
        .ok_or_else(|| DatabaseError::InvalidUrl {
            url: redact(url),
            reason: "names no database".into(),
        })
}

/// A pool sized by `[database]`.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, DatabaseError> {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(config.acquire_timeout())
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        // No JIT: every statement here is short, and a function scan's default estimate
        // of 1,000 rows can cost one high enough to be compiled first (the stale-task
        // sweep spent 0.6 s of CPU compiling a query that ran in 50 ms).
        // No sequential scans where an index serves: a queue table's statistics are a
        // snapshot of a table that empties and refills in seconds, and a claim planned
        // while it looked empty (after a vacuum) read every page, dead rows included, for
        // each claim until the next analyze: a worker ran 4x slower for a whole bench run.
        .connect_with(options(&config.url)?.options([
            ("synchronous_commit", config.synchronous_commit.as_str()),
            ("jit", "off"),
            ("enable_seqscan", "off"),
        ]))
        .await
        .map_err(|source| DatabaseError::Connect {
            target: redact(&config.url),
            source,
        })
}

/// Creates the URL's database if it does not exist (connecting to the server's `postgres`
/// database to do so). Returns whether it was created.
pub async fn create_database_if_missing(url: &str) -> Result<bool, DatabaseError> {
    let name = database_name(url)?;
    let admin = options(url)?.database("postgres");
    let mut conn = admin
        .connect()
        .await
        .map_err(|source| DatabaseError::Connect {
            target: redact(url),
            source,
        })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if exists {
        conn.close().await.ok();
        return Ok(false);
    }
    let created = sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&name)))
        .execute(&mut conn)
        .await;
    conn.close().await.ok();
    match created {
        Ok(_) => Ok(true),
        // Another process created it between our check and our CREATE.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(false),
        Err(source) => Err(DatabaseError::Create { name, source }),
    }
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs the migrations, installs PGMQ from the SQL embedded in the `pgmq` crate and creates
/// the orchestration queues. Safe to run concurrently and repeatedly.
pub async fn migrate(pool: &PgPool) -> Result<(), DatabaseError> {
    let mut lock = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATE_LOCK_KEY)
        .execute(&mut *lock)
        .await?;
    let outcome = migrate_locked(pool).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATE_LOCK_KEY)
        .execute(&mut *lock)
        .await?;
    outcome
}

async fn migrate_locked(pool: &PgPool) -> Result<(), DatabaseError> {
    adopt_squashed_migrations(pool, &MIGRATOR).await?;
    MIGRATOR.run(pool).await?;
    pgmq::install::install_sql_from_embedded(pool).await?;
    let queues = QueueClient::new(pool.clone()).await;
    let results =
        QueueName::new(ORCHESTRATION_RESULTS_QUEUE).expect("constant queue name is valid");
    queues.ensure_queue(&results).await?;
    Ok(())
}

/// Creates the URL's database if missing, migrates it and installs PGMQ, over a small pool
/// of the shipped settings; for the bindings' setup tasks and test suites. Returns the
/// database's name and whether it was created.
pub async fn setup_database(url: &str) -> Result<(String, bool), DatabaseError> {
    let name = database_name(url)?;
    let created = create_database_if_missing(url).await?;
    let mut db = crate::config::ConfigLoader::isolated(None, "development")
        .set("database.url", url.to_string())
        .load()
        .map_err(|e| DatabaseError::InvalidUrl {
            url: redact(url),
            reason: e.to_string(),
        })?
        .database;
    db.max_connections = 2;
    db.min_connections = 0;
    let pool = connect(&db).await?;
    let outcome = migrate(&pool).await;
    pool.close().await;
    outcome?;
    Ok((name, created))
}

/// Drops the URL's database (terminating its connections); for test suites that create one
/// database per run. Returns whether it existed.
pub async fn drop_database(url: &str) -> Result<bool, DatabaseError> {
    let name = database_name(url)?;
    let admin = options(url)?
        .database("postgres")
        .disable_statement_logging();
    let mut conn = admin
        .connect()
        .await
        .map_err(|source| DatabaseError::Connect {
            target: redact(url),
            source,
        })?;
    let existed: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    let dropped = sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&name)
    ))
    .execute(&mut conn)
    .await;
    conn.close().await.ok();
    dropped?;
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgresql://u:secret@h:5432/db"),
            "postgresql://u:***@h:5432/db"
        );
        assert_eq!(redact("postgresql://u@h/db"), "postgresql://u@h/db");
    }

    #[test]
    fn reads_database_name() {
        assert_eq!(
            database_name("postgresql://u@h:5432/tasker_x").unwrap(),
            "tasker_x"
        );
    }
}

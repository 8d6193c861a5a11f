//! One connection kept beside a pool for a path that runs statement after statement.
//!
//! sqlx pings every pooled connection as it goes back to the pool: for each statement a
//! second round trip, which wakes the server process and a runtime thread once more. In the
//! embedded Ruby run that was about six extra round trips a task. A hot path (the worker's
//! claims and recordings, each notifier, the bindings' client) keeps one connection of its
//! own instead, used by one caller at a time; a caller that finds it busy takes a pooled one
//! as before. So a path adds at most one connection to its pool's count.

use super::PING_IDLE_AFTER;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use std::ops::{Deref, DerefMut};
use std::time::Instant;
use tokio::sync::{Mutex, MutexGuard};

pub struct HotConnection {
    pool: PgPool,
    slot: Mutex<Option<Kept>>,
}

struct Kept {
    conn: PgConnection,
    used_at: Instant,
}

impl HotConnection {
    /// Connects lazily, with the pool's options (its session settings too).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            slot: Mutex::new(None),
        }
    }

    /// The kept connection when free (connecting it if there is none), otherwise a pooled
    /// one. Hand it back with [`Lease::settle`] or [`Lease::release`]: a lease dropped
    /// without either (a failed connection, a cancelled future) may have left the
    /// connection mid-protocol, so the kept connection is closed rather than reused.
    pub async fn lease(&self) -> Result<Lease<'_>, sqlx::Error> {
        let Ok(mut slot) = self.slot.try_lock() else {
            return Ok(Lease(Held::Pooled(self.pool.acquire().await?)));
        };
        // The pool's bound on getting a connection bounds each step here too.
        let limit = self.pool.options().get_acquire_timeout();
        let conn = match slot.take() {
            // As the pool does: one idle for a while may have been dropped by the server.
            Some(mut kept) if kept.used_at.elapsed() >= PING_IDLE_AFTER => {
                match tokio::time::timeout(limit, kept.conn.ping()).await {
                    Ok(Ok(())) => Some(kept.conn),
                    _ => None,
                }
            }
            Some(kept) => Some(kept.conn),
            None => None,
        };
        let conn = match conn {
            Some(c) => c,
            None => {
                let options = self.pool.connect_options();
                let connect = PgConnection::connect_with(&options);
                match tokio::time::timeout(limit, connect).await {
                    Ok(Ok(c)) => c,
                    // The pool's acquire reports what is wrong (or finds a connection).
                    _ => return Ok(Lease(Held::Pooled(self.pool.acquire().await?))),
                }
            }
        };
        Ok(Lease(Held::Kept {
            slot,
            conn: Some(conn),
        }))
    }
}

/// A connection for a few statements: the kept one or a pooled one.
pub struct Lease<'a>(Held<'a>);

enum Held<'a> {
    Kept {
        slot: MutexGuard<'a, Option<Kept>>,
        /// Some until released or dropped.
        conn: Option<PgConnection>,
    },
    Pooled(PoolConnection<Postgres>),
}

impl Lease<'_> {
    /// Whether this is the kept connection (not a pooled one).
    pub fn is_kept(&self) -> bool {
        matches!(self.0, Held::Kept { .. })
    }

    /// Passes `result` on, releasing the lease if the server answered (a success, or an
    /// error Postgres reported, after which the connection is ready for the next
    /// statement); after any other error the kept connection is closed.
    pub fn settle<T>(self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if matches!(result, Ok(_) | Err(sqlx::Error::Database(_))) {
            self.release();
        }
        result
    }

    /// Its statements went through: the kept connection is kept for the next caller.
    pub fn release(mut self) {
        if let Held::Kept { slot, conn } = &mut self.0 {
            **slot = conn.take().map(|conn| Kept {
                conn,
                used_at: Instant::now(),
            });
        }
    }
}

impl Deref for Lease<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match &self.0 {
            Held::Kept { conn, .. } => conn.as_ref().expect("held until released"),
            Held::Pooled(c) => c,
        }
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match &mut self.0 {
            Held::Kept { conn, .. } => conn.as_mut().expect("held until released"),
            Held::Pooled(c) => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;

    async fn backend(conn: &mut PgConnection) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_released_lease_keeps_its_connection_for_the_next() {
        let db = TestDatabase::new().await;
        let hot = HotConnection::new(db.pool.clone());
        let mut first = hot.lease().await.unwrap();
        assert!(first.is_kept());
        let pid = backend(&mut first).await;
        first.release();
        let mut second = hot.lease().await.unwrap();
        assert!(second.is_kept());
        assert_eq!(backend(&mut second).await, pid, "the same kept connection");
        second.release();
    }

    #[tokio::test]
    async fn a_busy_kept_connection_sends_callers_to_the_pool() {
        let db = TestDatabase::new().await;
        let hot = HotConnection::new(db.pool.clone());
        let mut held = hot.lease().await.unwrap();
        let mut other = hot.lease().await.unwrap();
        assert!(!other.is_kept());
        assert_ne!(backend(&mut held).await, backend(&mut other).await);
    }

    #[tokio::test]
    async fn an_error_the_server_reported_keeps_the_connection() {
        let db = TestDatabase::new().await;
        let hot = HotConnection::new(db.pool.clone());
        let mut first = hot.lease().await.unwrap();
        let pid = backend(&mut first).await;
        let failed = sqlx::query("SELECT 1 / 0").execute(&mut *first).await;
        assert!(first.settle(failed).is_err());
        let mut second = hot.lease().await.unwrap();
        assert_eq!(
            backend(&mut second).await,
            pid,
            "kept after division by zero"
        );
        second.release();
    }

    #[tokio::test]
    async fn a_lease_dropped_unreleased_is_not_reused() {
        let db = TestDatabase::new().await;
        let hot = HotConnection::new(db.pool.clone());
        let mut first = hot.lease().await.unwrap();
        let pid = backend(&mut first).await;
        // As a cancelled statement would leave it: a query sent, its answer never read.
        drop(first);
        let mut second = hot.lease().await.unwrap();
        assert!(second.is_kept());
        assert_ne!(backend(&mut second).await, pid, "a fresh connection");
        second.release();
    }
}

//! Databases migrated before the migrations were squashed into one baseline.
//!
//! Until 20261205000000 every change to Tasker's SQL was a migration of its own. Those
//! migrations were replaced by `20261210000000_baseline.sql`, which builds exactly the schema
//! they left behind (the test `sql_source` checks it by migrating with the old files and
//! comparing). sqlx refuses a database whose applied versions it does not know, so before
//! migrating, a database that ran all of the old ones has their records replaced by the
//! baseline's, in one transaction; the migrations after the baseline then run as usual.

use super::DatabaseError;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

/// The versions of the migrations the baseline replaced, in order.
pub const SQUASHED_VERSIONS: [i64; 21] = [
    20260101000000,
    20260101000100,
    20260101000200,
    20260102000000,
    20260201000000,
    20260301000000,
    20260401000000,
    20260501000000,
    20260601000000,
    20260701000000,
    20260801000000,
    20260901000000,
    20260902000000,
    20260903000000,
    20261001000000,
    20261101000000,
    20261201000000,
    20261202000000,
    20261203000000,
    20261204000000,
    20261205000000,
];

/// The migration that stands for all of them.
pub const BASELINE_VERSION: i64 = 20261210000000;

/// Records the baseline as applied in a database that ran every squashed migration. Does
/// nothing to a new database or one already on the baseline. Returns whether it adopted.
pub async fn adopt_squashed_migrations(
    pool: &PgPool,
    migrator: &Migrator,
) -> Result<bool, DatabaseError> {
    let has_table: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if !has_table {
        return Ok(false);
    }
    let applied: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT version, success FROM public._sqlx_migrations WHERE version = ANY($1) ORDER BY version",
    )
    .bind(&SQUASHED_VERSIONS[..])
    .fetch_all(pool)
    .await?;
    if applied.is_empty() {
        return Ok(false);
    }
    let missing: Vec<i64> = SQUASHED_VERSIONS
        .iter()
        .copied()
        .filter(|v| !applied.iter().any(|(a, ok)| a == v && *ok))
        .collect();
    if !missing.is_empty() {
        return Err(DatabaseError::PartialLegacySchema { missing });
    }
    let baseline = migrator
        .iter()
        .find(|m| m.version == BASELINE_VERSION)
        .expect("the baseline migration is embedded");
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM public._sqlx_migrations WHERE version = ANY($1)")
        .bind(&SQUASHED_VERSIONS[..])
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO public._sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, $2, true, $3, 0)",
    )
    .bind(baseline.version)
    .bind(&*baseline.description)
    .bind(&*baseline.checksum)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        squashed = SQUASHED_VERSIONS.len(),
        baseline = BASELINE_VERSION,
        "database migrated before the squash: recorded the baseline in place of the migrations it replaces"
    );
    Ok(true)
}

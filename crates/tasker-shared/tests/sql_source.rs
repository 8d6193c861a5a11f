//! The SQL in db/ is the current definition of Tasker's schema and functions; migrations/
//! (a baseline and the changes since) is what builds databases. These tests keep the two
//! from drifting apart, and check that a database built by the migrations that were squashed
//! into the baseline upgrades to the same schema.

use sqlx::migrate::Migrator;
use sqlx::{Connection, PgPool};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use tasker_shared::database::{self, DatabaseError, BASELINE_VERSION, SQUASHED_VERSIONS};
use tasker_shared::testing::TestDatabase;

/// The last commit whose migrations/ held the migrations the baseline replaced.
const SQUASHED_AT: &str = "51467bd";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn function_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("db/functions"))
        .expect("db/functions exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
}

/// Builds a database from db/ alone: the schema, then every function file.
async fn build_from_source(pool: &PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let schema = std::fs::read_to_string(repo().join("db/schema.sql")).unwrap();
    sqlx::raw_sql(&schema)
        .execute(&mut *tx)
        .await
        .expect("db/schema.sql applies to an empty database");
    sqlx::query("SET LOCAL check_function_bodies = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    for file in function_files() {
        let sql = std::fs::read_to_string(&file).unwrap();
        sqlx::raw_sql(&sql)
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{} does not apply: {e}", file.display()));
    }
    tx.commit().await.unwrap();
}

type Description = BTreeMap<(String, String), BTreeSet<String>>;

/// db/describe.sql's rows: everything in the tasker schema a migration can change.
async fn describe(pool: &PgPool) -> Description {
    let sql = std::fs::read_to_string(repo().join("db/describe.sql")).unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(&sql).fetch_all(pool).await.unwrap();
    let mut out = Description::new();
    for (kind, name, definition) in rows {
        out.entry((kind, name)).or_default().insert(definition);
    }
    out
}

/// What differs between two descriptions, one line per object, for a failure message.
fn differences(left: &str, a: &Description, right: &str, b: &Description) -> Vec<String> {
    let keys: BTreeSet<_> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let (kind, name) = key;
            match (a.get(key), b.get(key)) {
                (Some(x), Some(y)) if x == y => None,
                (Some(_), Some(_)) => Some(format!("{kind} {name}: defined differently")),
                (Some(_), None) => Some(format!("{kind} {name}: only in {left}")),
                (None, _) => Some(format!("{kind} {name}: only in {right}")),
            }
        })
        .collect()
}

fn assert_same(left: &str, a: &Description, right: &str, b: &Description) {
    let diff = differences(left, a, right, b);
    assert!(
        diff.is_empty(),
        "{left} and {right} differ (bin/sql-migration check shows the same; docs/sql.md):\n  {}",
        diff.join("\n  ")
    );
}

#[tokio::test]
async fn the_migrated_database_equals_the_sql_source() {
    let migrated = TestDatabase::new().await;
    let source = TestDatabase::empty().await;
    build_from_source(&source.pool).await;
    let (m, s) = (describe(&migrated.pool).await, describe(&source.pool).await);
    assert!(m.keys().any(|(kind, _)| kind == "function"));
    assert!(m.keys().any(|(kind, _)| kind == "column"));
    assert_same("the migrated database", &m, "db/", &s);
}

#[tokio::test]
async fn every_function_is_defined_in_exactly_one_source_file_with_its_settings() {
    let mut defined_in: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let files: Vec<PathBuf> = std::iter::once(repo().join("db/schema.sql"))
        .chain(function_files())
        .collect();
    for file in &files {
        let sql = std::fs::read_to_string(file).unwrap();
        let file_name = file.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !sql.contains("ALTER FUNCTION"),
            "{file_name}: a function's settings belong in its CREATE FUNCTION"
        );
        let mut names = Vec::new();
        for line in sql.lines() {
            let Some(rest) = line
                .strip_prefix("CREATE OR REPLACE FUNCTION tasker.")
                .or_else(|| line.strip_prefix("CREATE FUNCTION tasker."))
            else {
                continue;
            };
            let name = rest.split('(').next().unwrap().to_string();
            defined_in
                .entry(name.clone())
                .or_default()
                .insert(file_name.clone());
            names.push(name);
        }
        if file_name != "schema.sql" {
            let stem = file_name.trim_end_matches(".sql");
            assert!(
                names.iter().any(|n| n == stem),
                "db/functions/{file_name} should define tasker.{stem} (a file is named after its function)"
            );
        }
    }
    let twice: Vec<String> = defined_in
        .iter()
        .filter(|(_, files)| files.len() > 1)
        .map(|(name, files)| format!("{name}: {files:?}"))
        .collect();
    assert!(
        twice.is_empty(),
        "functions defined in more than one file:\n{}",
        twice.join("\n")
    );

    // And every function the database has comes from one of them.
    let db = TestDatabase::new().await;
    let in_db: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT proname::text FROM pg_proc WHERE pronamespace = 'tasker'::regnamespace",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let unsourced: Vec<&String> = in_db
        .iter()
        .filter(|n| !defined_in.contains_key(*n))
        .collect();
    assert!(
        unsourced.is_empty(),
        "functions in the migrated database with no file in db/: {unsourced:?}"
    );
}

/// The migrations the baseline replaced, as they were at SQUASHED_AT, in a folder sqlx can
/// read: git is where they are kept now.
fn squashed_migrations(into: &Path) {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo())
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {} (this test reads the squashed migrations from the \
             repository's history: it needs a clone with commit {SQUASHED_AT})",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let listing = git(&["ls-tree", "--name-only", SQUASHED_AT, "migrations/"]);
    let names: Vec<String> = String::from_utf8(listing)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), SQUASHED_VERSIONS.len());
    for name in names {
        let sql = git(&["show", &format!("{SQUASHED_AT}:{name}")]);
        std::fs::write(into.join(Path::new(&name).file_name().unwrap()), sql).unwrap();
    }
}

/// What `tasker migrate` did before the squash: the old migrations, PGMQ, the results queue.
async fn migrate_as_before_the_squash(pool: &PgPool, only: Option<usize>) {
    let dir = tempfile::tempdir().unwrap();
    squashed_migrations(dir.path());
    if let Some(keep) = only {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in &files[keep..] {
            std::fs::remove_file(f).unwrap();
        }
    }
    Migrator::new(dir.path())
        .await
        .unwrap()
        .run(pool)
        .await
        .expect("the squashed migrations apply to an empty database");
    if only.is_none() {
        pgmq::install::install_sql_from_embedded(pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_database_built_by_the_squashed_migrations_upgrades_to_the_sql_source() {
    let old = TestDatabase::empty().await;
    migrate_as_before_the_squash(&old.pool, None).await;
    sqlx::query(
        "WITH ns AS (INSERT INTO tasker.namespaces (name) VALUES ('kept') RETURNING namespace_uuid)
         INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template)
         SELECT namespace_uuid, 'kept_task', '1.0.0', '{}' FROM ns",
    )
    .execute(&old.pool)
    .await
    .unwrap();

    database::migrate(&old.pool)
        .await
        .expect("tasker migrate upgrades a database built by the squashed migrations");
    database::migrate(&old.pool)
        .await
        .expect("and running it again changes nothing");

    let fresh = TestDatabase::new().await;
    assert_same(
        "the upgraded database",
        &describe(&old.pool).await,
        "a freshly migrated one",
        &describe(&fresh.pool).await,
    );
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&old.pool)
            .await
            .unwrap();
    let expected: Vec<i64> = database::MIGRATOR.iter().map(|m| m.version).collect();
    assert_eq!(versions, expected);
    assert_eq!(versions[0], BASELINE_VERSION);
    let kept: String = sqlx::query_scalar(
        "SELECT nt.name FROM tasker.named_tasks nt JOIN tasker.namespaces n USING (namespace_uuid)
          WHERE n.name = 'kept'",
    )
    .fetch_one(&old.pool)
    .await
    .unwrap();
    assert_eq!(kept, "kept_task");
}

#[tokio::test]
async fn a_database_part_way_through_the_squashed_migrations_is_refused_by_name() {
    let old = TestDatabase::empty().await;
    migrate_as_before_the_squash(&old.pool, Some(3)).await;
    match database::migrate(&old.pool).await {
        Err(DatabaseError::PartialLegacySchema { missing }) => {
            assert_eq!(missing, SQUASHED_VERSIONS[3..].to_vec());
        }
        other => panic!("expected PartialLegacySchema, got {other:?}"),
    }
}

/// The migrations before `version`, as a migrator of their own.
async fn migrations_before(version: i64, into: &Path) -> Migrator {
    for entry in std::fs::read_dir(repo().join("migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let v: i64 = name.split('_').next().unwrap().parse().unwrap();
        if v < version {
            std::fs::copy(&path, into.join(&name)).unwrap();
        }
    }
    Migrator::new(into).await.unwrap()
}

/// A task's and its steps' transitions and audits, as their views read them.
async fn history(pool: &PgPool, task: uuid::Uuid) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for query in [
        // Task transition rows had a key of their own; the rows' lists have none.
        "SELECT to_jsonb(x) - 'transition_uuid' FROM tasker.task_transitions x
          WHERE x.task_uuid = $1 ORDER BY x.sort_key",
        "SELECT to_jsonb(x) FROM tasker.workflow_step_transitions x WHERE x.task_uuid = $1
          ORDER BY x.step_uuid, x.sort_key",
        "SELECT to_jsonb(x) FROM tasker.step_result_audits x WHERE x.task_uuid = $1
          ORDER BY x.step_uuid, x.attempt",
    ] {
        let rows: Vec<serde_json::Value> = sqlx::query_scalar(query)
            .bind(task)
            .fetch_all(pool)
            .await
            .unwrap();
        out.push(serde_json::Value::Array(rows));
    }
    out
}

/// 20261210001300 moved transition and audit rows into their tasks' and steps' rows: a
/// history written before it reads back the same through the views after it.
#[tokio::test]
async fn history_written_before_it_moved_into_the_rows_reads_back_the_same() {
    let db = TestDatabase::empty().await;
    let dir = tempfile::tempdir().unwrap();
    migrations_before(20261210001300, dir.path())
        .await
        .run(&db.pool)
        .await
        .unwrap();
    pgmq::install::install_sql_from_embedded(&db.pool)
        .await
        .unwrap();
    sqlx::raw_sql(
        "SELECT pgmq.create('worker_old_queue'), pgmq.create('orchestration_step_results')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let task: uuid::Uuid = sqlx::query_scalar(
        "WITH ns AS (INSERT INTO tasker.namespaces (name) VALUES ('old') RETURNING namespace_uuid),
              nt AS (INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template)
                     SELECT namespace_uuid, 'two', '1.0.0', '{}' FROM ns
                     RETURNING named_task_uuid)
         SELECT c.task_uuid FROM nt, tasker.create_task('creator',
           ROW(nt.named_task_uuid, '{}'::jsonb, NULL, NULL,
               ARRAY[ROW('first', 'X', '{}', 3, true, 'none', 0, 0, NULL, '[]', '{}')::tasker.step_spec,
                     ROW('second', 'X', '{}', 3, true, 'none', 0, 0, NULL, '[]', '{first}')::tasker.step_spec]
              )::tasker.task_spec, NULL, NULL) AS c",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let first: uuid::Uuid = sqlx::query_scalar(
        "SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = 'first'",
    )
    .bind(task)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query("SELECT * FROM tasker.claim_steps(ARRAY[$1]::uuid[], 'w1', 60)")
        .bind(first)
        .execute(&db.pool)
        .await
        .unwrap();
    let results = serde_json::json!([{"step_uuid": first, "attempt": 1, "success": false,
        "result": null, "error": {"message": "no", "error_type": "x", "retryable": true},
        "execution_ms": 3, "metadata": {"worker_id": "w1"}}]);
    sqlx::query("SELECT * FROM tasker.complete_steps('w1', $1, 0, 0)")
        .bind(&results)
        .execute(&db.pool)
        .await
        .unwrap();
    let before = history(&db.pool, task).await;
    assert!(
        before
            .iter()
            .all(|rows| !rows.as_array().unwrap().is_empty()),
        "{before:?}"
    );

    database::migrate(&db.pool).await.unwrap();
    assert_eq!(history(&db.pool, task).await, before);
}

/// `tasker.uuid_v7`, every table's key default: version 7 with the RFC 4122 variant, unique,
/// and ordered by the millisecond they were made in, which is now.
#[tokio::test]
async fn uuid_v7_makes_unique_time_ordered_version_7_ids() {
    let db = TestDatabase::new().await;
    let batch = || async {
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT tasker.uuid_v7() FROM generate_series(1, 1000)")
            .fetch_all(&db.pool)
            .await
            .unwrap()
    };
    let before = chrono::Utc::now().timestamp_millis() as u64;
    let first = batch().await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = batch().await;
    let after = chrono::Utc::now().timestamp_millis() as u64;
    let all: BTreeSet<uuid::Uuid> = first.iter().chain(&second).copied().collect();
    assert_eq!(all.len(), 2000, "ids repeat");
    for id in &all {
        assert_eq!(id.get_version_num(), 7, "{id}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        let (secs, nanos) = id
            .get_timestamp()
            .expect("a v7 id has a timestamp")
            .to_unix();
        let millis = secs * 1000 + u64::from(nanos) / 1_000_000;
        assert!(
            (before..=after).contains(&millis),
            "{id}: {millis} not in {before}..={after}"
        );
    }
    assert!(
        first.iter().max() < second.iter().min(),
        "later ids sort after earlier ones"
    );
}

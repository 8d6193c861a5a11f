//! `bin/bench --floor`: the rows a no-op step writes in the engine's own tables (task, step
//! row versions, transitions, queue messages), written by plain SQL from `pgbench` with
//! nothing else around them: no functions, no checks, no locks between writers, no worker.
//! It is how fast the engine's schema lets a step go on this machine, and so how much of a
//! step's cost is the engine's statements rather than its writes. Each script runs the whole
//! life of ten tasks of ten steps (create, claim, record) in three transactions, as the engine
//! does; the variants differ in how steps are messaged and claimed. A last variant runs the
//! engine's own statements instead (tasker.create_tasks, the worker's claim and recording
//! statements) with no worker around them: between it and the plain writes is the
//! functions' work, between it and `bin/bench` the worker's.

use super::{pgbench_tps, postgres_cpu_seconds, tps_of};
use anyhow::{bail, Context};
use std::process::Command;
use tasker_shared::database;
use tasker_shared::queue::{worker_queue, QueueName};
use tasker_worker::{claim_statement, recording_statement};

const DATABASE: &str = "tasker_floor";
const QUEUE: &str = "floor";
/// The namespace of the template the scripts create tasks of; its worker queue is the
/// engine variant's.
const NAMESPACE: &str = "floor";
const ROUNDS: usize = 3;
/// Seconds per pgbench run, as for the pgbench -N ceiling.
const SECONDS: &str = "10";

struct Variant {
    name: &'static str,
    parts: [&'static str; 5],
}

/// One script of the floor: its name and text.
struct Script {
    name: &'static str,
    text: String,
}

const CREATE: &str = include_str!("floor/create.sql");
const MESSAGES_PER_STEP: &str = include_str!("floor/messages_per_step.sql");
const MESSAGES_PER_TASK: &str = include_str!("floor/messages_per_task.sql");
const CLAIM_STEPS: &str = include_str!("floor/claim_steps.sql");
const CLAIM_LEASES: &str = include_str!("floor/claim_leases.sql");
const RECORD_CLAIMED: &str = include_str!("floor/record_claimed.sql");
const RECORD_LEASED: &str = include_str!("floor/record_leased.sql");
const COMPLETE_TASKS: &str = include_str!("floor/complete_tasks.sql");

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "as the engine: a message per step, the claim writes the step",
        parts: [
            CREATE,
            MESSAGES_PER_STEP,
            CLAIM_STEPS,
            RECORD_CLAIMED,
            COMPLETE_TASKS,
        ],
    },
    Variant {
        name: "a message per task, the claim writes the step",
        parts: [
            CREATE,
            MESSAGES_PER_TASK,
            CLAIM_STEPS,
            RECORD_CLAIMED,
            COMPLETE_TASKS,
        ],
    },
    Variant {
        name: "a message per step, the claim is its lease",
        parts: [
            CREATE,
            MESSAGES_PER_STEP,
            CLAIM_LEASES,
            RECORD_LEASED,
            COMPLETE_TASKS,
        ],
    },
    Variant {
        name: "a message per task, the claim is its lease",
        parts: [
            CREATE,
            MESSAGES_PER_TASK,
            CLAIM_LEASES,
            RECORD_LEASED,
            COMPLETE_TASKS,
        ],
    },
];

/// The engine variant's queue: its namespace's worker queue.
fn engine_queue() -> QueueName {
    worker_queue(NAMESPACE).expect("the namespace is a valid queue name")
}

/// The engine variant's name.
const ENGINE: &str =
    "the engine's functions: create_tasks, the worker's claim and recording statements";
const ENGINE_CREATE: &str = include_str!("floor/engine_create.sql");
/// What the script keeps of the claim's rows: the results a no-op handler gives the steps
/// it claimed, in the form the worker records them.
const CLAIMED_RESULTS: &str = "SELECT coalesce(jsonb_agg(jsonb_build_object(
           'step_uuid', (c.claim).step_uuid, 'attempt', (c.claim).attempt, 'success', true,
           'result', '{}'::jsonb, 'error', NULL, 'execution_ms', 0, 'metadata', '{}'::jsonb))
           FILTER (WHERE (c.claim).outcome = 'claimed'), '[]') AS results
         FROM claims c \\gset";

/// Each variant's script: the plain ones, then the engine's.
fn scripts() -> Vec<Script> {
    let mut all: Vec<_> = VARIANTS
        .iter()
        .map(|v| Script {
            name: v.name,
            text: v.parts.concat(),
        })
        .collect();
    all.push(Script {
        name: ENGINE,
        text: engine_script(),
    });
    all
}

/// `sql` with its parameters `$1`.. replaced by `values` (SQL literals), the highest first
/// so that `$1` never eats the start of `$10`; every parameter must be given.
fn write_in(sql: &str, values: &[&str]) -> String {
    let mut out = sql.to_string();
    for (i, value) in values.iter().enumerate().rev() {
        out = out.replace(&format!("${}", i + 1), value);
    }
    assert!(
        !out.contains('$'),
        "a statement has a parameter the script does not write in"
    );
    out
}

/// The worker's own claim and recording statements (the strings it prepares), their
/// parameters written in, after a creation; each statement its own transaction, as in the
/// engine. The claim reads up to 100 messages of whichever tasks are waiting.
fn engine_script() -> String {
    let queue = engine_queue();
    // Batch size, seconds an unclaimed message stays hidden, worker, lease seconds.
    let claim = write_in(&claim_statement(&queue), &["100", "30", "'floor'", "60"]);
    assert_eq!(claim.matches("SELECT * FROM claims").count(), 1);
    let claim = claim.replace("SELECT * FROM claims", CLAIMED_RESULTS);
    // complete_steps' worker, results, jitter ratio, longest retry delay, namespaces whose
    // children it may claim, how many, lease seconds.
    let record = write_in(
        &recording_statement([(&queue, Some(NAMESPACE))].into_iter()),
        &[
            "'floor'",
            "':results'::jsonb",
            "0.1",
            "300000",
            "ARRAY['floor']",
            "100",
            "60",
        ],
    );
    format!("{ENGINE_CREATE}{claim}\n{record};\n")
}

/// Runs `sql`; its output, trimmed.
fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([url, "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!(
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Every table the scripts write a task's rows to (steps and edges have no foreign key to
/// cascade through).
const EMPTY_TASK_TABLES: &str = "TRUNCATE tasker.tasks, tasker.workflow_steps,
    tasker.workflow_step_edges, tasker.step_result_audit_log, tasker.step_claims,
    tasker.step_recordings CASCADE";

/// Steps/s and Postgres CPU ms per step of one variant, on emptied tables after a
/// checkpoint (so a run neither inherits the last one's dead rows nor its checkpoint).
fn run_variant(
    url: &str,
    script: &std::path::Path,
    named_task: &str,
) -> anyhow::Result<(f64, f64)> {
    psql(url, EMPTY_TASK_TABLES)?;
    psql(url, &format!("TRUNCATE pgmq.q_{QUEUE}"))?;
    psql(url, &format!("TRUNCATE {}", engine_queue().table()))?;
    psql(url, "CHECKPOINT")?;
    let cpu_before = postgres_cpu_seconds();
    let run = Command::new("pgbench")
        .args(["-n", "-c", "8", "-j", "2", "-T", SECONDS, "-D"])
        .arg(format!("nt={named_task}"))
        .arg("-f")
        .arg(script)
        .arg(url)
        .output()
        .context("running pgbench")?;
    let cpu = match (cpu_before, postgres_cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let text = String::from_utf8_lossy(&run.stdout);
    // pgbench exits non-zero when a client aborted (an SQL error in a script).
    if !run.status.success() {
        bail!(
            "pgbench -f {} failed: {}{}",
            script.display(),
            text,
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let scripts = tps_of(&text)?;
    let processed: f64 = text
        .lines()
        .find(|l| l.starts_with("number of transactions actually processed"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().split('/').next())
        .and_then(|v| v.parse().ok())
        .context("no transaction count in pgbench output")?;
    // Every plain script completes its own hundred steps; the engine's claims take whichever
    // messages are waiting, and the run ends with some created and not yet recorded.
    let completed: f64 = psql(
        url,
        "SELECT count(*) FROM tasker.workflow_steps WHERE state = 'complete'",
    )?
    .parse()
    .context("counting completed steps")?;
    if completed == 0.0 || processed == 0.0 {
        bail!(
            "pgbench -f {}: no step completed in {SECONDS} s ({processed} scripts ran)",
            script.display()
        );
    }
    Ok((scripts * completed / processed, cpu * 1000.0 / completed))
}

/// The queue and the template row the scripts write to, in a migrated database; the
/// template's id (the scripts' `:nt`).
async fn prepare(pool: &sqlx::PgPool) -> anyhow::Result<uuid::Uuid> {
    for queue in [QUEUE, engine_queue().as_str()] {
        sqlx::query("SELECT pgmq.create($1)")
            .bind(queue)
            .execute(pool)
            .await?;
        sqlx::query("SELECT tasker.prepare_queue_table($1)")
            .bind(queue)
            .execute(pool)
            .await?;
    }
    let named_task: uuid::Uuid = sqlx::query_scalar(
        "WITH ns AS (INSERT INTO tasker.namespaces (name) VALUES ($1) RETURNING namespace_uuid)
         INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template)
         SELECT namespace_uuid, 'noop_fanout', '1.0.0', '{}' FROM ns RETURNING named_task_uuid",
    )
    .bind(NAMESPACE)
    .fetch_one(pool)
    .await?;
    Ok(named_task)
}

pub async fn run(server: &str) -> anyhow::Result<()> {
    let url = format!("{server}/{DATABASE}");
    let admin = format!("{server}/postgres");
    let drop = || {
        psql(
            &admin,
            &format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
        )
    };
    drop()?;
    database::create_database_if_missing(&url).await?;
    let pool = sqlx::PgPool::connect(&url).await?;
    database::migrate(&pool).await?;
    let named_task = prepare(&pool).await?;
    pool.close().await;
    // As in the engine's functions: a plan made while a table is nearly empty (the foreign
    // key's check of each new step's task, the recording's read of a task's steps) would
    // otherwise scan the whole table for the rest of the run.
    psql(
        &admin,
        &format!("ALTER DATABASE {DATABASE} SET enable_seqscan = off"),
    )?;

    let dir = std::env::temp_dir().join(format!("tasker-floor-{}", std::process::id()));
    let measured = measure(server, &url, &dir, &named_task.to_string());
    // The scripts and the database go whether or not every run succeeded.
    std::fs::remove_dir_all(&dir).ok();
    drop()?;
    measured
}

/// Writes the variants' scripts to `dir` and prints the rounds' table.
fn measure(server: &str, url: &str, dir: &std::path::Path, named_task: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let variants = scripts();
    let paths: Vec<_> = variants
        .iter()
        .enumerate()
        .map(|(i, script)| {
            let path = dir.join(format!("variant_{i}.sql"));
            std::fs::write(&path, &script.text).map(|_| path)
        })
        .collect::<Result<_, _>>()?;

    println!();
    println!("| round | pgbench -N TPS | floor | steps/s | per pgbench TPS | Postgres CPU/step |");
    println!("|-------|----------------|-------|---------|-----------------|-------------------|");
    for round in 1..=ROUNDS {
        eprintln!("round {round} of {ROUNDS} ...");
        let tps = pgbench_tps(server)?;
        for (script, path) in variants.iter().zip(&paths) {
            let (steps, cpu_ms) = run_variant(url, path, named_task)?;
            println!(
                "| {round} | {tps:.0} | {} | {steps:.0} | {:.2} | {cpu_ms:.3} ms |",
                script.name,
                steps / tps
            );
        }
    }
    println!();
    println!(
        "(pgbench -c 8 -j 2 -T {SECONDS} per floor run; a script is ten tasks of ten no-op steps created with their messages, claimed, recorded and completed in three transactions, the claim's committed without waiting for the flush (the engine's: a creation of ten such tasks, a claim of up to 100 waiting steps, their recording); tables emptied and a checkpoint before each run)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasker_shared::testing::TestDatabase;

    #[test]
    fn parameters_are_written_in_from_the_highest() {
        let values: Vec<String> = (1..=10).map(|i| format!("v{i}")).collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        assert_eq!(write_in("$1, $10, $2", &values), "v1, v10, v2");
    }

    #[test]
    #[should_panic(expected = "does not write in")]
    fn a_parameter_left_unwritten_stops_the_script() {
        write_in("$1, $2", &["v1"]);
    }

    /// Each variant's script, run once (one client: the engine's claim finds exactly the
    /// ten tasks it created), leaves what the engine leaves after ten fanout tasks: every
    /// step complete with its four transitions, every task complete, no message; so a
    /// schema change the scripts no longer fit fails here, not in a bench run.
    #[tokio::test]
    async fn every_variant_runs_a_task_batch_to_completion() {
        let db = TestDatabase::new().await;
        let named_task = prepare(&db.pool).await.unwrap();
        let dir = std::env::temp_dir().join(format!("tasker-floor-test-{}", db.name));
        std::fs::create_dir_all(&dir).unwrap();
        // libpq's form: without the query parameters only sqlx knows.
        let url = db.url.split('?').next().unwrap();
        for (i, script) in scripts().iter().enumerate() {
            let name = script.name;
            sqlx::query(EMPTY_TASK_TABLES)
                .execute(&db.pool)
                .await
                .unwrap();
            let path = dir.join(format!("variant_{i}.sql"));
            std::fs::write(&path, &script.text).unwrap();
            let run = Command::new("pgbench")
                .args(["-n", "-t", "1", "-D"])
                .arg(format!("nt={named_task}"))
                .arg("-f")
                .arg(&path)
                .arg(url)
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            let (steps, complete, four_transitions): (i64, i64, i64) = sqlx::query_as(
                "SELECT count(*), count(*) FILTER (WHERE state = 'complete'),
                        count(*) FILTER (WHERE cardinality(transitions) = 4)
                   FROM tasker.workflow_steps",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!(
                (steps, complete, four_transitions),
                (100, 100, 100),
                "{name}"
            );
            let (tasks, done): (i64, i64) = sqlx::query_as(
                "SELECT count(*), count(*) FILTER (WHERE state = 'complete') FROM tasker.tasks",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!((tasks, done), (10, 10), "{name}");
            let messages: i64 = sqlx::query_scalar(&format!(
                "SELECT (SELECT count(*) FROM pgmq.q_{QUEUE}) + (SELECT count(*) FROM {})",
                engine_queue().table()
            ))
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!(messages, 0, "{name}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}

//! `bin/bench --history N`: the same measurements on a fresh database and again after N
//! finished steps of history, loaded through Tasker's own paths (tasks created by the
//! initializer, run by the worker being measured), then the tables' sizes before and after
//! a retention run removes that history.

use super::{measure, print_rows, Bench, Row, SLOW_POLL};
use std::time::{Duration, Instant};

/// Tasks created at once while loading history.
const LOAD_CHUNK: usize = 200;

/// Size of the engine's tables (heap, indexes, TOAST) in the tasker and pgmq schemas.
struct Sizes {
    tables_mb: f64,
    indexes_mb: f64,
    steps: i64,
}

async fn sizes(bench: &Bench) -> anyhow::Result<Sizes> {
    let (tables, indexes): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(pg_table_size(c.oid)), 0)::bigint,
                coalesce(sum(pg_indexes_size(c.oid)), 0)::bigint
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname IN ('tasker', 'pgmq') AND c.relkind IN ('r', 'p')",
    )
    .fetch_one(&bench.pool)
    .await?;
    Ok(Sizes {
        tables_mb: tables as f64 / 1048576.0,
        indexes_mb: indexes as f64 / 1048576.0,
        steps: bench.step_count().await?,
    })
}

/// Runs `kind`'s worker over `steps` no-op steps (tasks of 10), created `LOAD_CHUNK` at a
/// time, and waits for them all.
async fn load(bench: &Bench, kind: &str, steps: usize) -> anyhow::Result<Duration> {
    let _worker = bench.spawn_worker(kind)?;
    let start = Instant::now();
    let tasks = steps.div_ceil(10);
    let mut done = 0;
    while done < tasks {
        let n = LOAD_CHUNK.min(tasks - done);
        let chunk =
            futures::future::try_join_all((0..n).map(|_| bench.create("noop_fanout"))).await?;
        bench
            .wait_all(&chunk, SLOW_POLL, Duration::from_secs(600))
            .await?;
        done += n;
        if done % 10_000 < LOAD_CHUNK {
            eprintln!(
                "  {} of {} history steps loaded ({:.0} s)",
                done * 10,
                tasks * 10,
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(start.elapsed())
}

/// pgbench's figure right before a measurement, which that row's ratio divides by.
fn ceiling(server: &str) -> f64 {
    eprintln!("measuring the PostgreSQL ceiling (pgbench) ...");
    super::pgbench_tps(server).unwrap_or(f64::NAN)
}

pub async fn run(
    bench: &Bench,
    kind: &str,
    args: &super::Args,
    history: usize,
) -> anyhow::Result<()> {
    let fresh_tps = ceiling(&args.server);
    eprintln!("measuring the {kind} worker on a fresh database ...");
    let mut fresh = measure(bench, kind, args).await?;
    fresh.worker = "fresh".into();
    let before = sizes(bench).await?;

    eprintln!("loading {history} finished steps of history through the {kind} worker ...");
    let took = load(bench, kind, history).await?;
    let loaded = sizes(bench).await?;

    let history_tps = ceiling(&args.server);
    eprintln!("measuring the {kind} worker with that history ...");
    let mut with_history = measure(bench, kind, args).await?;
    with_history.worker = "history".into();

    eprintln!("removing the history with a retention run ...");
    let removed = Instant::now();
    let mut tasks = 0i64;
    loop {
        let n: i32 = sqlx::query_scalar(
            "SELECT tasker.remove_finished_tasks('complete', interval '0', 500, false)",
        )
        .fetch_one(&bench.pool)
        .await?;
        tasks += i64::from(n);
        if n < 500 {
            break;
        }
    }
    let removal = removed.elapsed();
    sqlx::query("VACUUM (ANALYZE)").execute(&bench.pool).await?;
    let after = sizes(bench).await?;

    println!();
    let rows: [(Row, f64); 2] = [(fresh, fresh_tps), (with_history, history_tps)];
    print_rows(&rows);
    println!(
        "(each row's ratio divides by pgbench -N run just before it: {fresh_tps:.0} fresh, {history_tps:.0} with history)"
    );
    println!();
    println!(
        "History: {} steps ({} tasks of 10) loaded through the {kind} worker in {:.0} s ({:.0} steps/s)",
        loaded.steps - before.steps,
        (loaded.steps - before.steps) / 10,
        took.as_secs_f64(),
        (loaded.steps - before.steps) as f64 / took.as_secs_f64()
    );
    println!("| tasker + pgmq schemas | steps kept | tables | indexes |");
    println!("|---|---|---|---|");
    for (when, s) in [
        ("fresh, after the first measurements", &before),
        ("with the history", &loaded),
        ("after retention removed it, then VACUUM", &after),
    ] {
        println!(
            "| {when} | {} | {:.1} MB | {:.1} MB |",
            s.steps, s.tables_mb, s.indexes_mb
        );
    }
    println!(
        "(retention: {tasks} complete tasks removed in {:.1} s, 500 per transaction; VACUUM makes their space reusable, it does not shrink the files)",
        removal.as_secs_f64()
    );
    Ok(())
}

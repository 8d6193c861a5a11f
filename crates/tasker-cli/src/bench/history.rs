//! `bin/bench --history N`: the same measurements on a fresh database and again after N
//! finished steps of history, loaded through Tasker's own paths (tasks created by the
//! initializer, run by the worker being measured); then again while the orchestrator's own
//! retention, every second, removes that history at the pace it was loaded (the steady state
//! of an engine under full load whose finished tasks age out as fast as they finish); then
//! the tables' sizes before and after a retention run removes the rest.

use super::{measure, print_rows, Bench, Row, SLOW_POLL};
use std::time::{Duration, Instant};
use tasker_shared::config::MIN_PERIOD_SECONDS;

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

/// Removes the complete tasks that finished more than `age` ago (whole microseconds: an
/// interval holds no finer), 500 a transaction, as a retention run does; how many.
async fn remove_complete(bench: &Bench, age: Duration) -> anyhow::Result<i64> {
    let mut tasks = 0i64;
    loop {
        let n: i32 =
            sqlx::query_scalar("SELECT tasker.remove_finished_tasks('complete', $1, 500, false)")
                .bind(age)
                .fetch_one(&bench.pool)
                .await?;
        tasks += i64::from(n);
        if n < 500 {
            return Ok(tasks);
        }
    }
}

/// The complete tasks older than `period` seconds still kept: what the retention loop has
/// yet to remove of what is due.
async fn due_and_kept(bench: &Bench, period: u64) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM tasker.tasks
          WHERE state = 'complete' AND completed_at < now() - make_interval(secs => $1)",
    )
    .bind(period as f64)
    .fetch_one(&bench.pool)
    .await?)
}

async fn tombstones(bench: &Bench) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM tasker.removed_tasks")
            .fetch_one(&bench.pool)
            .await?,
    )
}

pub async fn run(
    bench: &Bench,
    kind: &str,
    args: &super::Args,
    history: usize,
) -> anyhow::Result<()> {
    let server = bench.spawn(&["server"], &[])?;
    let fresh_tps = ceiling(&args.server);
    eprintln!("measuring the {kind} worker on a fresh database ...");
    let mut fresh = measure(bench, kind, args).await?;
    fresh.worker = "fresh".into();
    let before = sizes(bench).await?;

    eprintln!("loading {history} finished steps of history through the {kind} worker ...");
    let load_started = Instant::now();
    let took = load(bench, kind, history).await?;
    let loaded = sizes(bench).await?;

    let history_tps = ceiling(&args.server);
    eprintln!("measuring the {kind} worker with that history ...");
    let mut with_history = measure(bench, kind, args).await?;
    with_history.worker = "history".into();
    drop(server);

    let retention_tps = ceiling(&args.server);
    // The first row's tasks, older than the history, go first, unmeasured: left, they would
    // all be due at the retention loop's first run. Then tasks that finished this long ago
    // are due, so each second's run takes the tasks the load finished in one second of it.
    remove_complete(bench, Duration::from_secs(load_started.elapsed().as_secs())).await?;
    let period = load_started.elapsed().as_secs().max(MIN_PERIOD_SECONDS);
    eprintln!(
        "measuring the {kind} worker while the orchestrator's retention (every second, complete_after = {period}s) removes the history ..."
    );
    let server = bench.spawn(
        &["server"],
        &[
            ("TASKER_RETENTION__ENABLED", "true"),
            ("TASKER_RETENTION__MODE", "delete"),
            ("TASKER_RETENTION__INTERVAL_SECONDS", "1"),
            ("TASKER_RETENTION__COMPLETE_AFTER", &format!("{period}s")),
        ],
    )?;
    let removed_before = tombstones(bench).await?;
    let row_started = Instant::now();
    let mut with_retention = measure(bench, kind, args).await?;
    let row_took = row_started.elapsed();
    let removed_during = tombstones(bench).await? - removed_before;
    let behind = due_and_kept(bench, period).await?;
    with_retention.worker = "retention".into();
    drop(server);

    eprintln!("removing the rest of the history with a retention run ...");
    let removed = Instant::now();
    let tasks = remove_complete(bench, Duration::ZERO).await?;
    let removal = removed.elapsed();
    sqlx::query("VACUUM (ANALYZE)").execute(&bench.pool).await?;
    let after = sizes(bench).await?;

    println!();
    // The machine's speed drifts between rows, so each ratio is also given per pgbench TPS
    // (each row's steps/s divided by the pgbench run just before it).
    let ratios = format!(
        "history / fresh: steps/s {:.2} (per pgbench TPS {:.2}; target >= 0.9), linear p50 {:.2} (target <= 1.2); retention / history (the same run without retention): steps/s {:.2} (per pgbench TPS {:.2}; target >= 0.9), linear p50 {:.2}",
        with_history.throughput / fresh.throughput,
        (with_history.throughput / history_tps) / (fresh.throughput / fresh_tps),
        with_history.p50_ms / fresh.p50_ms,
        with_retention.throughput / with_history.throughput,
        (with_retention.throughput / retention_tps) / (with_history.throughput / history_tps),
        with_retention.p50_ms / with_history.p50_ms,
    );
    let rows: [(Row, f64); 3] = [
        (fresh, fresh_tps),
        (with_history, history_tps),
        (with_retention, retention_tps),
    ];
    print_rows(&rows);
    println!(
        "(each row's ratio divides by pgbench -N run just before it: {fresh_tps:.0} fresh, {history_tps:.0} with history, {retention_tps:.0} with retention)"
    );
    println!("{ratios}");
    // Each second's run removes what became due in that second: the history's own pace at
    // that point of its load, not the load's average. What is due and still kept at the
    // row's end says whether the loop kept up (a second's worth is one run not yet come).
    println!(
        "(retention: the orchestrator's own, every second, removed {removed_during} tasks during the retention row's {:.0} s, {:.0} a second; at its end {behind} tasks were due and not yet removed)",
        row_took.as_secs_f64(),
        removed_during as f64 / row_took.as_secs_f64()
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
        "(then a retention run removed the other {tasks} complete tasks in {:.1} s, 500 per transaction; VACUUM makes their space reusable, it does not shrink the files)",
        removal.as_secs_f64()
    );
    Ok(())
}

//! `tasker retention run [--dry-run]`: retention by hand, with the configured periods.

use clap::Subcommand;
use tasker_orchestration::retention::{self, RetentionReport};
use tasker_shared::config::RetentionMode;
use tokio_util::sync::CancellationToken;

#[derive(Subcommand)]
pub enum Command {
    /// Remove finished tasks older than their state's period; print what was removed.
    ///
    /// Periods: [retention] complete_after, error_after (error and resolved_manually),
    /// cancelled_after. With [retention] mode = "archive" the tasks' rows move to the
    /// tasker_archive schema instead. Durable domain events sent over domain_events_after
    /// ago are deleted from their queues and the queues' archives. Open tasks are never removed. Runs whatever
    /// [retention] enabled says (that only governs the orchestrator's own runs); Ctrl-C
    /// stops it between batches, keeping what it removed.
    Run {
        /// Print what would be removed per state; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    let config = super::load_config()?;
    let pool = super::connect(&config).await?;
    match cmd {
        Command::Run { dry_run: true } => {
            print(&retention::dry_run(&pool, &config.retention).await?);
        }
        Command::Run { dry_run: false } => {
            let stop = CancellationToken::new();
            let on_signal = stop.clone();
            tokio::spawn(async move {
                super::shutdown_signal().await;
                on_signal.cancel();
            });
            print(&retention::run_once(&pool, &config.retention, &stop).await?);
        }
    }
    Ok(())
}

fn print(report: &RetentionReport) {
    let archive = report.mode == RetentionMode::Archive;
    let (verb, nothing) = match (report.dry_run, archive) {
        (true, true) => ("would archive", " (dry run: nothing was archived)"),
        (true, false) => ("would remove", " (dry run: nothing was removed)"),
        (false, true) => ("archived", " (to schema tasker_archive)"),
        (false, false) => ("removed", ""),
    };
    println!("retention, {} mode{nothing}", report.mode.as_str());
    for s in &report.states {
        println!(
            "  {:<18} {verb:<13} {:>7} task{} finished more than {} ago",
            s.state,
            s.tasks,
            if s.tasks == 1 { "" } else { "s" },
            s.period
        );
    }
    let forgot = if report.dry_run {
        "would forget"
    } else {
        "forgot"
    };
    println!(
        "  {:<18} {forgot:<13} {:>7} (removed over tombstone_after ago; now unknown ids)",
        "tombstones", report.tombstones_pruned
    );
    let deleted = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    println!(
        "  {:<18} {deleted:<13} {:>7} (counts of recorded steps over an hour old)",
        "recording counts", report.recording_counts_pruned
    );
    println!(
        "  {:<18} {deleted:<13} {:>7} (durable domain events sent over domain_events_after ago)",
        "domain events", report.domain_events_removed
    );
    let compression = if report.wal_compression == "off" {
        "uncompressed; GRANT SET ON PARAMETER wal_compression TO this role to compress them: a third of the WAL"
    } else {
        "compressed: a page's first change after a checkpoint logs it whole"
    };
    println!(
        "  {:<18} {:<13} {:>7} ({compression})",
        "WAL page images", "written with", report.wal_compression
    );
    if report.interrupted {
        println!("stopped before the end; the next run carries on");
    }
}

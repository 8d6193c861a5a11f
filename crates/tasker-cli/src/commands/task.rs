use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::time::Duration;
use tasker_orchestration::task_operations::cancel_task;
use tasker_orchestration::{TaskInitializer, TaskRequest};
use tasker_shared::models::{StepRow, TaskRow};
use uuid::Uuid;

#[derive(Subcommand)]
pub enum Command {
    /// Submit a task; prints its id.
    Create {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// The task's context, a JSON object.
        #[arg(long, default_value = "{}")]
        context: String,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Schedule the task: no step starts before this time. An RFC 3339 time
        /// (2026-12-24T08:00:00Z) or a delay from now: +90s, +15m, +2h, +1d.
        #[arg(long, value_parser = parse_run_at)]
        run_at: Option<DateTime<Utc>>,
        /// Wait until the task ends; exit non-zero unless it completed.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Show a task and its steps as JSON.
    Get { id: Uuid },
    /// List recent tasks.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Cancel a task.
    Cancel { id: Uuid },
    /// A live view of a task's steps until it ends.
    Watch { id: Uuid },
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    let config = super::load_config()?;
    let pool = super::connect(&config).await?;
    match cmd {
        Command::Create {
            namespace,
            name,
            version,
            context,
            idempotency_key,
            run_at,
            wait,
            timeout,
        } => {
            let context: serde_json::Value =
                serde_json::from_str(&context).context("--context is not valid JSON")?;
            let initializer = TaskInitializer::new(pool.clone(), config.backoff.clone())
                .with_limits(&config.orchestration);
            let created = initializer
                .create_task(&TaskRequest {
                    namespace,
                    name,
                    version,
                    context,
                    idempotency_key,
                    initiator: Some("cli".into()),
                    run_at,
                })
                .await?;
            println!("{}", created.task_uuid);
            if wait {
                let task = wait_for(
                    &pool,
                    &config,
                    created.task_uuid,
                    Duration::from_secs(timeout),
                )
                .await?;
                eprintln!("task {} {}", task.task_uuid, task.state);
                if task.state != "complete" {
                    bail!("task ended {}", task.state);
                }
            }
        }
        Command::Get { id } => {
            let task = TaskRow::get(&pool, id).await?;
            let steps = StepRow::for_task(&pool, id).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "task": task, "steps": steps }))?
            );
        }
        Command::List {
            status,
            namespace,
            limit,
        } => {
            let tasks =
                TaskRow::list(&pool, status.as_deref(), namespace.as_deref(), limit, 0).await?;
            println!(
                "{:<36}  {:<24}  {:<28}  CREATED",
                "TASK", "STATE", "TEMPLATE"
            );
            for t in tasks {
                println!(
                    "{:<36}  {:<24}  {:<28}  {}",
                    t.task_uuid,
                    t.state,
                    format!("{}/{}@{}", t.namespace, t.name, t.version),
                    t.created_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
        }
        Command::Cancel { id } => {
            let task = cancel_task(&pool, id, "cli").await?;
            println!("task {} {}", task.task_uuid, task.state);
        }
        Command::Watch { id } => watch(&pool, id).await?,
    }
    Ok(())
}

/// Woken by the database when the task finishes (see `tasker_shared::task_waiter`).
async fn wait_for(
    pool: &sqlx::PgPool,
    config: &tasker_shared::TaskerConfig,
    id: Uuid,
    timeout: Duration,
) -> anyhow::Result<TaskRow> {
    let waiter = tasker_shared::TaskWaiter::new(
        pool.clone(),
        config.orchestration.wait_fallback_poll_interval(),
        config.database.reconnect_backoff(),
    );
    waiter.wait(id, timeout).await?;
    let task = TaskRow::get(pool, id).await?;
    if !task.task_state()?.is_terminal() {
        bail!(
            "task {id} still {} after {}s",
            task.state,
            timeout.as_secs()
        );
    }
    Ok(task)
}

async fn watch(pool: &sqlx::PgPool, id: Uuid) -> anyhow::Result<()> {
    let task = TaskRow::get(pool, id).await?;
    let multi = MultiProgress::new();
    let header = multi.add(ProgressBar::new_spinner());
    header.set_style(ProgressStyle::with_template("{spinner} {msg}")?);
    let style = ProgressStyle::with_template("  {prefix:<28} {msg}")?;
    let mut bars: HashMap<Uuid, ProgressBar> = HashMap::new();
    loop {
        let task_now = TaskRow::get(pool, id).await?;
        header.set_message(format!(
            "{}/{}@{} {}  {}",
            task.namespace, task.name, task.version, id, task_now.state
        ));
        header.tick();
        for s in StepRow::for_task(pool, id).await? {
            // Decisions and batches create steps while the task runs.
            let bar = bars.entry(s.step_uuid).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(s.name.clone());
                bar
            });
            let err = s
                .last_error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(|m| m.as_str())
                .map(|m| format!("  ({m})"))
                .unwrap_or_default();
            bar.set_message(format!(
                "{:<36} attempts {}/{}{}",
                s.state, s.attempts, s.max_attempts, err
            ));
        }
        if task_now.task_state()?.is_terminal() {
            header.finish_with_message(format!(
                "{}/{}@{} {}  {}",
                task.namespace, task.name, task.version, id, task_now.state
            ));
            for bar in bars.values() {
                bar.finish();
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `--run-at`: an RFC 3339 time, or `+N` followed by s, m, h or d for a delay from now.
fn parse_run_at(text: &str) -> Result<DateTime<Utc>, String> {
    if let Some(delay) = text.strip_prefix('+') {
        let (n, unit) = delay.split_at(delay.len().saturating_sub(1));
        let n: i64 = n
            .parse()
            .map_err(|_| format!("'{text}': expected +N followed by s, m, h or d"))?;
        let unit_seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(format!("'{text}': the unit must be s, m, h or d")),
        };
        return n
            .checked_mul(unit_seconds)
            .and_then(chrono::Duration::try_seconds)
            .and_then(|d| Utc::now().checked_add_signed(d))
            .ok_or_else(|| format!("'{text}': too far in the future"));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("'{text}' is neither an RFC 3339 time nor a +N[smhd] delay: {e}"))
}

#[cfg(test)]
mod tests {
    use super::parse_run_at;
    use chrono::Utc;

    #[test]
    fn run_at_takes_a_time_or_a_delay() {
        assert_eq!(
            parse_run_at("2026-12-24T08:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-12-24T07:00:00+00:00"
        );
        let in_90s = parse_run_at("+90s").unwrap() - Utc::now();
        assert!((85..=90).contains(&in_90s.num_seconds()), "{in_90s}");
        let in_2h = parse_run_at("+2h").unwrap() - Utc::now();
        assert!((7190..=7200).contains(&in_2h.num_seconds()), "{in_2h}");
        assert!(parse_run_at("+5w").is_err());
        assert!(parse_run_at("tomorrow").is_err());
        assert!(parse_run_at("+").is_err());
        assert!(parse_run_at("+9223372036854775807d").is_err());
        assert!(
            parse_run_at("+-5m").is_ok(),
            "a negative delay is a time in the past"
        );
    }
}

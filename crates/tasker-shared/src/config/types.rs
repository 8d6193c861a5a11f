use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskerConfig {
    pub database: DatabaseConfig,
    pub queues: QueuesConfig,
    pub backoff: BackoffConfig,
    pub orchestration: OrchestrationConfig,
    pub worker: WorkerConfig,
    pub retention: super::RetentionConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout_ms: u64,
    pub reconnect_backoff_ms: u64,
    pub synchronous_commit: SynchronousCommit,
}

/// Postgres `synchronous_commit` values Tasker accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SynchronousCommit {
    On,
    Off,
    Local,
    RemoteWrite,
    RemoteApply,
}

impl SynchronousCommit {
    pub fn as_str(self) -> &'static str {
        match self {
            SynchronousCommit::On => "on",
            SynchronousCommit::Off => "off",
            SynchronousCommit::Local => "local",
            SynchronousCommit::RemoteWrite => "remote_write",
            SynchronousCommit::RemoteApply => "remote_apply",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuesConfig {
    pub visibility_timeout_seconds: u32,
    pub read_batch_size: u32,
    pub archive_malformed: bool,
    /// How often orchestration vacuums queue tables that have piled up dead rows; 0 leaves
    /// them to autovacuum alone.
    pub vacuum_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    pub default_max_attempts: u32,
    pub default_backoff_base_ms: u64,
    pub default_max_backoff_ms: u64,
    pub jitter_ratio: f64,
    pub max_retry_after_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestrationConfig {
    pub bind_address: String,
    pub api_key: String,
    pub request_body_limit_bytes: usize,
    pub fallback_poll_interval_ms: u64,
    pub result_batch_size: u32,
    pub result_processing_concurrency: usize,
    pub enqueue_batch_size: u32,
    pub shutdown_timeout_ms: u64,
    /// Result messages read stay invisible this long. Applying a result is idempotent, so
    /// this is short: results a killed orchestrator had read come back within it.
    pub result_visibility_timeout_seconds: u32,
    /// How often orchestration looks for dead workers and releases their steps.
    pub dead_worker_check_interval_ms: u64,
    /// Waiting for a task to finish is woken by NOTIFY; this slow poll covers a lost one.
    pub wait_fallback_poll_interval_ms: u64,
    /// The most steps one task may have, counting those decision and batchable steps
    /// create while it runs; an outcome that would pass it fails its step.
    pub max_steps_per_task: u32,
    /// Serve on a non-loopback address without an API key (refused unless this is set).
    pub insecure_no_auth: bool,
    /// Host names (besides loopback names and IP literals) the server answers to; any other
    /// `Host` is refused, so a DNS-rebinding page cannot drive it.
    pub allowed_hosts: Vec<String>,
    /// HMAC secret for dashboard sessions and CSRF tokens; the same on every orchestrator
    /// behind one address. Empty: drawn at random by each process.
    pub session_secret: String,
    /// How long a dashboard session cookie and a page's CSRF token stay valid.
    pub session_lifetime_seconds: u64,
    /// A connection that has not sent a request's headers within this is closed.
    pub request_header_timeout_ms: u64,
    /// Connections served at once; more wait in the listen backlog.
    pub max_http_connections: usize,
    /// The largest task context accepted, in bytes of JSON, however it arrives (REST, CLI,
    /// a Ruby `Client.create_task`).
    pub max_payload_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentMode {
    EventDriven,
    Polling,
    Hybrid,
}

impl DeploymentMode {
    pub fn listens(self) -> bool {
        matches!(self, DeploymentMode::EventDriven | DeploymentMode::Hybrid)
    }

    pub fn polls(self) -> bool {
        matches!(self, DeploymentMode::Polling | DeploymentMode::Hybrid)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub deployment_mode: DeploymentMode,
    pub fallback_poll_interval_ms: u64,
    pub claim_lease_seconds: u32,
    pub heartbeat_interval_ms: u64,
    pub command_buffer_size: usize,
    pub max_steps_in_flight: usize,
    pub max_concurrent_completions: usize,
    pub completion_retry_deadline_ms: u64,
    pub bind_address: String,
    pub shutdown_timeout_ms: u64,
    /// How often a worker renews its row in the worker registry (and looks for dead ones).
    pub liveness_interval_ms: u64,
    /// A worker whose session (and advisory lock) is gone is dead once unseen this long.
    pub liveness_grace_ms: u64,
    /// A worker unseen this long is dead even if its session lingers (partitioned).
    pub liveness_timeout_ms: u64,
    /// The largest step result (result, metadata, outcome) stored, in bytes of JSON; a larger
    /// one fails its step with `invalid_result`.
    pub max_payload_bytes: usize,
    /// Who applies a recorded result to its step and task.
    #[serde(default)]
    pub results_via: ResultsVia,
    pub mpsc_channels: MpscChannelsConfig,
}

/// `[worker] results_via`: who applies a result (moves its step on, enqueues what it made
/// ready, finalizes its task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultsVia {
    /// The worker, in the transaction that records the result: one transaction per batch of
    /// results, and a child it made ready can be claimed in it.
    #[default]
    Direct,
    /// The orchestrator: the worker stores the result and sends it to the orchestration
    /// results queue, and the orchestrator's ResultProcessor applies it. A worker's
    /// transaction then locks a task row only for a decision or batchable step's outcome,
    /// at the cost of a queue message, a second transaction and a step state more per
    /// result.
    Orchestration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpscChannelsConfig {
    pub handler_dispatch: HandlerDispatchConfig,
    pub ffi_dispatch: FfiDispatchConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerDispatchConfig {
    pub dispatch_buffer_size: usize,
    pub completion_buffer_size: usize,
    pub max_concurrent_handlers: usize,
    pub handler_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FfiDispatchConfig {
    pub dispatch_buffer_size: usize,
    pub completion_timeout_ms: u64,
    /// How long after its handler's own timeout a polled step may still complete.
    pub timeout_grace_ms: u64,
    pub starvation_warning_threshold_ms: u64,
    pub callback_timeout_ms: u64,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl DatabaseConfig {
    pub fn acquire_timeout(&self) -> Duration {
        ms(self.acquire_timeout_ms)
    }
    pub fn reconnect_backoff(&self) -> Duration {
        ms(self.reconnect_backoff_ms)
    }
}

impl QueuesConfig {
    /// `None` when queue vacuuming is off.
    pub fn vacuum_interval(&self) -> Option<Duration> {
        (self.vacuum_interval_ms > 0).then(|| ms(self.vacuum_interval_ms))
    }
}

impl OrchestrationConfig {
    pub fn fallback_poll_interval(&self) -> Duration {
        ms(self.fallback_poll_interval_ms)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        ms(self.shutdown_timeout_ms)
    }
    pub fn dead_worker_check_interval(&self) -> Duration {
        ms(self.dead_worker_check_interval_ms)
    }
    pub fn wait_fallback_poll_interval(&self) -> Duration {
        ms(self.wait_fallback_poll_interval_ms)
    }
    pub fn request_header_timeout(&self) -> Duration {
        ms(self.request_header_timeout_ms)
    }
    pub fn session_lifetime(&self) -> Duration {
        Duration::from_secs(self.session_lifetime_seconds)
    }
}

impl WorkerConfig {
    pub fn fallback_poll_interval(&self) -> Duration {
        ms(self.fallback_poll_interval_ms)
    }
    pub fn heartbeat_interval(&self) -> Duration {
        ms(self.heartbeat_interval_ms)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        ms(self.shutdown_timeout_ms)
    }
    pub fn completion_retry_deadline(&self) -> Duration {
        ms(self.completion_retry_deadline_ms)
    }
    pub fn liveness_interval(&self) -> Duration {
        ms(self.liveness_interval_ms)
    }
}

impl HandlerDispatchConfig {
    pub fn handler_timeout(&self) -> Duration {
        ms(self.handler_timeout_ms)
    }
}

impl FfiDispatchConfig {
    pub fn completion_timeout(&self) -> Duration {
        ms(self.completion_timeout_ms)
    }
    pub fn timeout_grace(&self) -> Duration {
        ms(self.timeout_grace_ms)
    }
    pub fn starvation_warning_threshold(&self) -> Duration {
        ms(self.starvation_warning_threshold_ms)
    }
    pub fn callback_timeout(&self) -> Duration {
        ms(self.callback_timeout_ms)
    }
}

/// The longest duration any `*_ms` / `*_seconds` key may hold: longer ones would overflow
/// the clock arithmetic they feed (deadlines, leases), and no sane setting comes near it.
pub const MAX_DURATION_SECONDS: u64 = 365 * 24 * 3600;
/// The most handler threads / concurrent handlers one worker may run.
pub const MAX_CONCURRENT_HANDLERS: usize = 10_000;
/// The largest channel, buffer or connection count; past it a channel's semaphore panics
/// (tokio allows about 2^61) long before memory runs out.
pub const MAX_BUFFER_SIZE: usize = 1_000_000;
/// Bounds of `max_payload_bytes`: room for an ordinary result, and under Postgres's limit on
/// one jsonb value (256 MB).
pub const MIN_PAYLOAD_BYTES: usize = 1024;
pub const MAX_PAYLOAD_BYTES: usize = 255 * 1024 * 1024;
/// The most tasks retention removes in one transaction: its locks and the rows it writes
/// grow with it.
pub const MAX_RETENTION_BATCH_SIZE: u32 = 10_000;
/// Shortest `session_secret` accepted: 32 bytes, the HMAC's block of strength.
pub const MIN_SESSION_SECRET_LEN: usize = 32;

/// The dotted name and value of every `*_ms` and `*_seconds` key, wherever it sits.
fn duration_keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, u64, u64)>) {
    let serde_json::Value::Object(map) = value else {
        return;
    };
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let limit = if k.ends_with("_ms") {
            Some(MAX_DURATION_SECONDS * 1000)
        } else if k.ends_with("_seconds") {
            Some(MAX_DURATION_SECONDS)
        } else {
            None
        };
        match (limit, v.as_u64()) {
            (Some(limit), Some(n)) => out.push((key, n, limit)),
            _ => duration_keys(&key, v, out),
        }
    }
}

impl TaskerConfig {
    /// Checks the values serde cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), super::ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(super::ConfigError::InvalidValue {
                key: key.to_string(),
                reason: reason.to_string(),
            })
        };
        let mut durations = Vec::new();
        duration_keys(
            "",
            &serde_json::to_value(self).expect("the configuration serializes"),
            &mut durations,
        );
        for (key, value, limit) in durations {
            if value > limit {
                return invalid(
                    &key,
                    &format!("{value} is more than a year (at most {limit})"),
                );
            }
        }
        let hd = &self.worker.mpsc_channels.handler_dispatch;
        if hd.max_concurrent_handlers > MAX_CONCURRENT_HANDLERS {
            return invalid(
                "worker.mpsc_channels.handler_dispatch.max_concurrent_handlers",
                &format!("must be at most {MAX_CONCURRENT_HANDLERS}"),
            );
        }
        for (key, value) in [
            (
                "worker.mpsc_channels.handler_dispatch.dispatch_buffer_size",
                hd.dispatch_buffer_size,
            ),
            (
                "worker.mpsc_channels.handler_dispatch.completion_buffer_size",
                hd.completion_buffer_size,
            ),
            (
                "worker.mpsc_channels.ffi_dispatch.dispatch_buffer_size",
                self.worker.mpsc_channels.ffi_dispatch.dispatch_buffer_size,
            ),
            (
                "worker.command_buffer_size",
                self.worker.command_buffer_size,
            ),
            (
                "worker.max_steps_in_flight",
                self.worker.max_steps_in_flight,
            ),
            (
                "worker.max_concurrent_completions",
                self.worker.max_concurrent_completions,
            ),
            (
                "orchestration.result_processing_concurrency",
                self.orchestration.result_processing_concurrency,
            ),
            (
                "orchestration.max_http_connections",
                self.orchestration.max_http_connections,
            ),
        ] {
            if value > MAX_BUFFER_SIZE {
                return invalid(key, &format!("must be at most {MAX_BUFFER_SIZE}"));
            }
        }
        let o = &self.orchestration;
        if !o.session_secret.is_empty() && o.session_secret.len() < MIN_SESSION_SECRET_LEN {
            return invalid(
                "orchestration.session_secret",
                &format!("must be empty (a random secret per process) or at least {MIN_SESSION_SECRET_LEN} characters"),
            );
        }
        if o.session_lifetime_seconds < 60 {
            return invalid(
                "orchestration.session_lifetime_seconds",
                "must be at least 60",
            );
        }
        if o.request_header_timeout_ms == 0 {
            return invalid(
                "orchestration.request_header_timeout_ms",
                "must be at least 1",
            );
        }
        if o.max_http_connections == 0 {
            return invalid("orchestration.max_http_connections", "must be at least 1");
        }
        if let Some(bad) = o.allowed_hosts.iter().find(|h| {
            h.is_empty() || h.contains(|c: char| c.is_whitespace() || matches!(c, '/' | ':' | '@'))
        }) {
            return invalid(
                "orchestration.allowed_hosts",
                &format!("'{bad}' is not a host name (give names without scheme, port or path)"),
            );
        }
        if self.database.url.trim().is_empty() {
            return invalid("database.url", "must not be empty (or set DATABASE_URL)");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if self.database.min_connections > self.database.max_connections {
            return invalid(
                "database.min_connections",
                "must not exceed database.max_connections",
            );
        }
        for (key, value) in [
            ("worker.max_payload_bytes", self.worker.max_payload_bytes),
            (
                "orchestration.max_payload_bytes",
                self.orchestration.max_payload_bytes,
            ),
        ] {
            if !(MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES).contains(&value) {
                return invalid(
                    key,
                    &format!("must be between {MIN_PAYLOAD_BYTES} and {MAX_PAYLOAD_BYTES} (Postgres's largest jsonb value)"),
                );
            }
        }
        if self.orchestration.max_steps_per_task == 0 {
            return invalid("orchestration.max_steps_per_task", "must be at least 1");
        }
        if self.queues.visibility_timeout_seconds == 0 {
            return invalid("queues.visibility_timeout_seconds", "must be at least 1");
        }
        if self.queues.read_batch_size == 0 {
            return invalid("queues.read_batch_size", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.backoff.jitter_ratio) {
            return invalid("backoff.jitter_ratio", "must be between 0.0 and 1.0");
        }
        if self.backoff.default_max_attempts == 0 {
            return invalid("backoff.default_max_attempts", "must be at least 1");
        }
        if self.backoff.default_backoff_base_ms > self.backoff.default_max_backoff_ms {
            return invalid(
                "backoff.default_backoff_base_ms",
                "must not exceed backoff.default_max_backoff_ms",
            );
        }
        let hd = &self.worker.mpsc_channels.handler_dispatch;
        for (key, value) in [
            (
                "worker.mpsc_channels.handler_dispatch.dispatch_buffer_size",
                hd.dispatch_buffer_size,
            ),
            (
                "worker.mpsc_channels.handler_dispatch.completion_buffer_size",
                hd.completion_buffer_size,
            ),
            (
                "worker.mpsc_channels.handler_dispatch.max_concurrent_handlers",
                hd.max_concurrent_handlers,
            ),
            (
                "worker.mpsc_channels.ffi_dispatch.dispatch_buffer_size",
                self.worker.mpsc_channels.ffi_dispatch.dispatch_buffer_size,
            ),
            (
                "worker.command_buffer_size",
                self.worker.command_buffer_size,
            ),
            (
                "worker.max_concurrent_completions",
                self.worker.max_concurrent_completions,
            ),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if hd.handler_timeout_ms == 0 {
            return invalid(
                "worker.mpsc_channels.handler_dispatch.handler_timeout_ms",
                "must be at least 1",
            );
        }
        for (key, value) in [
            (
                "orchestration.result_visibility_timeout_seconds",
                u64::from(self.orchestration.result_visibility_timeout_seconds),
            ),
            (
                "orchestration.dead_worker_check_interval_ms",
                self.orchestration.dead_worker_check_interval_ms,
            ),
            (
                "orchestration.wait_fallback_poll_interval_ms",
                self.orchestration.wait_fallback_poll_interval_ms,
            ),
            (
                "worker.liveness_interval_ms",
                self.worker.liveness_interval_ms,
            ),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if self.worker.liveness_grace_ms <= self.worker.liveness_interval_ms {
            return invalid(
                "worker.liveness_grace_ms",
                "must be longer than worker.liveness_interval_ms, or live workers are taken for dead",
            );
        }
        if self.worker.liveness_timeout_ms < self.worker.liveness_grace_ms {
            return invalid(
                "worker.liveness_timeout_ms",
                "must not be shorter than worker.liveness_grace_ms",
            );
        }
        if self.retention.interval_seconds == 0 {
            return invalid("retention.interval_seconds", "must be at least 1");
        }
        if !(1..=MAX_RETENTION_BATCH_SIZE).contains(&self.retention.batch_size) {
            return invalid(
                "retention.batch_size",
                &format!(
                    "{} is out of range (1 to {MAX_RETENTION_BATCH_SIZE})",
                    self.retention.batch_size
                ),
            );
        }
        if self.worker.claim_lease_seconds == 0 {
            return invalid("worker.claim_lease_seconds", "must be at least 1");
        }
        if self.worker.heartbeat_interval_ms >= u64::from(self.worker.claim_lease_seconds) * 1000 {
            return invalid(
                "worker.heartbeat_interval_ms",
                "must be shorter than worker.claim_lease_seconds, or leases expire under running handlers",
            );
        }
        Ok(())
    }
}

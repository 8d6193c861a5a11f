//! Metric names the worker records (Prometheus, through the `metrics` facade).

pub const HANDLERS_IN_FLIGHT: &str = "tasker_worker_handlers_in_flight";
pub const PERMITS_AVAILABLE: &str = "tasker_worker_handler_permits_available";
pub const DISPATCH_DEPTH: &str = "tasker_worker_dispatch_channel_depth";
pub const DISPATCH_SATURATION: &str = "tasker_worker_dispatch_channel_saturation";
pub const COMPLETION_DEPTH: &str = "tasker_worker_completion_channel_depth";
pub const COMPLETION_SATURATION: &str = "tasker_worker_completion_channel_saturation";
pub const RESULTS: &str = "tasker_worker_results_total";
pub const HANDLER_DURATION: &str = "tasker_worker_handler_duration_seconds";
pub const CLAIM_CONFLICTS: &str = "tasker_worker_claim_conflicts_total";
pub const STEPS_CLAIMED: &str = "tasker_worker_steps_claimed_total";
/// The part of STEPS_CLAIMED a recording claimed: children it left ready.
pub const CHILDREN_CLAIMED: &str = "tasker_worker_steps_claimed_by_recording_total";
/// The part of STEPS_CLAIMED a creation in this process claimed: roots of its task.
pub const ROOTS_CLAIMED_AT_CREATION: &str = "tasker_worker_steps_claimed_at_creation_total";
pub const LATE_RESULTS: &str = "tasker_worker_late_results_refused_total";
pub const MALFORMED_MESSAGES: &str = "tasker_worker_malformed_messages_total";
/// Claims of a batch of messages that failed and were retried one message at a time.
pub const CLAIMS_TAKEN_APART: &str = "tasker_worker_claims_taken_apart_total";
/// Steps failed with claim_failed: their own claim failed.
pub const UNCLAIMABLE_STEPS: &str = "tasker_worker_unclaimable_steps_total";
pub const EVENTS_PUBLISHED: &str = "tasker_worker_domain_events_published_total";
pub const RECORD_RETRIES: &str = "tasker_worker_result_record_retries_total";
pub const FFI_PENDING: &str = "tasker_ffi_pending_steps";
pub const FFI_STARVING: &str = "tasker_ffi_starving_steps";
pub const FFI_TIMEOUTS: &str = "tasker_ffi_completion_timeouts_total";
pub const FFI_REFUSED: &str = "tasker_ffi_completions_refused_total";

/// Depth and saturation (depth / capacity) of a bounded tokio channel.
pub fn record_channel<T>(
    depth_name: &'static str,
    saturation_name: &'static str,
    tx: &tokio::sync::mpsc::Sender<T>,
) {
    let capacity = tx.max_capacity();
    let depth = capacity - tx.capacity();
    metrics::gauge!(depth_name).set(depth as f64);
    metrics::gauge!(saturation_name).set(depth as f64 / capacity as f64);
}

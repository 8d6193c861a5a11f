//! PGMQ queues: naming, creation, typed send/read/delete, and the wake-up notifications
//! consumers LISTEN for.
//!
//! Queue names become parts of SQL identifiers (`pgmq.q_<name>`), so every name is checked
//! by [`QueueName::new`] before it reaches the database.

mod client;
mod maintenance;
mod names;
mod notifier;

pub use client::{QueueClient, QueueError, QueuedMessage};
pub use maintenance::{vacuum_queues, VACUUM_DEAD_ROWS_THRESHOLD};
pub use names::{
    domain_events_queue, notify_channel, validate_identifier, worker_queue, QueueName,
    ORCHESTRATION_RESULTS_QUEUE,
};
pub use notifier::{sent_by_this_process, Notifier};

//! Plumbing shared by the Ruby classes and module functions: argument parsing (`args`),
//! Ruby <-> JSON (`convert`), any `Serialize` value as Ruby (`serialize`), the client cache
//! (`client`), waiting with the GVL released (`nogvl`), the tokio runtime (`runtime`) and
//! poll/complete over a channel (`channel`).

pub mod args;
pub mod channel;
pub mod client;
pub mod convert;
pub mod nogvl;
pub mod runtime;
pub mod serialize;

use std::time::Duration;

/// Upper bound on one database call; the pool's acquire timeout usually fires long before.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

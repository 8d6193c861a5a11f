//! The Ruby extension: TaskerCore::Native, embedding the Tasker worker core (and, when
//! asked, orchestration) in a Ruby process.
//!
//! Ruby handler threads poll the FfiDispatchChannel with the GVL released and hand results
//! back without waiting; tokio runs everything else on a runtime the extension owns.
//!
//! # Layout
//!
//! One file per Ruby class: `worker` (`Native::Worker`, and `Native.start_worker`),
//! `loopback_channel` (`Native::LoopbackChannel`), `error` (the exception classes). The
//! module functions of `Native`, one file per subject: `tasks` (create, get, wait, cancel),
//! `templates` (register, validate, load), `database` (migrate, drop), `config` (load).
//! Plumbing under `helpers/`: `args` (arguments of the module functions), `client` (the
//! TaskClient per configuration), `channel` (poll/complete shared by both channels),
//! `convert` (Ruby <-> JSON with bounded depth), `nogvl` (waiting with the GVL released),
//! `runtime` (the tokio runtime, per process).

mod config;
mod database;
mod error;
mod helpers;
mod loopback_channel;
mod tasks;
mod templates;
mod worker;

use magnus::{prelude::*, Error, Ruby};

/// Step payloads are cloned and freed across the runtime's threads and the Ruby threads;
/// mimalloc handles that traffic much better than the system allocator. Only the Rust
/// side's allocations use it; Ruby keeps its own.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    tasker_worker::ffi::init_logging();
    helpers::runtime::install_fork_hook()?;
    let tasker = ruby.define_module("TaskerCore")?;
    let native = tasker.define_module("Native")?;
    error::define(ruby, tasker, native)?;
    helpers::convert::init_keys(ruby);
    worker::define(ruby, native)?;
    loopback_channel::define(ruby, native)?;
    tasks::define(native)?;
    templates::define(native)?;
    database::define(native)?;
    config::define(native)?;
    native.const_set("VERSION", env!("CARGO_PKG_VERSION"))?;
    // The limits the Ruby library checks its own arguments against.
    native.const_set("MAX_TIMEOUT_SECONDS", helpers::convert::MAX_TIMEOUT_SECONDS)?;
    native.const_set(
        "MAX_CONCURRENCY",
        tasker_shared::config::MAX_CONCURRENT_HANDLERS,
    )?;
    Ok(())
}

//! A language binding's tokio runtime, and the guard that keeps objects from crossing a
//! fork.
//!
//! A forked child inherits the parent's memory but none of its threads: the parent's runtime
//! has no workers there, and any lock one of them held stays locked forever. So the runtime
//! remembers the process that built it, a child builds its own, and objects made in the
//! parent refuse to work (and are leaked rather than dropped) in the child.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::runtime::Runtime;

/// Bumped in every forked child, so "is this still the process that made it?" is an atomic
/// load rather than a getpid system call on every poll and completion.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked_child() {
    FORK_GENERATION.fetch_add(1, Ordering::AcqRel);
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot register the fork handler (pthread_atfork returned {0})")]
    ForkHook(i32),
    #[error("cannot start the tokio runtime: {0}")]
    Build(std::io::Error),
}

/// This {what} was made in another process: it cannot be used after a fork.
#[derive(Debug, thiserror::Error)]
#[error("this {what} was created in process {owner} and cannot be used in forked process {current}; create a new one after fork")]
pub struct ForkedError {
    pub what: String,
    pub owner: u32,
    pub current: u32,
}

/// Registers the fork hook; called once, when the extension loads.
pub fn install_fork_hook() -> Result<(), RuntimeError> {
    // SAFETY: the handler only touches an atomic, which is async-signal-safe.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    if rc != 0 {
        return Err(RuntimeError::ForkHook(rc));
    }
    Ok(())
}

fn generation() -> u64 {
    FORK_GENERATION.load(Ordering::Acquire)
}

struct Owned {
    generation: u64,
    runtime: Arc<Runtime>,
}

/// Only taken by host-language threads holding their interpreter lock (Ruby's GVL,
/// Python's GIL). `fork` needs that lock too, so no other thread can be holding this one
/// at the moment of a fork.
static RUNTIME: Mutex<Option<Owned>> = Mutex::new(None);

/// The runtime for this process, built on first use. Call with the interpreter lock held.
pub fn runtime() -> Result<Arc<Runtime>, RuntimeError> {
    let generation = generation();
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(owned) = slot.as_ref() {
        if owned.generation == generation {
            return Ok(owned.runtime.clone());
        }
    }
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("tasker-rt")
            .build()
            .map_err(RuntimeError::Build)?,
    );
    // The parent's runtime (if this is a forked child) is leaked: dropping it would wait for
    // worker threads that do not exist in this process.
    if let Some(stale) = slot.replace(Owned {
        generation,
        runtime: runtime.clone(),
    }) {
        #[allow(clippy::mem_forget)]
        std::mem::forget(stale);
    }
    Ok(runtime)
}

/// A value usable only in the process that created it.
pub struct ProcessBound<T> {
    generation: u64,
    /// For messages only.
    pid: u32,
    value: ManuallyDrop<T>,
}

impl<T> ProcessBound<T> {
    pub fn new(value: T) -> Self {
        Self {
            generation: generation(),
            pid: std::process::id(),
            value: ManuallyDrop::new(value),
        }
    }

    /// The value, or a ForkedError naming `what` when called in a forked child.
    pub fn get(&self, what: &str) -> Result<&T, ForkedError> {
        if self.in_owner_process() {
            Ok(&self.value)
        } else {
            Err(self.forked(what))
        }
    }

    pub fn get_mut(&mut self, what: &str) -> Result<&mut T, ForkedError> {
        if self.in_owner_process() {
            Ok(&mut self.value)
        } else {
            Err(self.forked(what))
        }
    }

    fn forked(&self, what: &str) -> ForkedError {
        ForkedError {
            what: what.to_string(),
            owner: self.pid,
            current: std::process::id(),
        }
    }

    pub fn in_owner_process(&self) -> bool {
        self.generation == generation()
    }
}

impl<T> Drop for ProcessBound<T> {
    fn drop(&mut self) {
        if self.in_owner_process() {
            // SAFETY: dropped exactly once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.value) }
        }
        // In a forked child the value is leaked: its destructor could wake tasks of, or take
        // locks held by, threads that only exist in the parent.
    }
}

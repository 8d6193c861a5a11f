//! The extension's tokio runtime, and the guard that keeps objects from crossing a fork.
//!
//! A forked child inherits the parent's memory but none of its threads: the parent's runtime
//! has no workers there, and any lock one of them held stays locked forever. So the runtime
//! remembers the process that built it, a child builds its own, and objects made in the
//! parent refuse to work (and are leaked rather than dropped) in the child.

use crate::error::{fork_error, native_error};
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

/// Registers the fork hook; called once, when the extension loads.
pub fn install_fork_hook() -> Result<(), magnus::Error> {
    // SAFETY: the handler only touches an atomic, which is async-signal-safe.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    if rc != 0 {
        return Err(native_error(format!(
            "cannot register the fork handler (pthread_atfork returned {rc})"
        )));
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

/// Only taken by Ruby threads holding the GVL. `fork` needs the GVL too, so no other thread
/// can be holding this lock at the moment of a fork.
static RUNTIME: Mutex<Option<Owned>> = Mutex::new(None);

/// The runtime for this process, built on first use. Call with the GVL held.
pub fn runtime() -> Result<Arc<Runtime>, magnus::Error> {
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
            .map_err(|e| native_error(format!("cannot start the tokio runtime: {e}")))?,
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

    /// The value, or a ForkError when called in a forked child.
    pub fn get(&self, what: &str) -> Result<&T, magnus::Error> {
        if self.in_owner_process() {
            Ok(&self.value)
        } else {
            Err(fork_error(what, self.pid))
        }
    }

    pub fn get_mut(&mut self, what: &str) -> Result<&mut T, magnus::Error> {
        if self.in_owner_process() {
            Ok(&mut self.value)
        } else {
            Err(fork_error(what, self.pid))
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

//! Log output of the Rust core inside a language binding (Ruby, Python): to stderr,
//! filtered by `TASKER_LOG` (then `RUST_LOG`), warnings and errors by default so the host
//! process is not flooded.

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TASKER_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Another library in the process may already have installed a subscriber; keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RawStderr)
        .try_init();
}

/// File descriptor 2 written directly. `std::io::stderr` takes a process-wide lock that a
/// runtime thread may hold at the moment the host process forks; the child would then hang on its
/// first log line. Each formatted event arrives as one buffer, so lines stay whole.
struct RawStderr;

impl Write for RawStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: fd 2 stays open for the life of the process; ManuallyDrop never closes it.
        let mut fd = ManuallyDrop::new(unsafe { File::from_raw_fd(2) });
        fd.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

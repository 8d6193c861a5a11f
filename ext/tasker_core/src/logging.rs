//! Log output of the Rust core: to stderr, filtered by `TASKER_LOG` (then `RUST_LOG`),
//! warnings and errors by default so a Ruby process is not flooded.

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TASKER_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Another library in the process may already have installed a subscriber; keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

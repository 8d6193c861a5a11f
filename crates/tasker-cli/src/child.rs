//! Child processes that the demo and the benchmark start and must not leave behind.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Stopped with SIGTERM when dropped (graceful shutdown), SIGKILL if it lingers.
pub struct ManagedChild(pub Child);

impl Drop for ManagedChild {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

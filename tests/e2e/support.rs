//! Starting `tasker` processes for end-to-end tests. Every process talks to the others only
//! through the test's own database; each is killed when its handle drops.

// Each e2e test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tasker_tests::testing::TestDatabase;

pub struct Process {
    child: Child,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/e2e-logs")
        .join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `tasker <args>` against `db` with the test environment and extra variables.
pub fn tasker(
    test: &str,
    name: &str,
    db: &TestDatabase,
    args: &[&str],
    env: &[(&str, &str)],
) -> Process {
    let root = tasker_tests::repo_root();
    let log = std::fs::File::create(log_dir(test).join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tasker"));
    cmd.args(args)
        .env("DATABASE_URL", &db.url)
        .env("TASKER_ENV", "test")
        .env("TASKER_CONFIG_DIR", root.join("config/tasker"))
        .env("TASKER_TEMPLATE_PATH", root.join("config/tasks"))
        .env("TASKER_ORCHESTRATION__BIND_ADDRESS", "127.0.0.1:0")
        .env("TASKER_WORKER__BIND_ADDRESS", "")
        .env("TASKER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Process {
        child: cmd.spawn().expect("starting the tasker binary"),
    }
}

/// Settings that make crash recovery quick: messages reappear and leases expire in seconds.
pub const FAST_RECOVERY: &[(&str, &str)] = &[
    ("TASKER_QUEUES__VISIBILITY_TIMEOUT_SECONDS", "2"),
    ("TASKER_WORKER__CLAIM_LEASE_SECONDS", "2"),
    ("TASKER_WORKER__HEARTBEAT_INTERVAL_MS", "500"),
];

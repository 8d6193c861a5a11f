//! The demo's private PostgreSQL cluster, for machines where no server accepts the default
//! URL (none running, or one that wants a password over TCP). Debian's server binaries, data
//! in `.tasker/pg`, a Unix socket in `.tasker/run` and no TCP at all, trust authentication.
//! Started when needed, reused by later runs, stopped by `tasker demo --stop-db`.

use anyhow::{bail, Context};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::str::FromStr;
use std::time::Duration;
use tokio::process::Command;

/// The demo's database when `DATABASE_URL` is not set and this server accepts it.
pub const SYSTEM_URL: &str = "postgresql://postgres@127.0.0.1:5432/tasker_demo";
const DATABASE: &str = "tasker_demo";
/// Only names the socket file (`.s.PGSQL.5433`): the cluster listens on no TCP port, so it
/// cannot clash with a system server.
const PORT: u16 = 5433;
const SERVER_ROOT: &str = "/usr/lib/postgresql";
/// A Unix socket path must fit in `sun_path` (108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT: Duration = Duration::from_secs(60);
/// Bounds every command run here, `pg_ctl`'s own wait included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Connects to the server of `url` (its `postgres` database, as creating the demo database
/// does) and says why that failed, if it did.
pub async fn probe(url: &str) -> Result<(), String> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| e.to_string())?
        .database("postgres");
    match tokio::time::timeout(PROBE_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => {
            conn.close().await.ok();
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

/// Whether `ensure_running` had to start the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    Now,
    AlreadyRunning,
}

pub struct PrivateCluster {
    base: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    /// Set when root runs the demo: root cannot run the server, so the binaries run as the
    /// `postgres` user (uid, gid), which owns the data and socket directories.
    postgres: Option<(u32, u32)>,
    /// Why the cluster is not under the project's `.tasker`, when it is not.
    pub relocated: Option<String>,
}

impl PrivateCluster {
    /// The cluster for the project at `root`: `root/.tasker`, unless the `postgres` user
    /// cannot reach it or the socket path would be too long; then a directory under
    /// `/var/tmp` named after the project's path, so every run finds the same one.
    pub async fn for_project(root: &Path) -> anyhow::Result<Self> {
        let root = std::fs::canonicalize(root)
            .with_context(|| format!("resolving the project directory {}", root.display()))?;
        let postgres = postgres_owner().await?;
        let preferred = Self::at(&root.join(".tasker"), postgres);
        let fallback = Self::at(&fallback_base(&root), postgres);
        // A cluster already made is where it is.
        if preferred.exists() {
            return Ok(preferred);
        }
        if fallback.exists() {
            return Ok(fallback.relocated(&root));
        }
        if preferred.socket_path().len() > MAX_SOCKET_PATH {
            return Ok(fallback.relocated_because(format!(
                "its socket path under {} would be longer than {MAX_SOCKET_PATH} bytes",
                root.display()
            )));
        }
        if postgres.is_some() && !searchable_by_postgres(&root).await? {
            return Ok(fallback.relocated_because(format!(
                "the postgres user cannot reach {} (a directory on the way is not searchable)",
                root.display()
            )));
        }
        Ok(preferred)
    }

    /// A cluster in `base` (data in `base/pg`, socket and server log in `base/run`).
    fn at(base: &Path, postgres: Option<(u32, u32)>) -> Self {
        Self {
            base: base.to_path_buf(),
            data: base.join("pg"),
            socket_dir: base.join("run"),
            postgres,
            relocated: None,
        }
    }

    fn relocated(self, root: &Path) -> Self {
        let why = format!("{}/.tasker was not usable when it was made", root.display());
        self.relocated_because(why)
    }

    fn relocated_because(mut self, why: String) -> Self {
        self.relocated = Some(why);
        self
    }

    fn exists(&self) -> bool {
        self.data.join("PG_VERSION").is_file()
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        PORT
    }

    fn socket_path(&self) -> String {
        format!("{}/.s.PGSQL.{PORT}", self.socket_dir.display())
    }

    fn log_path(&self) -> PathBuf {
        self.socket_dir.join("postgresql.log")
    }

    /// A URL for sqlx (and so for the Ruby worker, which uses the same core): the `host`
    /// parameter, an absolute path, makes it connect over the socket in that directory.
    pub fn url(&self) -> String {
        format!(
            "postgresql://postgres@localhost/{DATABASE}?host={}&port={PORT}",
            query_escape(&self.socket_dir.to_string_lossy())
        )
    }

    /// Creates the cluster if it does not exist and starts it if it is not running.
    pub async fn ensure_running(&self) -> anyhow::Result<Started> {
        self.prepare_directories()?;
        let bin = self.server_bin()?;
        if !self.exists() {
            self.init(&bin).await?;
        }
        self.write_settings()?;
        if self.is_running(&bin).await? {
            return Ok(Started::AlreadyRunning);
        }
        let log = self.log_path();
        let mut start = self.pg_command(&bin, "pg_ctl");
        start
            .arg("start")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-s", "-t", &PG_CTL_WAIT.as_secs().to_string()]);
        if let Err(e) = run(start, "starting the private PostgreSQL cluster").await {
            bail!(
                "{e:#}\nlast lines of {}:\n{}",
                log.display(),
                tail(&log, 20)
            );
        }
        Ok(Started::Now)
    }

    /// Stops the server (fast shutdown: open sessions are ended). Returns whether it was
    /// running.
    pub async fn stop(&self) -> anyhow::Result<bool> {
        if !self.exists() {
            return Ok(false);
        }
        let bin = self.server_bin()?;
        if !self.is_running(&bin).await? {
            return Ok(false);
        }
        let mut stop = self.pg_command(&bin, "pg_ctl");
        stop.arg("stop").arg("-D").arg(&self.data).args([
            "-m",
            "fast",
            "-w",
            "-s",
            "-t",
            &PG_CTL_WAIT.as_secs().to_string(),
        ]);
        run(stop, "stopping the private PostgreSQL cluster").await?;
        Ok(true)
    }

    fn prepare_directories(&self) -> anyhow::Result<()> {
        for (dir, mode) in [
            (&self.base, 0o755),
            (&self.data, 0o700),
            (&self.socket_dir, 0o755),
        ] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            // Explicit modes: the umask must not lock the postgres user out of the base.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("setting the permissions of {}", dir.display()))?;
        }
        for dir in [&self.data, &self.socket_dir] {
            self.give_to_postgres(dir)?;
        }
        Ok(())
    }

    fn give_to_postgres(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.postgres {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to the postgres user", path.display()))?;
        }
        Ok(())
    }

    async fn init(&self, bin: &Path) -> anyhow::Result<()> {
        let mut initdb = self.pg_command(bin, "initdb");
        initdb.arg("-D").arg(&self.data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(initdb, "creating the private PostgreSQL cluster (initdb)").await?;
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .with_context(|| format!("reading {}", conf.display()))?;
        text.push_str("\ninclude_if_exists = 'tasker-demo.conf'\n");
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))
    }

    /// Rewritten before every start so that the socket follows the project if it moves.
    fn write_settings(&self) -> anyhow::Result<()> {
        let path = self.data.join("tasker-demo.conf");
        let text = format!(
            "# Written by `tasker demo` before each start.\n\
             listen_addresses = ''\n\
             port = {PORT}\n\
             unix_socket_directories = '{}'\n\
             # Trust authentication: only the owner (and root) may use the socket.\n\
             unix_socket_permissions = 0700\n",
            self.socket_dir.to_string_lossy().replace('\'', "''")
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        self.give_to_postgres(&path)
    }

    async fn is_running(&self, bin: &Path) -> anyhow::Result<bool> {
        let mut status = self.pg_command(bin, "pg_ctl");
        status.arg("status").arg("-D").arg(&self.data);
        let what = format!("{status:?}");
        let out = output(status, &what).await?;
        // pg_ctl status: 0 running, 3 not running.
        match out.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => bail!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    /// The binaries of the version the cluster was made with, or the newest installed.
    fn server_bin(&self) -> anyhow::Result<PathBuf> {
        let version_file = self.data.join("PG_VERSION");
        if !version_file.is_file() {
            return newest_server_bin();
        }
        let version = std::fs::read_to_string(&version_file)
            .with_context(|| format!("reading {}", version_file.display()))?;
        let bin = Path::new(SERVER_ROOT).join(version.trim()).join("bin");
        if !bin.join("postgres").is_file() {
            bail!(
                "the private cluster in {} was made by PostgreSQL {}, whose server binaries are \
                 not in {} (install postgresql-{0}, or delete {} to start afresh)",
                self.data.display(),
                version.trim(),
                bin.display(),
                self.base.display()
            );
        }
        Ok(bin)
    }

    fn pg_command(&self, bin: &Path, program: &str) -> Command {
        let mut cmd = if self.postgres.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(program));
            c
        } else {
            Command::new(bin.join(program))
        };
        // The postgres user may not be able to enter the caller's working directory.
        cmd.current_dir("/");
        cmd
    }
}

/// `Some((uid, gid))` of the `postgres` user when running as root, `None` otherwise (the
/// caller's own user then runs the server).
async fn postgres_owner() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let mut getent = Command::new("getent");
    getent.args(["passwd", "postgres"]);
    let out = output(getent, "getent passwd postgres").await?;
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = line.trim().split(':').collect();
    match (
        fields.get(2).and_then(|f| f.parse().ok()),
        fields.get(3).and_then(|f| f.parse().ok()),
    ) {
        (Some(uid), Some(gid)) if out.status.success() => Ok(Some((uid, gid))),
        _ => bail!(
            "running as root, and there is no postgres user to run the private PostgreSQL \
             cluster as (install the postgresql package: bin/setup does)"
        ),
    }
}

async fn searchable_by_postgres(dir: &Path) -> anyhow::Result<bool> {
    // test -x resolves the whole path, so it fails if any parent is not searchable.
    let mut test = Command::new("runuser");
    test.args(["-u", "postgres", "--", "test", "-x"])
        .arg(dir)
        .current_dir("/");
    let what = format!("{test:?}");
    Ok(output(test, &what).await?.status.success())
}

fn newest_server_bin() -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(SERVER_ROOT).with_context(|| {
        format!("no PostgreSQL server binaries in {SERVER_ROOT} (bin/setup installs postgresql)")
    })?;
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("bin/initdb").is_file())
        .filter_map(|e| {
            let version: Vec<u32> = e
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some((version, e.path().join("bin")))
        })
        .max()
        .map(|(_, bin)| bin)
        .with_context(|| {
            format!("no PostgreSQL server binaries in {SERVER_ROOT}/*/bin (bin/setup installs postgresql)")
        })
}

/// `/var/tmp/tasker-demo-<hash of the project path>`: stable across runs, short enough for a
/// socket path, and reachable by the postgres user.
fn fallback_base(root: &Path) -> PathBuf {
    // FNV-1a: a fixed hash (std's DefaultHasher may change between Rust releases).
    let hash = root
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    PathBuf::from(format!("/var/tmp/tasker-demo-{hash:016x}"))
}

/// Percent-encodes a URL query value, keeping `/` readable.
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `cmd` to completion within [`COMMAND_TIMEOUT`], capturing its output.
async fn output(mut cmd: Command, what: &str) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(COMMAND_TIMEOUT, cmd.output()).await {
        Ok(out) => out.with_context(|| format!("running {what}")),
        Err(_) => bail!("{what}: no result within {} s", COMMAND_TIMEOUT.as_secs()),
    }
}

/// Like [`output`], failing with the command line and its stderr unless it succeeds.
async fn run(cmd: Command, what: &str) -> anyhow::Result<()> {
    let line = format!("{cmd:?}");
    let out = output(cmd, &line).await.with_context(|| what.to_string())?;
    if !out.status.success() {
        bail!(
            "{what}: {line} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_connects_over_the_socket_directory() {
        let cluster = PrivateCluster::at(Path::new("/p q/.tasker"), None);
        let url = cluster.url();
        assert_eq!(
            url,
            "postgresql://postgres@localhost/tasker_demo?host=/p%20q/.tasker/run&port=5433"
        );
        let options = PgConnectOptions::from_str(&url).unwrap();
        assert_eq!(
            options.get_socket(),
            Some(&PathBuf::from("/p q/.tasker/run"))
        );
        assert_eq!(options.get_port(), PORT);
        assert_eq!(options.get_database(), Some(DATABASE));
    }

    #[test]
    fn fallback_base_is_stable_and_short() {
        let a = fallback_base(Path::new("/some/project"));
        assert_eq!(a, fallback_base(Path::new("/some/project")));
        assert_ne!(a, fallback_base(Path::new("/other/project")));
        assert!(PrivateCluster::at(&a, None).socket_path().len() <= MAX_SOCKET_PATH);
    }

    /// Creates a cluster in a temporary directory (as the postgres user when root), connects
    /// over its socket, checks that a second start reuses it, stops it and removes it.
    #[tokio::test]
    async fn private_cluster_starts_connects_and_stops() {
        if newest_server_bin().is_err() {
            eprintln!("skipped: no PostgreSQL server binaries in {SERVER_ROOT}/*/bin");
            return;
        }
        let base = std::env::temp_dir().join(format!("tasker-demo-db-test-{}", std::process::id()));
        let cluster = PrivateCluster::at(&base, postgres_owner().await.unwrap());
        let outcome = exercise(&cluster).await;
        let stopped = cluster.stop().await;
        let removed = std::fs::remove_dir_all(&base);
        outcome.unwrap();
        assert!(stopped.unwrap(), "the cluster was not running at the end");
        removed.unwrap();
    }

    /// Fails rather than panics, so that the caller always cleans up.
    async fn exercise(cluster: &PrivateCluster) -> anyhow::Result<()> {
        anyhow::ensure!(cluster.ensure_running().await? == Started::Now);
        anyhow::ensure!(cluster.ensure_running().await? == Started::AlreadyRunning);
        let mut conn = PgConnectOptions::from_str(&cluster.url())?
            .database("postgres")
            .connect()
            .await?;
        // NULL over a Unix socket: the connection did not go through TCP.
        let addr: Option<String> = sqlx::query_scalar("SELECT inet_server_addr()::text")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        anyhow::ensure!(addr.is_none(), "connected over TCP ({addr:?})");
        Ok(())
    }
}

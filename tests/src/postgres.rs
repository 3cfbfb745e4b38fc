//! A PostgreSQL cluster of the test's own (initdb'd into a temporary directory, on a free
//! port, stopped by a drop guard; never the machine's shared one), and the audit tables read
//! in it directly with psql.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::skip::or_skip;

/// The variable that names the directory of PostgreSQL's server tools, where they are not in
/// `/usr/lib/postgresql/<version>/bin`.
pub const PG_BIN_VAR: &str = "AUDIT_TEST_PG_BIN";

/// The directory of PostgreSQL's server tools: [`PG_BIN_VAR`] if set (whether or not the tools
/// are there: a wrong setting is reported, not worked around), else the newest installed
/// version's under `/usr/lib/postgresql`.
fn pg_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(PG_BIN_VAR) {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(format!("{PG_BIN_VAR}={} holds no initdb", dir.display()))
        };
    }
    newest_installed_bin_dir().ok_or_else(|| "no PostgreSQL under /usr/lib/postgresql/*/bin".into())
}

/// The directory of the newest installed PostgreSQL's binaries, if any.
fn newest_installed_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A PostgreSQL cluster of the test's own, in a temporary directory, on a free port; stopped
/// (immediately) and deleted when dropped.
#[derive(Debug)]
pub struct PgCluster {
    root: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Root must run the server tools as `postgres` (initdb refuses root).
    runuser: Option<PathBuf>,
    running: bool,
}

impl PgCluster {
    /// Creates and starts a cluster; `Err` is why PostgreSQL is not available here (the
    /// caller skips). Failures of an available PostgreSQL panic.
    pub fn start() -> Result<Self, String> {
        let bin = pg_bin_dir()?;
        let runuser = if running_as_root() {
            let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or("running as root and runuser is not installed (initdb refuses root)")?;
            Some(runuser)
        } else {
            None
        };
        let root = tempfile::Builder::new()
            .prefix("faults-pg-")
            .tempdir_in("/tmp")
            .expect("a temporary directory");
        if runuser.is_some() {
            let chown = Command::new("chown")
                .arg("postgres:")
                .arg(root.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !chown.success() {
                return Err(format!("chown postgres {} failed", root.path().display()));
            }
        }
        let mut cluster = Self {
            root,
            bin,
            port: 0,
            runuser,
            running: false,
        };
        let output = cluster
            .tool("initdb")
            .arg("-D")
            .arg(cluster.data_dir())
            .args(["-A", "trust", "-U", "postgres", "-N", "-E", "UTF8"])
            .output()
            .map_err(|e| format!("initdb does not run: {e}"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("cannot be run as root") || stderr.contains("does not exist") {
                return Err(format!("initdb unavailable: {stderr}"));
            }
            panic!("initdb failed: {stderr}");
        }
        let mut last = String::new();
        for _ in 0..3 {
            cluster.port = free_port();
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        panic!("the test cluster does not start: {last}");
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// A server tool, run as `postgres` when the test runs as root.
    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        let mut command = match &self.runuser {
            Some(runuser) => {
                let mut c = Command::new(runuser);
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        command.stdin(Stdio::null());
        command
    }

    fn pg_ctl_start(&mut self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off \
             -c full_page_writes=off",
            self.port,
            self.root.path().display()
        );
        let output = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.root.path().join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .map_err(|e| format!("pg_ctl does not run: {e}"))?;
        if output.status.success() {
            self.running = true;
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start: {}{}; server log: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(self.root.path().join("server.log")).unwrap_or_default()
            ))
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Its address, for a proxy in front of it.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `pg_ctl stop -m <mode>` (`fast`, or `immediate` for a crash-like stop).
    pub fn stop(&mut self, mode: &str) {
        let status = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl stop -m {mode}: {status}");
        self.running = false;
    }

    /// Starts the stopped cluster again, on the same port.
    pub fn restart(&mut self) {
        if let Err(e) = self.pg_ctl_start() {
            panic!("the test cluster does not restart: {e}");
        }
    }

    /// Kills every client connection to the cluster (`pg_terminate_backend`), as a pooler
    /// restart or a network cut would; the number killed.
    pub fn terminate_backends(&self) -> u64 {
        self.query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .ok()
        .and_then(|rows| rows.trim().parse().ok())
        .unwrap_or(0)
    }

    /// Runs `sql` with psql; the rows, unaligned, one a line, `|` between columns.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        let psql = self.bin.join("psql");
        let output = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-X",
                "-A",
                "-t",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql does not run: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .tool("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl PgCluster {
    /// [`start`](Self::start), or, where PostgreSQL is not available, [`skip`](crate::skip) the
    /// test `what` (a failure under `CI=true`) and `None`.
    pub fn start_or_skip(what: &str) -> Option<Self> {
        or_skip(
            Self::start(),
            what,
            &format!(
                "install PostgreSQL's server package (Debian: postgresql), or set {PG_BIN_VAR} \
                 to the directory of its initdb, pg_ctl and psql; as root also runuser (Debian: \
                 util-linux)"
            ),
        )
    }
}

/// What the audit tables hold now: records by `raw.cf_ray_id` (gap records apart), and the gap
/// records' total of lost records.
#[derive(Debug, Default)]
pub struct StoredRecords {
    /// Records (gap records apart) by `raw.cf_ray_id`: how many of each.
    pub by_ray: HashMap<String, u64>,
    /// Gap records: each says that records were lost.
    pub gap_records: u64,
    /// The gap records' total of lost records.
    pub lost_in_gaps: u64,
}

impl StoredRecords {
    /// Reads the audit tables of `cluster`; `Err` is psql's complaint.
    pub fn read(cluster: &PgCluster) -> Result<Self, String> {
        let mut stored = Self::default();
        let rows = cluster.query(
            "SELECT raw_ray_id, count(*) FROM audit_logs WHERE action_type <> 'gap' GROUP BY 1",
        )?;
        for line in rows.lines().filter(|l| !l.is_empty()) {
            let (ray, n) = line.rsplit_once('|').ok_or("bad psql row")?;
            stored
                .by_ray
                .insert(ray.to_owned(), n.parse().map_err(|_| "bad count")?);
        }
        let gaps = cluster.query(
            "SELECT count(*), coalesce(sum((record::json #>> '{resource,request,lost}')::int8), 0) \
             FROM audit_logs WHERE action_type = 'gap'",
        )?;
        let (n, lost) = gaps.trim().split_once('|').ok_or("bad psql row")?;
        stored.gap_records = n.parse().map_err(|_| "bad count")?;
        stored.lost_in_gaps = lost.parse().map_err(|_| "bad sum")?;
        Ok(stored)
    }

    /// Records stored (gap records apart).
    pub fn total(&self) -> u64 {
        self.by_ray.values().sum()
    }
}

/// Polls the audit tables until every ray of `rays` is stored, or until `patience` passes
/// with nothing new arriving (the pipeline caught up, or gave up). The last read.
pub async fn wait_for_catch_up(
    cluster: &PgCluster,
    rays: &[String],
    patience: Duration,
    limit: Duration,
) -> StoredRecords {
    let started = Instant::now();
    let mut last_total = u64::MAX;
    let mut last_change = Instant::now();
    loop {
        let stored = match StoredRecords::read(cluster) {
            Ok(stored) => stored,
            Err(e) => panic!("cannot read the audit tables: {e}"),
        };
        if rays.iter().all(|r| stored.by_ray.contains_key(r)) {
            return stored;
        }
        let total = stored.total() + stored.gap_records;
        if total != last_total {
            last_total = total;
            last_change = Instant::now();
        }
        if last_change.elapsed() > patience || started.elapsed() > limit {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

//! Helpers for the fault tests (`faults.rs`): a private PostgreSQL cluster on a free port, a
//! TCP proxy that can delay or cut the way to it, the real `demo-app` binary as a child
//! process, a bounded load generator, and direct reads of the audit tables.
//!
//! Kept local to the fault tests on purpose: the shared helpers in `tests/src/lib.rs` were
//! being written at the same time, and these need process-level control (signals, `/proc`)
//! that the other end-to-end tests do not.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Seeded values of the demo (see demo-app/src/db.rs, `seed_ids`)
// ---------------------------------------------------------------------------------------------

/// `acc_demo`'s API token, given to the demo in `DEMO_ADMIN_TOKEN`.
pub(crate) const ADMIN_TOKEN: &str = "faults-admin-token-5b8e2f1a9c3d";
const OTHER_TOKEN: &str = "faults-other-token-3d7a6c0e4b1f";
const PASSWORD: &str = "faults-password-7f3c9e21";
pub(crate) const DEMO: &str = "acc_demo";
/// The seeded alerting policy of `acc_demo`.
pub(crate) const SEEDED_POLICY: &str = "0da2b59e-f118-439d-8097-bdfb215203c9";
/// The seeded zone `example.com` of `acc_demo`.
pub(crate) const EXAMPLE_ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

/// A duration from the environment variable `name` (whole or fractional seconds), else
/// `default`: the soak (`scripts/soak.sh`) scales the fault tests through these.
pub(crate) fn env_secs(name: &str, default: Duration) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map_or(default, Duration::from_secs_f64)
}

/// A number from the environment variable `name`, else `default`.
pub(crate) fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(default)
}

pub(crate) fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

// ---------------------------------------------------------------------------------------------
// A private PostgreSQL cluster
// ---------------------------------------------------------------------------------------------

/// The directory of the newest installed PostgreSQL's binaries, if any.
fn pg_bin_dir() -> Option<PathBuf> {
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
pub(crate) struct PgCluster {
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
    pub(crate) fn start() -> Result<Self, String> {
        let bin = pg_bin_dir().ok_or("no PostgreSQL under /usr/lib/postgresql/*/bin")?;
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
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `pg_ctl stop -m <mode>` (`fast`, or `immediate` for a crash-like stop).
    pub(crate) fn stop(&mut self, mode: &str) {
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
    pub(crate) fn restart(&mut self) {
        if let Err(e) = self.pg_ctl_start() {
            panic!("the test cluster does not restart: {e}");
        }
    }

    /// Kills every client connection to the cluster (`pg_terminate_backend`), as a pooler
    /// restart or a network cut would; the number killed.
    pub(crate) fn terminate_backends(&self) -> u64 {
        self.query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .ok()
        .and_then(|rows| rows.trim().parse().ok())
        .unwrap_or(0)
    }

    /// Runs `sql` with psql; the rows, unaligned, one a line, `|` between columns.
    pub(crate) fn query(&self, sql: &str) -> Result<String, String> {
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

/// Starts a private cluster, or prints why the test is skipped and returns `None`.
pub(crate) fn cluster_or_skip(test: &str) -> Option<PgCluster> {
    match PgCluster::start() {
        Ok(cluster) => Some(cluster),
        Err(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The audit tables, read directly
// ---------------------------------------------------------------------------------------------

/// What the audit tables hold now: records by `raw.ray_id` (gap records apart), and the gap
/// records' total of lost records.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    pub(crate) by_ray: HashMap<String, u64>,
    pub(crate) gap_records: u64,
    pub(crate) lost_in_gaps: u64,
}

impl Stored {
    pub(crate) fn read(cluster: &PgCluster) -> Result<Self, String> {
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

    pub(crate) fn total(&self) -> u64 {
        self.by_ray.values().sum()
    }
}

/// Polls the audit tables until every ray of `rays` is stored, or until `patience` passes
/// with nothing new arriving (the pipeline caught up, or gave up). The last read.
pub(crate) async fn wait_for_catch_up(
    cluster: &PgCluster,
    rays: &[String],
    patience: Duration,
    limit: Duration,
) -> Stored {
    let started = Instant::now();
    let mut last_total = u64::MAX;
    let mut last_change = Instant::now();
    loop {
        let stored = match Stored::read(cluster) {
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

/// Segment files (complete or being written) in a spool directory.
pub(crate) fn spool_segments(spool: &Path) -> usize {
    std::fs::read_dir(spool).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".seg"))
            .count()
    })
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy in front of PostgreSQL
// ---------------------------------------------------------------------------------------------

struct ProxyState {
    upstream: SocketAddr,
    delay_us: AtomicU64,
    reject: AtomicBool,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
    /// While on, a connection that sends a statement naming an audit table (`audit_`) is
    /// cut: the audit store's connections fail, the app's own keep working.
    reject_audit: AtomicBool,
    /// Bumped to cut the open connections that have named an audit table.
    cut_audit: watch::Sender<u64>,
    /// Connections cut because they named an audit table while `reject_audit` was on.
    audit_cuts: AtomicU64,
}

/// A loopback TCP proxy: passes bytes both ways, each chunk delayed by a settable latency
/// (without serializing the delays), or refuses service (accepts and closes at once, and
/// cuts open connections) like a dead database behind a connection pooler.
pub(crate) struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let (cut, _) = watch::channel(0);
        let (cut_audit, _) = watch::channel(0);
        let state = Arc::new(ProxyState {
            upstream,
            delay_us: AtomicU64::new(0),
            reject: AtomicBool::new(false),
            cut,
            reject_audit: AtomicBool::new(false),
            cut_audit,
            audit_cuts: AtomicU64::new(0),
        });
        let accept_state = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if accept_state.reject.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let state = Arc::clone(&accept_state);
                tokio::spawn(connection(client, state));
            }
        });
        Self {
            port,
            state,
            accept,
        }
    }

    /// `postgres://postgres@127.0.0.1:<proxy port>/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Every chunk, either way, is forwarded `delay` after it was read.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.state.delay_us.store(
            u64::try_from(delay.as_micros()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
    }

    /// While on: new connections are closed at once and open ones are cut.
    pub(crate) fn set_reject(&self, on: bool) {
        self.state.reject.store(on, Ordering::Release);
        if on {
            self.state.cut.send_modify(|n| *n += 1);
        }
    }
}

impl Proxy {
    /// While on: the audit store's connections (those that name an `audit_` table) are cut,
    /// open ones at once and new ones at their first audit statement; the app's own queries
    /// pass. The audit database is down, the app's database is not.
    pub(crate) fn set_reject_audit(&self, on: bool) {
        self.state.reject_audit.store(on, Ordering::Release);
        if on {
            self.state.cut_audit.send_modify(|n| *n += 1);
        }
    }

    /// Connections cut so far because they named an audit table while that was refused.
    pub(crate) fn audit_cuts(&self) -> u64 {
        self.state.audit_cuts.load(Ordering::Acquire)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.cut.send_modify(|n| *n += 1);
    }
}

async fn connection(client: TcpStream, state: Arc<ProxyState>) {
    let mut cut = state.cut.subscribe();
    let mut cut_audit = state.cut_audit.subscribe();
    let Ok(server) = TcpStream::connect(state.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Set once this connection has sent a statement naming an audit table.
    let audit = Arc::new(AtomicBool::new(false));
    let (refused_tx, mut refused) = watch::channel(false);
    let both = async {
        tokio::join!(
            pump(
                client_read,
                server_write,
                Arc::clone(&state),
                Some((Arc::clone(&audit), refused_tx))
            ),
            pump(server_read, client_write, Arc::clone(&state), None),
        )
    };
    let audit_cut = async {
        loop {
            if cut_audit.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if audit.load(Ordering::Acquire) {
                return;
            }
        }
    };
    tokio::select! {
        _ = both => {}
        _ = cut.changed() => {}
        () = audit_cut => {}
        _ = refused.wait_for(|r| *r) => {}
    }
}

/// Whether `chunk` names an audit table (the SQL text of a Parse or Query message).
fn names_audit_table(chunk: &[u8]) -> bool {
    chunk.windows(6).any(|w| w == b"audit_")
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    state: Arc<ProxyState>,
    // For the client-to-server direction: the connection's audit flag, and where to say
    // that it must be cut.
    watch_audit: Option<(Arc<AtomicBool>, watch::Sender<bool>)>,
) {
    let (tx, mut rx) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some((audit, refuse)) = &watch_audit
                && names_audit_table(&buf[..n])
            {
                audit.store(true, Ordering::Release);
                if state.reject_audit.load(Ordering::Acquire) {
                    state.audit_cuts.fetch_add(1, Ordering::AcqRel);
                    let _ = refuse.send(true);
                    break;
                }
            }
            let delay = Duration::from_micros(state.delay_us.load(Ordering::Acquire));
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

// ---------------------------------------------------------------------------------------------
// The demo binary
// ---------------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// The `demo-app` binary, built once per test process by `cargo build -p demo-app`.
pub(crate) fn demo_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "-p", "demo-app", "--bin", "demo-app"])
            .arg("--message-format=json-render-diagnostics")
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .current_dir(&root)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(
            output.status.success(),
            "cargo build -p demo-app: {}",
            output.status
        );
        let path = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "demo-app")
            .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
            .next_back()
            .expect("cargo names the demo-app executable");
        assert!(path.is_file(), "no demo-app binary at {}", path.display());
        path
    })
}

/// Whether the demo binary has a command-line flag (from its `--help`).
pub(crate) fn demo_has_flag(flag: &str) -> bool {
    static HELP: OnceLock<String> = OnceLock::new();
    HELP.get_or_init(|| {
        let output = demo_command()
            .arg("--help")
            .output()
            .expect("demo-app --help runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    })
    .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
    .any(|word| word == flag)
}

/// A command for the binary with only the settings a test passes.
pub(crate) fn demo_command() -> Command {
    let mut command = Command::new(demo_binary());
    for name in [
        "DEMO_LISTEN",
        "DATABASE_URL",
        "DEMO_DATA_DIR",
        "DEMO_ADMIN_TOKEN",
        "DEMO_OTHER_TOKEN",
        "DEMO_PASSWORD",
        "DEMO_STRICT",
        "DEMO_SPOOL_BUDGET",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command
        .env("DEMO_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("DEMO_OTHER_TOKEN", OTHER_TOKEN)
        .env("DEMO_PASSWORD", PASSWORD)
        .stdin(Stdio::null());
    command
}

/// A running `demo-app`, killed (SIGKILL) if the test ends without stopping it.
pub(crate) struct Demo {
    child: Option<Child>,
    pub(crate) base: String,
    stderr: PathBuf,
}

impl Demo {
    /// Starts the binary on a free port with its data in `data_dir`, its database at
    /// `database_url` and `extra` arguments; waits until `/healthz` answers.
    pub(crate) async fn start(
        data_dir: &Path,
        logs_dir: &Path,
        database_url: &str,
        extra: &[&str],
    ) -> Self {
        std::fs::create_dir_all(logs_dir).expect("logs directory");
        let n = std::fs::read_dir(logs_dir).map_or(0, Iterator::count);
        let stdout = logs_dir.join(format!("stdout-{n}.txt"));
        let stderr = logs_dir.join(format!("stderr-{n}.txt"));
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let child = demo_command()
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(data_dir)
                .args(extra)
                .env("DATABASE_URL", database_url)
                .stdout(std::fs::File::create(&stdout).expect("stdout file"))
                .stderr(std::fs::File::create(&stderr).expect("stderr file"))
                .spawn()
                .expect("demo-app starts");
            let mut demo = Self {
                child: Some(child),
                base: format!("http://127.0.0.1:{port}"),
                stderr: stderr.clone(),
            };
            match demo.wait_healthy().await {
                Ok(()) => return demo,
                Err(e) => last_error = e,
            }
        }
        panic!("demo-app did not become healthy: {last_error}");
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Err(format!("exited with {status}; stderr: {}", self.stderr()));
            }
            if let Ok(reply) = client
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && reply.status() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("no answer from /healthz within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
    pub(crate) fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}: {status}");
    }

    /// SIGTERM, then waits (up to 60 s) for the exit.
    pub(crate) async fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(60), "SIGTERM").await
    }

    /// SIGKILL, and reaps the process.
    pub(crate) async fn kill(&mut self) -> ExitStatus {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10), "SIGKILL").await
    }

    async fn wait_exit(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "demo-app did not exit within {limit:?} of {what}; stderr: {}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last `n` lines of stderr, for failure messages.
    pub(crate) fn stderr_tail(&self, n: usize) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

/// What a load request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An authenticated audited write (`PUT` of the seeded policy, `POST` of a new one): the
    /// app's own handler and authentication use the database.
    Write,
    /// An audited `POST` without credentials, answered `401` by the demo without touching any
    /// database: its latency is the audit layer's alone.
    Anonymous,
}

/// One request of the load.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) kind: Kind,
    /// When it was sent, since the load started.
    pub(crate) sent: Duration,
    pub(crate) latency: Duration,
    /// The answer's status and `x-request-id`; `None` when no answer came (connection
    /// refused or cut, timeout).
    pub(crate) answer: Option<(u16, Option<String>)>,
    /// The name of the policy an authenticated `POST` asked to create (unique in the run).
    pub(crate) created: Option<String>,
}

/// How much load, by kind: workers and the total rate they aim at (requests/s).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoadSpec {
    pub(crate) writers: usize,
    pub(crate) write_rate: f64,
    pub(crate) anonymous: usize,
    pub(crate) anonymous_rate: f64,
}

impl LoadSpec {
    /// `total` requests/s: a quarter authenticated writes, the rest unauthenticated, with a
    /// worker for every 50 requests/s (each worker waits for its answer before the next).
    pub(crate) fn at_rate(total: f64) -> Self {
        let write_rate = (total / 4.0).max(1.0);
        let anonymous_rate = (total - write_rate).max(1.0);
        let workers = |rate: f64| ((rate / 50.0).ceil() as usize).max(1);
        Self {
            writers: workers(write_rate),
            write_rate,
            anonymous: workers(anonymous_rate),
            anonymous_rate,
        }
    }
}

/// A running load generator; [`stop`](Self::stop) it to get every sample.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Sample>>>,
    pub(crate) started: Instant,
}

fn policy_body(name: &str) -> Value {
    json!({
        "name": name,
        "description": "written by the fault tests",
        "enabled": true,
        "alert_type": "clickhouse_alert_fw_ent_anomaly",
        "filters": {"services": ["securitylevel", "ratelimit"], "zones": [EXAMPLE_ZONE]},
        "mechanisms": {"webhooks": [{"url": "https://hooks.example.com/services/T000/B000/XXXX"}]},
    })
}

impl Load {
    pub(crate) fn start(base: &str, spec: LoadSpec) -> Self {
        let client = reqwest::Client::builder()
            .user_agent("faults-load/1.0")
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        static LOADS: AtomicU64 = AtomicU64::new(0);
        let load = LOADS.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut tasks = Vec::new();
        let workers = [
            (Kind::Write, spec.writers, spec.write_rate),
            (Kind::Anonymous, spec.anonymous, spec.anonymous_rate),
        ];
        for (kind, count, rate) in workers {
            for worker in 0..count {
                let period = Duration::from_secs_f64(count as f64 / rate.max(0.001));
                tasks.push(tokio::spawn(worker_loop(
                    client.clone(),
                    base.to_owned(),
                    kind,
                    format!("{load}.{worker}"),
                    period,
                    Arc::clone(&stop),
                    started,
                )));
            }
        }
        Self {
            stop,
            tasks,
            started,
        }
    }

    /// Stops sending and waits for the requests in flight; every sample, by send time.
    pub(crate) async fn stop(self) -> Samples {
        self.stop.store(true, Ordering::Release);
        let mut samples = Vec::new();
        for task in self.tasks {
            samples.extend(task.await.expect("a load worker"));
        }
        samples.sort_by_key(|s| s.sent);
        Samples(samples)
    }
}

async fn worker_loop(
    client: reqwest::Client,
    base: String,
    kind: Kind,
    worker: String,
    period: Duration,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let policies = format!("{base}/accounts/{DEMO}/alerting/v3/policies");
    let seeded = format!("{policies}/{SEEDED_POLICY}");
    let mut n = 0u64;
    loop {
        ticks.tick().await;
        if stop.load(Ordering::Acquire) {
            return samples;
        }
        n += 1;
        let created =
            (kind == Kind::Write && n.is_multiple_of(2)).then(|| format!("load {worker}-{n}"));
        let request = match kind {
            Kind::Write if created.is_some() => client
                .post(&policies)
                .bearer_auth(ADMIN_TOKEN)
                .json(&policy_body(created.as_deref().unwrap_or_default())),
            Kind::Write => client
                .put(&seeded)
                .bearer_auth(ADMIN_TOKEN)
                .json(&policy_body(&format!("seeded, written by {worker}-{n}"))),
            Kind::Anonymous => client
                .post(&policies)
                .json(&policy_body(&format!("anonymous {worker}-{n}"))),
        };
        let sent = started.elapsed();
        let began = Instant::now();
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let ray = response
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                // The answer counts once its body is in.
                match response.bytes().await {
                    Ok(_) => Some((status, ray)),
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        samples.push(Sample {
            kind,
            sent,
            latency: began.elapsed(),
            answer,
            created,
        });
    }
}

/// Every request of a load, by send time.
#[derive(Debug)]
pub(crate) struct Samples(pub(crate) Vec<Sample>);

impl Samples {
    /// The `x-request-id` of every answered request (any status).
    pub(crate) fn answered_rays(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|s| s.answer.as_ref()?.1.clone())
            .collect()
    }

    /// Answers without an `x-request-id` (an audited route always sends one).
    pub(crate) fn answered_without_ray(&self) -> usize {
        self.0
            .iter()
            .filter(|s| matches!(s.answer, Some((_, None))))
            .count()
    }

    pub(crate) fn unanswered(&self) -> usize {
        self.0.iter().filter(|s| s.answer.is_none()).count()
    }

    /// Answered requests by status.
    pub(crate) fn by_status(&self) -> Vec<(u16, usize)> {
        let mut counts: HashMap<u16, usize> = HashMap::new();
        for s in &self.0 {
            if let Some((status, _)) = s.answer {
                *counts.entry(status).or_default() += 1;
            }
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_unstable();
        counts
    }

    /// Latency percentiles of the answered requests of `kind` sent in `[from, to)`.
    pub(crate) fn latency(&self, kind: Kind, from: Duration, to: Duration) -> Latency {
        let mut latencies: Vec<Duration> = self
            .0
            .iter()
            .filter(|s| s.kind == kind && s.answer.is_some() && s.sent >= from && s.sent < to)
            .map(|s| s.latency)
            .collect();
        latencies.sort_unstable();
        Latency::of(&latencies)
    }
}

/// Latency percentiles of a set of requests.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Latency {
    pub(crate) count: usize,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

impl Latency {
    fn of(sorted: &[Duration]) -> Self {
        if sorted.is_empty() {
            return Self::default();
        }
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Self {
            count: sorted.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: sorted[sorted.len() - 1],
        }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={:>5} p50={:>7.1?} p99={:>7.1?} max={:>7.1?}",
            self.count, self.p50, self.p99, self.max
        )
    }
}

/// How the answered rays of a load compare with the audit tables.
#[derive(Debug)]
pub(crate) struct Accounting {
    pub(crate) answered: usize,
    /// Answered and stored exactly once.
    pub(crate) once: usize,
    /// Answered and not stored.
    pub(crate) missing: Vec<String>,
    /// Answered and stored more than once: (ray, copies).
    pub(crate) duplicated: Vec<(String, u64)>,
    /// Stored records whose request got no answer (or is not from this load).
    pub(crate) stored_unanswered: u64,
}

impl Accounting {
    pub(crate) fn of(rays: &[String], stored: &Stored) -> Self {
        let mut once = 0;
        let mut missing = Vec::new();
        let mut duplicated = Vec::new();
        for ray in rays {
            match stored.by_ray.get(ray).copied().unwrap_or(0) {
                0 => missing.push(ray.clone()),
                1 => once += 1,
                n => duplicated.push((ray.clone(), n)),
            }
        }
        let answered: std::collections::HashSet<&String> = rays.iter().collect();
        let stored_unanswered = stored
            .by_ray
            .iter()
            .filter(|(ray, _)| !answered.contains(ray))
            .map(|(_, n)| *n)
            .sum();
        Self {
            answered: rays.len(),
            once,
            missing,
            duplicated,
            stored_unanswered,
        }
    }
}

impl std::fmt::Display for Accounting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "answered {}, stored exactly once {}, missing {}, duplicated {}, stored without an answer {}",
            self.answered,
            self.once,
            self.missing.len(),
            self.duplicated.len(),
            self.stored_unanswered
        )
    }
}

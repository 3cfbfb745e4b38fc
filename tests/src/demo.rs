//! The real `demo-app` binary: built once per test process, run on a free loopback port with
//! its data in a directory the test owns, stopped gracefully with SIGTERM (or killed with
//! SIGKILL) and killed if the test ends without stopping it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ports::free_port;
use crate::process::{Process, log_files};
use crate::seed::{ADMIN_TOKEN, OTHER_TOKEN, PASSWORD};

/// How long the demo may take to answer `/healthz` after it starts (migrations on a busy
/// PostgreSQL included).
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);
/// How long the demo may take to exit after SIGTERM (it flushes its audit pipeline first).
const EXITS_WITHIN: Duration = Duration::from_secs(60);

/// Every setting the demo reads from its environment: none reaches it unless a test passes it.
const SETTINGS: [&str; 18] = [
    "DEMO_LISTEN",
    "DATABASE_URL",
    "DEMO_DATA_DIR",
    "DEMO_ADMIN_TOKEN",
    "DEMO_OTHER_TOKEN",
    "DEMO_PASSWORD",
    "DEMO_CHAIN_SECRET",
    "DEMO_STRICT",
    "DEMO_SPOOL_BUDGET",
    "DEMO_BODY_READ_TIMEOUT_MS",
    "DEMO_BODY_BUDGET",
    "DEMO_FAILED_AUTH_RATE",
    "DEMO_FAILED_AUTH_WINDOW_MS",
    "DEMO_SWEEP_INTERVAL_MS",
    "DEMO_MAX_FAILED_DELIVERIES",
    "AUDIT_NATS_URL",
    "AUDIT_NATS_REPLICAS",
    "RUST_LOG",
];

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// The variable that names another `demo-app` binary to run instead of the workspace's, e.g.
/// one built from an older commit, to see that a test fails where the finding it guards
/// against is still there.
pub const DEMO_BIN_VAR: &str = "AUDIT_TEST_DEMO_BIN";

/// The `demo-app` binary: the one [`DEMO_BIN_VAR`] names, else the workspace's, built once per
/// test process by `cargo build -p demo-app`.
pub fn demo_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| match std::env::var_os(DEMO_BIN_VAR) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "{DEMO_BIN_VAR}={} is not a file: name a built demo-app binary, or unset it to \
                 build the workspace's",
                path.display()
            );
            path
        }
        _ => cargo_binary("demo-app", "demo-app", &[]),
    })
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// The binary `bin` of the workspace's package `package`, built with `features` by
/// `cargo build -p <package> --bin <bin>` (once per caller: each keeps it in a `OnceLock`).
pub(crate) fn cargo_binary(package: &str, bin: &str, features: &[&str]) -> PathBuf {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "-p", package, "--bin", bin]);
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    let output = command
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
        "cargo build -p {package} --bin {bin} failed: {}",
        output.status
    );
    // The executable cargo reports, wherever the target directory is; else the usual place.
    let reported = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back();
    let path = reported.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map_or_else(|| root.join("target"), |t| root.join(t));
        target
            .join("debug")
            .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX))
    });
    assert!(path.is_file(), "no {bin} binary at {}", path.display());
    path
}

/// A command for the binary with a clean environment for its settings: only what a test
/// passes reaches it.
pub fn demo_command() -> Command {
    let mut command = Command::new(demo_binary());
    for name in SETTINGS {
        command.env_remove(name);
    }
    command.stdin(Stdio::null());
    command
}

/// Whether the demo binary has the command-line flag `flag` (read from its `--help`).
pub fn demo_has_flag(flag: &str) -> bool {
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

/// Waits for `child`, which must exit by itself within `limit` (a refused configuration, a
/// failed start): its exit status and output. Kills it and fails, naming `what`, if it does
/// not.
pub fn exits_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    while child
        .try_wait()
        .expect("the child's status can be read")
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("demo-app did not exit within {limit:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .expect("the child's output is read")
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB; `None` once the process
/// is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// The running process
// ---------------------------------------------------------------------------------------------

/// How [`Demo::start_with`] runs the binary, beyond its port, data directory and canary
/// secrets. Defaults to SQLite in the data directory and no other flag.
#[derive(Clone, Debug, Default)]
pub struct DemoConfig {
    database_url: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl DemoConfig {
    /// The app's and the audit store's database (`DATABASE_URL`). Defaults to SQLite files
    /// in the data directory.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// One more command-line argument (`--strict`, `--spool-budget`, ...). Defaults to none.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// One more environment variable for the process (not one of the demo's settings, which
    /// have their flags: e.g. `GLIBC_TUNABLES` for a measurement). Defaults to none.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

/// A running `demo-app`, killed (SIGKILL) if the test ends without stopping it.
#[derive(Debug)]
pub struct Demo {
    process: Process,
    addr: SocketAddr,
    base: String,
}

impl Demo {
    /// Starts the binary with its defaults (SQLite): see [`start_with`](Self::start_with).
    pub async fn start(data_dir: &Path, logs_dir: &Path) -> Self {
        Self::start_with(data_dir, logs_dir, &DemoConfig::default()).await
    }

    /// Starts the binary on a free port with its data in `data_dir`, its output in `logs_dir`,
    /// the canary secrets ([`ADMIN_TOKEN`], [`OTHER_TOKEN`], [`PASSWORD`]) in its environment
    /// and `config`'s database and flags, and waits until `/healthz` answers.
    pub async fn start_with(data_dir: &Path, logs_dir: &Path, config: &DemoConfig) -> Self {
        let (stdout, stderr) = log_files(logs_dir);
        let mut last_error = String::new();
        // The port is free when picked; if another process takes it first, try another.
        for _ in 0..3 {
            let port = free_port();
            let mut command = demo_command();
            command
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(data_dir)
                .args(&config.args)
                .env("DEMO_ADMIN_TOKEN", ADMIN_TOKEN)
                .env("DEMO_OTHER_TOKEN", OTHER_TOKEN)
                .env("DEMO_PASSWORD", PASSWORD);
            if let Some(url) = &config.database_url {
                command.env("DATABASE_URL", url);
            }
            command.envs(config.env.iter().map(|(k, v)| (k, v)));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut demo = Self {
                process: Process::spawn("demo-app", &mut command, &stdout, &stderr),
                addr,
                base: format!("http://{addr}"),
            };
            match demo.wait_healthy().await {
                Ok(()) => return demo,
                Err(e) => last_error = e,
            }
        }
        panic!("demo-app did not become healthy: {last_error}");
    }

    /// The address it listens on, for clients that speak raw TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Its process id; panics once it has been stopped.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        status_kib(self.pid(), field)
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            if let Some(status) = self.process.exited() {
                self.process.release();
                // The banner (stdout) says how far it got; stderr has its log and any panic.
                return Err(format!(
                    "exited with {status}; stdout: {}\nstderr: {}",
                    self.stdout(),
                    self.stderr()
                ));
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
                return Err(format!("no answer from /healthz within {HEALTHY_WITHIN:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asserts that the process still runs and answers `GET /healthz` with `200` within 5 s;
    /// `after` says what it just went through, for the failure message.
    pub async fn assert_alive(&mut self, after: &str) {
        if let Some(status) = self.process.exited() {
            self.process.release();
            panic!(
                "demo-app exited with {status} after {after}; stderr: {}",
                self.stderr()
            );
        }
        let reply = reqwest::Client::new()
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match reply {
            Ok(reply) if reply.status() == 200 => {}
            Ok(reply) => panic!("/healthz answers {} after {after}", reply.status()),
            Err(e) => panic!("/healthz does not answer after {after}: {e}"),
        }
    }

    /// Stops the binary with SIGTERM (graceful: in-flight requests finish and the audit
    /// pipeline is flushed) and waits for it to exit.
    pub async fn stop(&mut self) -> ExitStatus {
        self.process.stop(EXITS_WITHIN).await
    }

    /// Kills the binary with SIGKILL (nothing is flushed) and reaps it.
    pub async fn kill(&mut self) -> ExitStatus {
        self.process.kill().await
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.process.stdout()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// The last `n` lines of its stderr, for failure messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        self.process.stderr_tail(n)
    }
}

//! The real `audit-ingest` binary (audit-store, feature `ingest`): built once per test
//! process, run with its settings in its environment and its output in a directory the test
//! owns, stopped gracefully with SIGTERM (it finishes and acknowledges its batch) or killed
//! with SIGKILL, and killed if the test ends without stopping it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::demo::cargo_binary;
use crate::process::{Process, log_files};

/// The variable that names another `audit-ingest` binary to run instead of the workspace's.
pub const INGEST_BIN_VAR: &str = "AUDIT_TEST_INGEST_BIN";

/// How long an ingestor may take to exit after SIGTERM (it commits and acknowledges the batch
/// in hand first).
const EXITS_WITHIN: Duration = Duration::from_secs(60);

/// How long a start may take before the process is taken to run (it connects to NATS and the
/// database, and migrates, before it consumes: a start that fails exits within this).
const SETTLES_WITHIN: Duration = Duration::from_millis(500);

/// Every setting the binary reads from its environment: none reaches it unless a test passes
/// it.
const SETTINGS: [&str; 22] = [
    "AUDIT_NATS_URL",
    "DATABASE_URL",
    "AUDIT_CHAIN_SECRET",
    "AUDIT_UNCHAINED",
    "AUDIT_STREAM",
    "AUDIT_SUBJECT_PREFIX",
    "AUDIT_CONSUMER",
    "AUDIT_DEAD_LETTER_SUBJECT",
    "AUDIT_CREATE_STREAM",
    "AUDIT_NATS_REPLICAS",
    "AUDIT_STREAM_MAX_BYTES",
    "AUDIT_INGEST_BATCH_SIZE",
    "AUDIT_INGEST_IN_FLIGHT",
    "AUDIT_INGEST_WRITERS",
    "AUDIT_ACK_WAIT",
    "AUDIT_MAX_ACK_PENDING",
    "AUDIT_MAX_RECORD_BYTES",
    "AUDIT_SHUTDOWN_TIMEOUT",
    "AUDIT_CHECKPOINTS",
    "AUDIT_TABLE_PREFIX",
    "AUDIT_SCHEMA",
    "RUST_LOG",
];

/// The `audit-ingest` binary: the one [`INGEST_BIN_VAR`] names, else the workspace's, built
/// once per test process by `cargo build -p audit-store --features ingest --bin audit-ingest`.
pub fn ingest_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| match std::env::var_os(INGEST_BIN_VAR) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "{INGEST_BIN_VAR}={} is not a file: name a built audit-ingest binary, or unset \
                 it to build the workspace's",
                path.display()
            );
            path
        }
        _ => cargo_binary("audit-store", "audit-ingest", &["ingest"]),
    })
}

/// How [`Ingestor::start`] runs the binary: its settings, each passed as its environment
/// variable, and extra arguments.
#[derive(Clone, Debug, Default)]
pub struct IngestConfig {
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl IngestConfig {
    /// The NATS seed URLs (`AUDIT_NATS_URL`, comma-separated) and the database
    /// (`DATABASE_URL`): the two settings every ingestor needs.
    pub fn new(nats_urls: impl Into<String>, database_url: impl Into<String>) -> Self {
        Self::default()
            .env("AUDIT_NATS_URL", nats_urls)
            .env("DATABASE_URL", database_url)
    }

    /// One more environment variable (`AUDIT_CHAIN_SECRET`, `AUDIT_STREAM`, `RUST_LOG`, ...).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// One more command-line argument (`--create-stream`, `--replicas`, ...).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// A running `audit-ingest`, killed (SIGKILL) if the test ends without stopping it.
#[derive(Debug)]
pub struct Ingestor {
    process: Process,
}

impl Ingestor {
    /// Starts the binary with `config`, its output in `logs_dir` (a file pair per start), and
    /// waits `SETTLES_WITHIN`: a start that fails (a bad setting, NATS or the database
    /// refusing) panics with what it printed.
    pub async fn start(logs_dir: &Path, config: &IngestConfig) -> Self {
        let (stdout, stderr) = log_files(logs_dir);
        let mut command = Command::new(ingest_binary());
        for name in SETTINGS {
            command.env_remove(name);
        }
        command
            .args(&config.args)
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        let mut ingestor = Self {
            process: Process::spawn("audit-ingest", &mut command, &stdout, &stderr),
        };
        tokio::time::sleep(SETTLES_WITHIN).await;
        if let Some(status) = ingestor.exited() {
            panic!(
                "audit-ingest exited at start with {status}; stdout: {}\nstderr: {}",
                ingestor.stdout(),
                ingestor.stderr()
            );
        }
        ingestor
    }

    /// Its process id; panics once it has been stopped.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether the process has exited, and how (`None` while it runs).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.exited()
    }

    /// Asserts that the process still runs; `after` says what it just went through.
    #[track_caller]
    pub fn assert_alive(&mut self, after: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "audit-ingest exited with {status} after {after}; stderr: {}",
                self.stderr_tail(30)
            );
        }
    }

    /// Stops it with SIGTERM (graceful: the batch in hand is committed and acknowledged) and
    /// waits for it to exit.
    pub async fn stop(&mut self) -> ExitStatus {
        self.process.stop(EXITS_WITHIN).await
    }

    /// Kills it with SIGKILL (its unacknowledged messages are redelivered to another
    /// ingestor once their acknowledgement wait passes) and reaps it.
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

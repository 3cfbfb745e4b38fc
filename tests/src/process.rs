//! A binary the tests run as a child process (`demo-app`, `audit-ingest`): its output in a file
//! pair of a directory the test owns, stopped gracefully with SIGTERM or killed with SIGKILL,
//! and killed if the test ends without stopping it. One implementation for the harnesses of
//! [`demo`](crate::demo) and [`ingest`](crate::ingest).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long a process may take to exit after SIGKILL.
const KILLED_WITHIN: Duration = Duration::from_secs(10);

/// Sends the signal `name` (`TERM`, `KILL`, `STOP`, `CONT`) to the process `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

/// The stdout and stderr files for the next start of a process in `logs_dir` (created if
/// need be): each start gets its own pair, so that a restart keeps the first run's.
pub(crate) fn log_files(logs_dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(logs_dir).expect("the logs directory can be created");
    let n = std::fs::read_dir(logs_dir)
        .expect("the logs directory can be read")
        .count();
    (
        logs_dir.join(format!("stdout-{n}.txt")),
        logs_dir.join(format!("stderr-{n}.txt")),
    )
}

/// A running child process, `name` in failure messages, killed (SIGKILL) if the test ends
/// without stopping it.
#[derive(Debug)]
pub(crate) struct Process {
    name: &'static str,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    /// Spawns `command` with its stdout and stderr written to the files `stdout` and `stderr`
    /// (created, or emptied).
    pub(crate) fn spawn(
        name: &'static str,
        command: &mut Command,
        stdout: &Path,
        stderr: &Path,
    ) -> Self {
        command
            .stdout(std::fs::File::create(stdout).expect("the stdout file can be created"))
            .stderr(std::fs::File::create(stderr).expect("the stderr file can be created"));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e:?}"));
        Self {
            name,
            child: Some(child),
            stdout: stdout.to_path_buf(),
            stderr: stderr.to_path_buf(),
        }
    }

    /// Its process id; panics once it has been stopped.
    pub(crate) fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is running", self.name))
            .id()
    }

    /// Whether the process has exited, and how (`None` while it runs).
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("the child's status can be read")
    }

    /// Lets go of a process that has [`exited`](Self::exited): [`pid`](Self::pid) panics from
    /// now on.
    pub(crate) fn release(&mut self) {
        self.child = None;
    }

    /// Stops it with SIGTERM and waits up to `limit` for it to exit.
    pub(crate) async fn stop(&mut self, limit: Duration) -> ExitStatus {
        signal(self.pid(), "TERM");
        self.wait_exit(limit, "SIGTERM").await
    }

    /// Kills it with SIGKILL and reaps it.
    pub(crate) async fn kill(&mut self) -> ExitStatus {
        signal(self.pid(), "KILL");
        self.wait_exit(KILLED_WITHIN, "SIGKILL").await
    }

    async fn wait_exit(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let name = self.name;
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{name} is running"));
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("the child's status can be read") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{name} did not exit within {limit:?} of {what}; stderr: {}",
                    self.stderr_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it printed on stdout so far.
    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last `n` lines of its stderr, for failure messages.
    pub(crate) fn stderr_tail(&self, n: usize) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

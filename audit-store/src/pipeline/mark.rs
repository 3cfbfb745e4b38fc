//! The running mark: a file in the spool directory that says a pipeline is running and how many
//! records it holds in memory. Found at start, it means the last process was killed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Context;
use super::Destination;

/// The file in the spool directory that says a pipeline is running, and how many records it
/// holds in memory: found at start, it means the last process stopped without shutting down.
pub(super) const RUNNING_MARK: &str = "RUNNING";
/// How often the running mark is rewritten.
pub(super) const MARK_INTERVAL: Duration = Duration::from_millis(100);

/// What the running mark holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct RunningMark {
    /// When it was written, ms since the Unix epoch.
    pub(super) noted_ms: i64,
    /// Records accepted and not yet stored, spooled or counted as dropped.
    pub(super) in_memory: u64,
    /// Records accepted during the last interval: about how many more may have arrived
    /// before the next mark would have been written.
    pub(super) arrivals: u64,
}

impl RunningMark {
    /// Reads a mark left by a process that did not shut down, and removes it: `None` when
    /// there is none, `Some(None)` when there is one that does not read as a mark (cut short,
    /// or overwritten to hide what the last process held). It is written whole and renamed
    /// into place, so a mark that is there always means an unclean stop.
    pub(super) fn take(dir: &std::path::Path) -> Option<Option<Self>> {
        let path = dir.join(RUNNING_MARK);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(_) => Vec::new(),
        };
        let _ = std::fs::remove_file(&path);
        Some(serde_json::from_slice(&text).ok())
    }
}

impl<S: Destination> Context<S> {
    /// Rewrites the running mark every [`MARK_INTERVAL`] until stopped, then removes it: a
    /// mark found at the next start means this process was killed.
    pub(super) async fn mark_running(
        self: Arc<Self>,
        dir: PathBuf,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let path = dir.join(RUNNING_MARK);
        let temp = dir.join(format!("{RUNNING_MARK}.tmp"));
        let mut accepted = self.shared.counters.enqueued.get();
        loop {
            let now_accepted = self.shared.counters.enqueued.get();
            let mark = RunningMark {
                noted_ms: crate::time::now_ms(),
                in_memory: self.shared.in_memory.load(Ordering::Relaxed),
                arrivals: now_accepted.saturating_sub(accepted),
            };
            accepted = now_accepted;
            if let Ok(text) = serde_json::to_vec(&mark) {
                let (temp, path) = (temp.clone(), path.clone());
                let _ = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    use std::io::Write as _;
                    crate::private_files::create(&temp)?.write_all(&text)?;
                    std::fs::rename(&temp, &path)
                })
                .await;
            }
            tokio::select! {
                () = tokio::time::sleep(MARK_INTERVAL) => {}
                _ = stop.changed() => break,
            }
        }
        let _ = tokio::fs::remove_file(&path).await;
    }
}

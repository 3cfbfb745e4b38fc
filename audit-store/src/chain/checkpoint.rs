//! Signed checkpoints: signing and checking a statement about a chain, and the sinks that keep
//! checkpoints outside the database.

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;

use audit_layer::BoxError;

use super::{ChainKeys, Verifier};
use crate::model::{ChainHead, Checkpoint, CheckpointKind};

impl Checkpoint {
    /// Makes and signs a statement.
    pub(crate) fn sign(
        keys: &ChainKeys,
        kind: CheckpointKind,
        account_id: String,
        seq: i64,
        head: Vec<u8>,
        time_ms: i64,
    ) -> Self {
        let mut checkpoint = Self {
            account_id,
            seq,
            head,
            time_ms,
            kind,
            key_id: keys.public_key().key_id(),
            signature: Vec::new(),
        };
        checkpoint.signature = keys.sign(&checkpoint.message()).to_vec();
        checkpoint
    }

    /// Signs a checkpoint of `head` (its chain, sequence number and hash) at `time_ms`.
    pub(crate) fn of_head(keys: &ChainKeys, head: ChainHead, time_ms: i64) -> Self {
        Self::sign(
            keys,
            CheckpointKind::Checkpoint,
            head.chain,
            head.seq,
            head.hash,
            time_ms,
        )
    }

    /// The bytes the signature covers.
    pub(crate) fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(96 + self.account_id.len() + self.head.len());
        m.extend_from_slice(b"audit-checkpoint/v1\0");
        m.extend_from_slice(self.kind.as_str().as_bytes());
        m.push(0);
        m.extend_from_slice(&(self.account_id.len() as u64).to_be_bytes());
        m.extend_from_slice(self.account_id.as_bytes());
        m.extend_from_slice(&self.seq.to_be_bytes());
        m.extend_from_slice(&self.time_ms.to_be_bytes());
        m.extend_from_slice(&(self.head.len() as u64).to_be_bytes());
        m.extend_from_slice(&self.head);
        m
    }

    /// Whether a key `verifier` trusts signed exactly this statement.
    pub fn is_signed_for(&self, verifier: &Verifier) -> bool {
        verifier.signed(&self.key_id, &self.message(), &self.signature)
    }
}

/// The future of [`CheckpointSink::publish`].
pub type Publish<'a> = Pin<Box<dyn Future<Output = std::result::Result<(), BoxError>> + Send + 'a>>;

/// Where checkpoints are kept outside the database: an object store with retention lock, a
/// transparency log, another team's system, a file on another machine.
///
/// The pipeline calls it after every round of checkpoints; a failure is logged and the
/// checkpoints stay in the database, so nothing waits on the sink.
pub trait CheckpointSink: Send + Sync + 'static {
    /// Keeps `checkpoints`.
    fn publish<'a>(&'a self, checkpoints: &'a [Checkpoint]) -> Publish<'a>;
}

/// A [`CheckpointSink`] that appends each checkpoint to a file as one JSON line and syncs it:
/// the format `audit-verify --checkpoints` reads.
///
/// ```
/// use audit_store::chain::JsonLinesCheckpoints;
///
/// let sink = JsonLinesCheckpoints::new(std::env::temp_dir().join("audit-checkpoints.jsonl"));
/// # let _ = sink;
/// ```
#[derive(Clone, Debug)]
pub struct JsonLinesCheckpoints {
    path: PathBuf,
}

impl JsonLinesCheckpoints {
    /// Appends to `path`, creating it if missing: readable by its owner only (mode 600,
    /// whatever the umask), in a directory created accessible by its owner only (700).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Reads every checkpoint a file of this format holds.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, or a line is not a checkpoint (the error names the line).
    pub fn read(path: &std::path::Path) -> std::result::Result<Vec<Checkpoint>, BoxError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read checkpoints from {}: {e}", path.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| {
                    format!("{}:{}: not a checkpoint: {e}", path.display(), i + 1).into()
                })
            })
            .collect()
    }
}

impl CheckpointSink for JsonLinesCheckpoints {
    fn publish<'a>(&'a self, checkpoints: &'a [Checkpoint]) -> Publish<'a> {
        let path = self.path.clone();
        let mut text = String::new();
        for checkpoint in checkpoints {
            if let Ok(line) = serde_json::to_string(checkpoint) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        Box::pin(async move {
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    crate::private_files::create_dir_all(dir)?;
                }
                let mut file = crate::private_files::options()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                file.write_all(text.as_bytes())?;
                file.sync_data()
            })
            .await
            .map_err(|e| BoxError::from(e.to_string()))??;
            Ok(())
        })
    }
}

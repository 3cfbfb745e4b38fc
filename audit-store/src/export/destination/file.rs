//! A local file for log shippers to tail (Filebeat, Vector, Fluent Bit), rotated by size.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{DeliveryError, Destination};
use crate::export::ExportConfigError;
use crate::export::batch::EncodedBatch;
use crate::private_files;

/// The default of [`FileDestination::max_bytes`].
pub const DEFAULT_FILE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The default of [`FileDestination::keep`].
pub const DEFAULT_FILE_KEEP: u32 = 10;

/// Appends each batch's lines to a file, synced to disk before the batch counts as
/// delivered. When a batch would take the file past [`max_bytes`](Self::max_bytes), the file
/// is rotated first the way logrotate does: `audit.ndjson` becomes `audit.ndjson.1`, `.1`
/// becomes `.2`, ..., the oldest beyond [`keep`](Self::keep) is deleted, and a new file is
/// started. Shippers that follow renames (all the common ones) read every line once. The
/// files are created readable by the owner only (0600), in a directory created 0700.
///
/// ```
/// use audit_store::export::FileDestination;
///
/// let file = FileDestination::new("/var/log/audit/export.ndjson")?
///     .max_bytes(16 << 20)
///     .keep(5);
/// # Ok::<(), audit_store::export::ExportConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct FileDestination {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// Deliveries write one at a time.
    writing: Arc<Mutex<()>>,
}

impl FileDestination {
    /// Appends to the file at `path`, rotating it at 64 MiB and keeping 10 rotated files.
    ///
    /// # Errors
    ///
    /// When `path` names no file (empty, or a directory such as `/`).
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, ExportConfigError> {
        let path = path.into();
        if path.file_name().is_none() {
            return Err(ExportConfigError::new(format!(
                "invalid export file {}: expected a file's path",
                path.display()
            )));
        }
        Ok(Self {
            path,
            max_bytes: DEFAULT_FILE_MAX_BYTES,
            keep: DEFAULT_FILE_KEEP,
            writing: Arc::default(),
        })
    }

    /// The size at which the file is rotated (a batch larger than this still goes whole into
    /// a file of its own). Defaults to 64 MiB.
    #[must_use]
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// How many rotated files are kept. Defaults to 10.
    #[must_use]
    pub fn keep(mut self, files: u32) -> Self {
        self.keep = files.max(1);
        self
    }

    /// The `n`th rotated file.
    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.rotated(self.keep)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..self.keep).rev() {
            match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.rotated(1))
    }

    fn append(&self, lines: &[u8]) -> std::io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            private_files::create_dir_all(parent)?;
        }
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size > 0 && size + lines.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let mut file = private_files::options()
            .append(true)
            .create(true)
            .open(&self.path)?;
        let before = file.metadata()?.len();
        let written = file.write_all(lines).and_then(|()| file.sync_data());
        if written.is_err() {
            // A batch half written (the disk filled) is cut off again, so that the retry
            // starts on a line of its own rather than after a broken one.
            let _ = file.set_len(before);
        }
        written
    }

    /// The active file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Destination for FileDestination {
    async fn deliver(&self, batch: &EncodedBatch) -> Result<(), DeliveryError> {
        let this = self.clone();
        let lines = batch.lines.clone().into_bytes();
        let path = self.path.display().to_string();
        tokio::task::spawn_blocking(move || this.append(&lines))
            .await
            .map_err(|e| DeliveryError::new(format!("writing the export file {path} failed: {e}")))?
            .map_err(|e| DeliveryError::new(format!("writing the export file {path} failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Format;

    fn batch(lines: &str) -> EncodedBatch {
        EncodedBatch {
            job: "j".into(),
            account_id: "a".into(),
            idempotency_key: "k".into(),
            first: (0, uuid::Uuid::nil()),
            last: (0, uuid::Uuid::nil()),
            records: lines.lines().count(),
            format: Format::Ndjson,
            lines: lines.into(),
            positions: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_file_rotates_at_its_size_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.ndjson");
        let file = FileDestination::new(&path).unwrap().max_bytes(20).keep(2);
        for i in 0..5 {
            file.deliver(&batch(&format!("{{\"n\":{i}}}\n{{\"n\":{i}}}\n")))
                .await
                .unwrap();
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(path.clone()), "{\"n\":4}\n{\"n\":4}\n");
        assert_eq!(read(file.rotated(1)), "{\"n\":3}\n{\"n\":3}\n");
        assert_eq!(read(file.rotated(2)), "{\"n\":2}\n{\"n\":2}\n");
        assert!(!file.rotated(3).exists(), "only two rotated files are kept");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn batches_below_the_size_share_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        let file = FileDestination::new(&path).unwrap();
        file.deliver(&batch("{}\n")).await.unwrap();
        file.deliver(&batch("{}\n")).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n{}\n");
        assert!(FileDestination::new("").is_err());
    }
}

//! SQLite database files for the benchmarks.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `path` with `suffix` appended (`audit.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = OsString::from(path.as_os_str());
    p.push(suffix);
    PathBuf::from(p)
}

/// Deletes the database at `path` and its WAL, shared-memory and journal files.
pub(crate) fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(with_suffix(path, suffix));
    }
}

/// The bytes the database at `path` takes: the file and its WAL.
pub(crate) fn bytes(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(with_suffix(path, s)).ok())
        .map(|m| m.len())
        .sum()
}

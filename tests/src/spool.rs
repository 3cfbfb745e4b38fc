//! The demo's spool directory (`<data dir>/spool`), seen from outside the process: where the
//! audit pipeline keeps records its database did not take.

use std::path::Path;

/// Complete segments (`<sequence>.seg`) in the spool directory `spool`: records waiting to
/// be replayed; 0 if it cannot be read.
///
/// A `<sequence>.seg.tmp` is a segment being written, or one whose write failed (its records
/// are dropped and counted in a gap record; the spool deletes it at its next open): it holds
/// nothing that will be replayed, so it is not counted.
pub fn spool_segments(spool: &Path) -> usize {
    segment_entries(spool).count()
}

/// The text of every complete segment in `spool` (JSON lines), to look records up in.
pub fn spool_text(spool: &Path) -> String {
    segment_entries(spool)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect()
}

/// The bytes of every file in `spool`.
pub fn spool_bytes(spool: &Path) -> u64 {
    std::fs::read_dir(spool).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

fn segment_entries(spool: &Path) -> impl Iterator<Item = std::fs::DirEntry> {
    std::fs::read_dir(spool)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
}

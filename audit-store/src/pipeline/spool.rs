//! The local disk spool: where records wait while the database is down or slow.
//!
//! When the pipeline cannot hand a batch to the store, it appends the batch here; when the
//! store is back it replays the spool oldest segment first, and removes each segment once its
//! records are committed. Segments survive a restart, so records spooled before a crash are
//! replayed by the next process.
//!
//! # Format
//!
//! A spool is one directory owned by one [`Spool`] (two processes must not share it). Each
//! appended batch becomes one *segment*: a file named by its sequence number, zero-padded to
//! 20 digits so that lexical order is numeric order (`00000000000000000042.seg`). A segment holds
//! the batch's records as JSON lines: each record's JSON text (`StoredRecord::record`, compact
//! `serde_json` output, which never contains a newline), after its MAC when the spool has a
//! key (see [Authentication](#authentication)), followed by `\n`, in batch order. Nothing else
//! is in the file, so a segment's size is exactly the sum of its lines' lengths.
//!
//! # Authentication
//!
//! With a chained store, every line carries a MAC: `<HMAC-SHA256 in hex> <record JSON>\n`, the
//! HMAC under a key derived from the chain secret for this purpose only (never a record's
//! seal key), over a domain tag, the segment's sequence number and the record's text. Whoever
//! can write to the spool directory but does not hold the secret cannot add a line that
//! replays, nor edit one, nor move one into another segment: at replay such a line is
//! refused, logged with `tracing::error!` (the file, the line), counted
//! ([`PipelineMetrics::spool_rejected`](crate::pipeline::PipelineMetrics::spool_rejected) and
//! `dropped`) and reported by a gap record; it is never chained as a genuine record. Lines
//! may still be deleted, like any file an insider can reach: a spool holds records not yet
//! vouched for by any chain. Segments written without a key (an unchained store, or a spool
//! from before authentication) do not replay into a chained store. Sizes and the budget count
//! the MAC's 65 bytes per line.
//!
//! # Atomicity
//!
//! A segment is whole or absent. [`Spool::append`] writes the batch to
//! `<sequence>.seg.tmp`, fsyncs it, renames it to `<sequence>.seg` and fsyncs the directory
//! (on Unix; elsewhere the rename is the last step). A crash before the rename leaves only a
//! temp file, which [`Spool::open`] deletes: a batch whose append did not return
//! [`Appended::Stored`] was never promised. Only names of exactly those two shapes are
//! touched; any other file in the directory is ignored and left alone.
//!
//! The directory is created accessible by its owner only (mode 700) and every file in it
//! readable by its owner only (600), whatever the umask.
//!
//! Removal is not fsync'd: a removal lost in a crash replays that segment once more, which
//! is harmless because a record's `id` is the store's key (retries never duplicate).
//!
//! # Ordering
//!
//! Sequence numbers only grow: a new spool continues at the highest existing segment's
//! number plus one, so segments are replayed in the order they were appended, across
//! restarts. Within a segment, records keep their batch order.
//!
//! # Budget
//!
//! The spool holds at most `budget_bytes` of segment data ([`Spool::used_bytes`], the sum of
//! the segment file sizes, counted from the files on open). An append that would go past the
//! budget writes nothing and returns [`Appended::OverBudget`]; the caller counts those
//! records as dropped (and reports the gap). Space comes back as replayed segments are
//! removed. A spool reopened with a smaller budget than it already uses takes no new batch
//! until it has drained below the budget.
//!
//! # Damaged segments
//!
//! Segments are only ever written whole, but a file can still be damaged by hand or by the
//! disk. Replay must not crash or stall on one, so [`Spool::oldest_batch`] returns the lines
//! that are readable (and authenticated) audit records (UTF-8 text that deserializes as an
//! [`AuditRecord`](audit_layer::record::AuditRecord)) and skips the rest, logging with
//! `tracing::warn!` which file, how many lines and the first reason. A segment with no
//! readable line, or one deleted behind the spool's back, comes back with no records, so the
//! caller removes it and replay moves on. The lines refused are counted in
//! [`Oldest::rejected`], for the caller to count and report once it removes the segment. Blank lines carry no record and are skipped
//! silently. I/O errors (as opposed to damaged content) are returned as errors.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use audit_layer::record::AuditRecord;

use crate::chain::{self, SealKey};
use crate::{Result, StoreError};

/// The suffix of a complete segment's file name.
const SEGMENT_SUFFIX: &str = ".seg";
/// The suffix of a segment still being written.
const TEMP_SUFFIX: &str = ".seg.tmp";
/// What an authenticated line has before its record: the MAC in hexadecimal, and a space.
const MAC_PREFIX: usize = 65;

/// A directory of segments waiting to be replayed, oldest first. See the module docs.
#[derive(Debug)]
pub(crate) struct Spool {
    /// The spool's directory.
    dir: PathBuf,
    /// The most segment bytes the spool holds.
    budget_bytes: u64,
    /// Segment sequence number → file size in bytes, oldest first.
    segments: BTreeMap<u64, u64>,
    /// The sum of the segment sizes.
    used_bytes: u64,
    /// The sequence number of the next appended segment.
    next_seq: u64,
    /// The key that authenticates each line (with a chained store): see the module docs.
    key: Option<SealKey>,
}

/// A segment's identity: its sequence number. Older segments compare smaller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SegmentId(u64);

/// The oldest segments of a spool, read together by [`Spool::oldest_batch`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Oldest {
    /// The segments read, oldest first.
    pub(crate) ids: Vec<SegmentId>,
    /// Their records' JSON texts, in order.
    pub(crate) records: Vec<String>,
    /// Whether these are all the segments the spool holds.
    pub(crate) all: bool,
    /// Lines refused: damaged, or failing authentication.
    pub(crate) rejected: u64,
}

/// What [`Spool::append`] did with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    /// The batch is on disk (fsync'd) as one new segment.
    Stored,
    /// The batch would have passed the byte budget: nothing was written; the caller counts
    /// the records as dropped.
    OverBudget,
}

impl Spool {
    /// Opens the spool in `dir`, creating the directory if needed.
    ///
    /// Finds the complete segments already there (left by an earlier process), deletes the
    /// temp files of appends that a crash interrupted, and checks that the directory takes a
    /// new file, so that a spool that cannot work fails at startup rather than during an
    /// outage. New segments are numbered from the highest existing one plus one.
    ///
    /// With `key`, every line appended carries a MAC under it, and a line read back without a
    /// valid one is refused (see the module docs).
    pub(crate) async fn open(
        dir: impl Into<PathBuf>,
        budget_bytes: u64,
        key: Option<SealKey>,
    ) -> Result<Self> {
        let dir = dir.into();
        let scan_dir = dir.clone();
        let (segments, next_seq) = blocking(&dir, move || scan(&scan_dir, budget_bytes)).await??;
        let used_bytes = segments.values().sum();
        Ok(Self {
            dir,
            budget_bytes,
            segments,
            used_bytes,
            next_seq,
            key,
        })
    }

    /// Whether no segment is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The bytes the segments take, counted against the budget.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// The number of segments waiting.
    #[cfg(test)]
    pub(crate) fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Appends one batch as one new segment, durably: see the module docs.
    ///
    /// `records` are the records' JSON texts (`StoredRecord::record`), one line each. If the
    /// spool's used bytes plus this batch's size (each text's length plus one for its newline)
    /// would pass the budget, nothing is written and the answer is [`Appended::OverBudget`].
    /// An empty batch writes nothing and is [`Appended::Stored`]. A text containing a newline
    /// is refused with an error (it would split into two lines), and nothing is written.
    ///
    /// On an I/O error the batch is not promised to be on disk. In the one case where the
    /// segment is already in place but the directory fsync failed (and the file could not
    /// be removed again), the spool keeps it and will replay it: a record may then be both
    /// counted as dropped and stored, never lost twice or stored twice.
    pub(crate) async fn append(&mut self, records: &[String]) -> Result<Appended> {
        self.append_within(records, self.budget_bytes).await
    }

    /// Appends like [`append`](Self::append), allowing `reserve` bytes beyond the budget:
    /// for the gap records that report what the budget made the spool drop.
    pub(crate) async fn append_reserved(
        &mut self,
        records: &[String],
        reserve: u64,
    ) -> Result<Appended> {
        self.append_within(records, self.budget_bytes.saturating_add(reserve))
            .await
    }

    async fn append_within(&mut self, records: &[String], limit: u64) -> Result<Appended> {
        if records.is_empty() {
            return Ok(Appended::Stored);
        }
        let prefix = if self.key.is_some() { MAC_PREFIX } else { 0 };
        let size: u64 = records.iter().map(|r| (r.len() + prefix) as u64 + 1).sum();
        if self.used_bytes.saturating_add(size) > limit {
            return Ok(Appended::OverBudget);
        }
        let seq = self.next_seq;
        let path = self.segment_path(seq);
        if let Some(index) = records.iter().position(|r| r.contains('\n')) {
            return Err(spool_error(
                &path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "record {index} of the batch contains a newline; \
                         spooled records must be single-line JSON"
                    ),
                ),
            ));
        }
        // Advance first: whatever happens below, this number is never reused in this process.
        self.next_seq = seq.checked_add(1).ok_or_else(|| {
            spool_error(
                &path,
                io::Error::other("segment sequence numbers exhausted"),
            )
        })?;

        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        for record in records {
            if let Some(key) = &self.key {
                let mac = chain::spool_mac(key, seq, record.as_bytes());
                bytes.extend_from_slice(hex::encode(mac).as_bytes());
                bytes.push(b' ');
            }
            bytes.extend_from_slice(record.as_bytes());
            bytes.push(b'\n');
        }
        let dir = self.dir.clone();
        let tmp = self.temp_path(seq);
        let final_path = path.clone();
        let written = blocking(&path, move || {
            write_segment(&dir, &tmp, &final_path, &bytes)
        })
        .await?;
        match written {
            Ok(()) => {
                self.track(seq, size);
                Ok(Appended::Stored)
            }
            Err(WriteFailure { error, landed }) => {
                if landed {
                    self.track(seq, size);
                }
                Err(error)
            }
        }
    }

    /// The oldest segments, if any, as many as hold at most `max_records` records and
    /// `max_bytes` bytes of segment together (the oldest one whatever it holds): their ids and their records' JSON texts, in order,
    /// and whether they are all the spool holds. Replay writes them in one transaction, so
    /// that it drains a spool of many small segments much faster than they are appended.
    ///
    /// Damaged lines are skipped and logged; a segment whose file has vanished comes back
    /// with no records (see the module docs). Remove the segments with [`Spool::remove`] once
    /// their records are committed.
    pub(crate) async fn oldest_batch(
        &self,
        max_records: usize,
        max_bytes: u64,
    ) -> Result<Option<Oldest>> {
        let mut oldest = Oldest::default();
        let mut bytes = 0u64;
        let sizes: Vec<(u64, u64)> = self.segments.iter().map(|(k, v)| (*k, *v)).collect();
        let mut segments = sizes.into_iter().peekable();
        while let Some(&(seq, size)) = segments.peek() {
            if !oldest.ids.is_empty()
                && (oldest.records.len() >= max_records || bytes.saturating_add(size) > max_bytes)
            {
                break;
            }
            let (records, rejected) = self.read(seq).await?;
            if !oldest.ids.is_empty() && oldest.records.len() + records.len() > max_records {
                break;
            }
            segments.next();
            bytes = bytes.saturating_add(size);
            oldest.ids.push(SegmentId(seq));
            oldest.records.extend(records);
            oldest.rejected += rejected;
        }
        if oldest.ids.is_empty() {
            return Ok(None);
        }
        oldest.all = segments.peek().is_none();
        Ok(Some(oldest))
    }

    /// The oldest segment, if any: its id and its records' JSON texts, in order (see
    /// [`oldest_batch`](Self::oldest_batch)).
    #[cfg(test)]
    pub(crate) async fn oldest(&self) -> Result<Option<(SegmentId, Vec<String>)>> {
        let Some((&seq, _)) = self.segments.first_key_value() else {
            return Ok(None);
        };
        let (records, _) = self.read(seq).await?;
        Ok(Some((SegmentId(seq), records)))
    }

    /// Segment `seq`'s records, and how many lines were refused.
    async fn read(&self, seq: u64) -> Result<(Vec<String>, u64)> {
        let path = self.segment_path(seq);
        let read_path = path.clone();
        let key = self.key.clone();
        let max_bytes = self.budget_bytes;
        blocking(&path, move || {
            read_segment(&read_path, seq, key.as_ref(), max_bytes)
        })
        .await?
    }

    /// Deletes a replayed segment (after its records were committed). Removing a segment
    /// that is not (or no longer) in the spool does nothing.
    pub(crate) async fn remove(&mut self, id: SegmentId) -> Result<()> {
        let Some(&size) = self.segments.get(&id.0) else {
            return Ok(());
        };
        let path = self.segment_path(id.0);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(spool_error(&path, e)),
        }
        self.segments.remove(&id.0);
        self.used_bytes = self.used_bytes.saturating_sub(size);
        Ok(())
    }

    /// Counts a segment that is in place.
    fn track(&mut self, seq: u64, size: u64) {
        self.segments.insert(seq, size);
        self.used_bytes = self.used_bytes.saturating_add(size);
    }

    /// The path of segment `seq`.
    fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"))
    }

    /// The temp path segment `seq` is written to before its rename.
    fn temp_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{TEMP_SUFFIX}"))
    }
}

/// The spool error naming `path`.
fn spool_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Spool {
        path: path.display().to_string(),
        source,
    }
}

/// Runs blocking file work off the async runtime. A panic in `work` comes back as an error
/// naming `path`, not as a panic.
async fn blocking<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| spool_error(path, io::Error::other(e)))
}

/// The sequence number in a name of the form `<digits><suffix>`.
fn parse_seq(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The largest segment sequence number a spool takes as its own: one a batch, it would take
/// millennia to reach. A file named with a larger one (which would exhaust the numbering) is
/// moved aside.
const MAX_SEQ: u64 = 1 << 48;

/// The suffix a segment that cannot be replayed is renamed with: out of the spool, kept for
/// whoever investigates.
const UNREADABLE_SUFFIX: &str = ".unreadable";

/// Moves a segment that can never be replayed out of the spool (renamed with
/// [`UNREADABLE_SUFFIX`]), or removes it if it cannot be renamed, so that replay goes on
/// past it.
fn set_aside(path: &Path, why: &str) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(UNREADABLE_SUFFIX);
    let moved = fs::rename(path, &aside).is_ok() || fs::remove_file(path).is_ok();
    tracing::error!(
        target: "audit_store",
        path = %path.display(),
        why,
        moved,
        "spool segment that cannot be replayed: set aside, its records counted as lost"
    );
}

/// Opens the directory: creates it, lists its segments, deletes leftover temp files and
/// checks that it is writable. Returns the segments and the next sequence number. An entry
/// named like a segment that is not a regular file, is larger than the whole spool's
/// `budget_bytes`, or has an impossible number is set aside: none of the spool's own.
fn scan(dir: &Path, budget_bytes: u64) -> Result<(BTreeMap<u64, u64>, u64)> {
    crate::private_files::create_dir_all(dir).map_err(|e| spool_error(dir, e))?;
    let mut segments = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(|e| spool_error(dir, e))? {
        let entry = entry.map_err(|e| spool_error(dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if let Some(seq) = parse_seq(name, SEGMENT_SUFFIX) {
            // Not followed: a link is not one of the spool's files.
            let meta = fs::symlink_metadata(&path).map_err(|e| spool_error(&path, e))?;
            if !meta.is_file() {
                set_aside(&path, "not a regular file");
            } else if meta.len() > budget_bytes {
                set_aside(&path, "larger than the whole spool's budget");
            } else if seq > MAX_SEQ {
                set_aside(&path, "its sequence number is not one the spool gives");
            } else {
                segments.insert(seq, meta.len());
            }
        } else if parse_seq(name, TEMP_SUFFIX).is_some() {
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(
                        path = %path.display(),
                        "removed an unfinished spool segment left by an interrupted append"
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(spool_error(&path, e)),
            }
        }
    }
    let next_seq = match segments.last_key_value() {
        None => 0,
        Some((&last, _)) => last.checked_add(1).ok_or_else(|| {
            spool_error(dir, io::Error::other("segment sequence numbers exhausted"))
        })?,
    };
    // A spool that cannot create files fails now, not when the database goes down. The probe
    // has a temp name, so a crash right here leaves nothing the next open keeps.
    let probe = dir.join(format!("{next_seq:020}{TEMP_SUFFIX}"));
    crate::private_files::create(&probe).map_err(|e| spool_error(&probe, e))?;
    fs::remove_file(&probe).map_err(|e| spool_error(&probe, e))?;
    Ok((segments, next_seq))
}

/// Why a segment write failed, and whether the segment file is in place anyway.
struct WriteFailure {
    /// The error, naming the file or directory.
    error: StoreError,
    /// The renamed segment is in place (the directory fsync failed and it could not be removed).
    landed: bool,
}

/// Writes `bytes` to `tmp`, fsyncs it, renames it to `path` and fsyncs `dir`. On failure,
/// cleans up so that the segment is absent, where it can.
fn write_segment(
    dir: &Path,
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
) -> std::result::Result<(), WriteFailure> {
    let write = || -> io::Result<()> {
        let mut file = crate::private_files::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(tmp);
        return Err(WriteFailure {
            error: spool_error(tmp, e),
            landed: false,
        });
    }
    if let Err(e) = fs::rename(tmp, path) {
        let _ = fs::remove_file(tmp);
        return Err(WriteFailure {
            error: spool_error(path, e),
            landed: false,
        });
    }
    if let Err(e) = sync_dir(dir) {
        let landed = fs::remove_file(path).is_err();
        return Err(WriteFailure {
            error: spool_error(dir, e),
            landed,
        });
    }
    Ok(())
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Reads segment `seq`'s records, skipping (and logging) damaged lines and, with `key`, lines
/// without a valid MAC; a vanished file has none. Returns the records and how many lines were
/// refused.
///
/// A segment that can never be read (not a regular file any more, larger than `max_bytes`,
/// the spool's budget, or refused by the file system's permissions) is set aside and counts
/// as one refused record: replay goes on past it rather than stop at it for ever.
fn read_segment(
    path: &Path,
    seq: u64,
    key: Option<&SealKey>,
    max_bytes: u64,
) -> Result<(Vec<String>, u64)> {
    let bytes = match read_capped(path, max_bytes) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(
                path = %path.display(),
                "spool segment vanished before replay; nothing to replay from it"
            );
            return Ok((Vec::new(), 0));
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied
                    | io::ErrorKind::IsADirectory
                    | io::ErrorKind::InvalidData
            ) =>
        {
            set_aside(path, &e.to_string());
            return Ok((Vec::new(), 1));
        }
        Err(e) => return Err(spool_error(path, e)),
    };
    let mut records = Vec::new();
    let mut skipped = 0_u64;
    let mut forged = 0_u64;
    let mut first_skip: Option<(usize, String)> = None;
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let line = match key {
            None => line,
            Some(key) => match authenticated(key, seq, line) {
                Some(record) => record,
                None => {
                    skipped += 1;
                    forged += 1;
                    first_skip.get_or_insert((
                        index + 1,
                        "its MAC does not match: written by someone without the chain secret"
                            .to_owned(),
                    ));
                    continue;
                }
            },
        };
        let problem = match std::str::from_utf8(line) {
            Err(e) => Some(format!("not UTF-8: {e}")),
            Ok(text) => match serde_json::from_str::<AuditRecord>(text) {
                Ok(_) => {
                    records.push(text.to_owned());
                    None
                }
                Err(e) => Some(format!("not an audit record: {e}")),
            },
        };
        if let Some(problem) = problem {
            skipped += 1;
            first_skip.get_or_insert((index + 1, problem));
        }
    }
    if let Some((first_line, reason)) = first_skip {
        if forged > 0 {
            tracing::error!(
                target: "audit_store",
                path = %path.display(),
                refused = skipped,
                forged,
                kept = records.len(),
                first_line,
                reason = %reason,
                "spool segment with lines that fail authentication (forged or edited): refusing them"
            );
        } else {
            tracing::warn!(
                target: "audit_store",
                path = %path.display(),
                skipped,
                kept = records.len(),
                first_line,
                reason = %reason,
                "damaged spool segment: skipping its unreadable lines"
            );
        }
    }
    Ok((records, skipped))
}

/// The bytes of a segment file: a regular file (checked before it is opened, so that a FIFO
/// put in its place cannot block the read, and again on the open file), of at most
/// `max_bytes`. `InvalidData` for anything else.
fn read_capped(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    if !fs::symlink_metadata(path)?.is_file() {
        return Err(invalid("not a regular file"));
    }
    let file = fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(invalid("not a regular file"));
    }
    if meta.len() > max_bytes {
        return Err(invalid("larger than the whole spool's budget"));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(invalid("larger than the whole spool's budget"));
    }
    Ok(bytes)
}

/// The record text of an authenticated line of segment `seq` (`<MAC in hex> <JSON>`), if its
/// MAC is valid.
fn authenticated<'a>(key: &SealKey, seq: u64, line: &'a [u8]) -> Option<&'a [u8]> {
    let (mac, record) = (line.get(..MAC_PREFIX - 1)?, line.get(MAC_PREFIX..)?);
    if line[MAC_PREFIX - 1] != b' ' {
        return None;
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(mac, &mut bytes).ok()?;
    chain::spool_mac_matches(key, seq, record, &bytes).then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// A compact audit record JSON text, distinct per `n`.
    fn record(n: u32) -> String {
        let json = format!(
            r#"{{
              "id": "01948c5e-9a2d-7b3c-8f00-{n:012x}",
              "account": {{"id": "acc_demo"}},
              "action": {{"result": "success", "time": "2025-01-23T18:25:14.749Z",
                         "type": "update"}},
              "actor": {{"ip_address": "127.0.0.1", "token": {{}}}},
              "raw": {{"method": "PUT", "cf_ray_id": "8f3a", "status_code": 200, "uri": "/items/{n}"}},
              "resource": {{"scope": "accounts"}}
            }}"#
        );
        let parsed: AuditRecord = serde_json::from_str(&json).expect("test record parses");
        serde_json::to_string(&parsed).expect("test record serializes")
    }

    fn batch(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(record).collect()
    }

    fn size(records: &[String]) -> u64 {
        records.iter().map(|r| r.len() as u64 + 1).sum()
    }

    /// The file names in `dir`, sorted.
    fn names(dir: &Path) -> io::Result<Vec<String>> {
        let mut names = fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    fn seg(seq: u64) -> String {
        format!("{seq:020}.seg")
    }

    #[tokio::test]
    async fn oldest_batch_takes_whole_segments_up_to_the_record_limit() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let mut spool = Spool::open(tmp.path(), 1 << 20, None).await?;
        assert_eq!(spool.oldest_batch(4, u64::MAX).await?, None);
        let batches = [batch(0..3), batch(3..4), batch(4..9), batch(9..10)];
        for b in &batches {
            assert_eq!(spool.append(b).await?, Appended::Stored);
        }
        // 3 + 1 records fit in 4; the next segment's 5 would not.
        let first = spool
            .oldest_batch(4, u64::MAX)
            .await?
            .ok_or("segments expected")?;
        assert_eq!(first.records, batch(0..4));
        assert_eq!(first.ids.len(), 2);
        assert!(!first.all);
        // Reading does not consume.
        assert_eq!(
            spool.oldest_batch(4, u64::MAX).await?.as_ref(),
            Some(&first)
        );
        for id in first.ids {
            spool.remove(id).await?;
        }
        // The oldest segment comes whole even past the limit.
        let second = spool
            .oldest_batch(4, u64::MAX)
            .await?
            .ok_or("segments expected")?;
        assert_eq!(second.records, batch(4..9));
        assert!(!second.all);
        for id in second.ids {
            spool.remove(id).await?;
        }
        let last = spool
            .oldest_batch(4, u64::MAX)
            .await?
            .ok_or("segments expected")?;
        assert_eq!(last.records, batch(9..10));
        assert!(last.all);
        // Everything fits: all of it, in order.
        assert_eq!(spool.append(&batch(10..12)).await?, Appended::Stored);
        let rest = spool
            .oldest_batch(100, u64::MAX)
            .await?
            .ok_or("segments expected")?;
        assert_eq!(rest.records, batch(9..12));
        assert!(rest.all);
        Ok(())
    }

    #[tokio::test]
    async fn append_oldest_remove_in_order() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let mut spool = Spool::open(tmp.path(), 1 << 20, None).await?;
        assert!(spool.is_empty());
        assert_eq!(spool.oldest().await?, None);

        let batches = [batch(0..3), batch(3..4), batch(4..9)];
        for b in &batches {
            assert_eq!(spool.append(b).await?, Appended::Stored);
        }
        assert_eq!(spool.segments(), 3);
        assert!(!spool.is_empty());
        let total: u64 = batches.iter().map(|b| size(b)).sum();
        assert_eq!(spool.used_bytes(), total);
        assert_eq!(names(tmp.path())?, vec![seg(0), seg(1), seg(2)]);

        let mut previous = None;
        for b in &batches {
            let (id, records) = spool.oldest().await?.ok_or("segment expected")?;
            assert_eq!(&records, b);
            assert!(previous < Some(id), "segment ids grow");
            previous = Some(id);
            // Reading does not consume.
            assert_eq!(spool.oldest().await?, Some((id, records)));
            spool.remove(id).await?;
            // Removing twice is a no-op.
            spool.remove(id).await?;
        }
        assert!(spool.is_empty());
        assert_eq!(spool.used_bytes(), 0);
        assert_eq!(spool.oldest().await?, None);
        assert!(names(tmp.path())?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn over_budget_writes_nothing() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let first = batch(0..2);
        let second = batch(2..4);
        // Room for the first batch and all but one byte of the second.
        let budget = size(&first) + size(&second) - 1;
        let mut spool = Spool::open(tmp.path(), budget, None).await?;

        assert_eq!(spool.append(&first).await?, Appended::Stored);
        let used = spool.used_bytes();
        assert_eq!(used, size(&first));

        assert_eq!(spool.append(&second).await?, Appended::OverBudget);
        assert_eq!(spool.used_bytes(), used);
        assert_eq!(spool.segments(), 1);
        assert_eq!(names(tmp.path())?, vec![seg(0)]);

        // A batch that fills the budget exactly fits.
        let rest = budget - used;
        let exact = vec!["x".repeat(usize::try_from(rest - 1)?)];
        assert_eq!(spool.append(&exact).await?, Appended::Stored);
        assert_eq!(spool.used_bytes(), budget);
        // Now even one byte is too much.
        assert_eq!(spool.append(&[String::new()]).await?, Appended::OverBudget);
        assert_eq!(spool.used_bytes(), budget);

        // Space comes back as segments are removed.
        let (id, _) = spool.oldest().await?.ok_or("segment expected")?;
        spool.remove(id).await?;
        assert_eq!(spool.used_bytes(), budget - size(&first));
        assert_eq!(spool.append(&first).await?, Appended::Stored);

        // A batch bigger than the whole budget never fits.
        let mut empty = Spool::open(tmp.path().join("small"), 10, None).await?;
        assert_eq!(empty.append(&first).await?, Appended::OverBudget);
        assert_eq!(empty.used_bytes(), 0);
        assert!(names(&tmp.path().join("small"))?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn reopen_sees_segments_in_order_and_continues_numbering() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let batches = [batch(0..2), batch(2..3), batch(3..6)];
        let used = {
            let mut spool = Spool::open(tmp.path(), 1 << 20, None).await?;
            for b in &batches {
                spool.append(b).await?;
            }
            // The first segment is replayed before the "restart".
            let (id, _) = spool.oldest().await?.ok_or("segment expected")?;
            spool.remove(id).await?;
            spool.used_bytes()
        };

        let mut spool = Spool::open(tmp.path(), 1 << 20, None).await?;
        assert_eq!(spool.segments(), 2);
        assert_eq!(spool.used_bytes(), used);
        let fourth = batch(6..8);
        assert_eq!(spool.append(&fourth).await?, Appended::Stored);
        assert_eq!(names(tmp.path())?, vec![seg(1), seg(2), seg(3)]);

        for b in [&batches[1], &batches[2], &fourth] {
            let (id, records) = spool.oldest().await?.ok_or("segment expected")?;
            assert_eq!(&records, b);
            spool.remove(id).await?;
        }
        assert!(spool.is_empty());
        drop(spool);

        // A reopened spool counts its existing bytes against the budget.
        let mut spool = Spool::open(tmp.path(), 1 << 20, None).await?;
        spool.append(&batches[0]).await?;
        drop(spool);
        let mut spool = Spool::open(tmp.path(), size(&batches[0]), None).await?;
        assert_eq!(spool.used_bytes(), size(&batches[0]));
        assert_eq!(spool.append(&batches[1]).await?, Appended::OverBudget);
        Ok(())
    }

    #[tokio::test]
    async fn leftover_temp_file_is_ignored_and_removed() -> TestResult {
        let tmp = tempfile::tempdir()?;
        {
            let mut spool = Spool::open(tmp.path(), 1 << 20, None).await?;
            spool.append(&batch(0..2)).await?;
        }
        // A crash in the middle of the next append left its temp file, half written.
        let half = record(2);
        fs::write(tmp.path().join(format!("{:020}.seg.tmp", 1)), &half[..10])?;
        // Someone else's file is left alone.
        fs::write(tmp.path().join("notes.txt"), "not a segment")?;

        let mut spool = Spool::open(tmp.path(), 1 << 20, None).await?;
        assert_eq!(names(tmp.path())?, vec![seg(0), "notes.txt".to_owned()]);
        assert_eq!(spool.segments(), 1);
        assert_eq!(spool.used_bytes(), size(&batch(0..2)));

        spool.append(&batch(3..4)).await?;
        assert_eq!(
            names(tmp.path())?,
            vec![seg(0), seg(1), "notes.txt".to_owned()]
        );
        let (_, records) = spool.oldest().await?.ok_or("segment expected")?;
        assert_eq!(records, batch(0..2));
        Ok(())
    }

    #[tokio::test]
    async fn spool_path_that_is_a_file_is_a_spool_error() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let file = tmp.path().join("spool");
        fs::write(&file, "a file where the spool directory should be")?;

        for dir in [file.clone(), file.join("inside")] {
            match Spool::open(&dir, 1 << 20, None).await {
                Err(StoreError::Spool { path, source }) => {
                    assert_eq!(path, dir.display().to_string());
                    let message = StoreError::Spool { path, source }.to_string();
                    assert!(message.contains(&dir.display().to_string()), "{message}");
                }
                other => panic!(
                    "expected a spool error for {}, got {other:?}",
                    dir.display()
                ),
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn append_into_vanished_directory_is_a_spool_error() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("spool");
        let mut spool = Spool::open(&dir, 1 << 20, None).await?;
        spool.append(&batch(0..1)).await?;
        let used = spool.used_bytes();

        // The directory is replaced by a file: nothing can be written there any more.
        fs::remove_dir_all(&dir)?;
        fs::write(&dir, "not a directory")?;
        match spool.append(&batch(1..2)).await {
            Err(StoreError::Spool { path, .. }) => {
                assert!(path.starts_with(&dir.display().to_string()), "{path}");
                assert!(path.ends_with(".seg.tmp"), "{path}");
            }
            other => panic!("expected a spool error, got {other:?}"),
        }
        assert_eq!(spool.used_bytes(), used);
        assert_eq!(spool.segments(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn damaged_segment_returns_its_readable_lines() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let mut spool = Spool::open(tmp.path(), 1 << 20, None).await?;
        spool.append(&batch(0..1)).await?;
        spool.append(&batch(1..2)).await?;

        // Damage the oldest segment by hand.
        let mut damaged = Vec::new();
        damaged.extend_from_slice(record(10).as_bytes());
        damaged.extend_from_slice(b"\n{\"id\": truncated garbage\n\n");
        damaged.extend_from_slice(b"\xff\xfe not utf-8\n");
        damaged.extend_from_slice(b"{\"valid\": \"json\", \"but\": \"no record\"}\n");
        // The last line lacks its newline but is whole.
        damaged.extend_from_slice(record(11).as_bytes());
        fs::write(tmp.path().join(seg(0)), damaged)?;

        let (id, records) = spool.oldest().await?.ok_or("segment expected")?;
        assert_eq!(records, vec![record(10), record(11)]);
        spool.remove(id).await?;

        // Replay goes on with the next segment.
        let (id, records) = spool.oldest().await?.ok_or("segment expected")?;
        assert_eq!(records, batch(1..2));
        spool.remove(id).await?;

        // A segment with nothing readable, or one deleted by hand, yields no records, so it
        // can be removed instead of blocking replay.
        spool.append(&batch(2..3)).await?;
        spool.append(&batch(3..4)).await?;
        fs::write(tmp.path().join(seg(2)), b"\x00\x01\x02 complete garbage")?;
        fs::remove_file(tmp.path().join(seg(3)))?;
        for _ in 0..2 {
            let (id, records) = spool.oldest().await?.ok_or("segment expected")?;
            assert!(records.is_empty());
            spool.remove(id).await?;
        }
        assert!(spool.is_empty());
        assert_eq!(spool.used_bytes(), 0);
        Ok(())
    }

    /// Whatever stands where a segment should, replay goes on past it: a directory, a FIFO
    /// (which would block a read for ever), a file larger than the whole spool (sparse), a
    /// number that would exhaust the numbering. Each is set aside and counted.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_segment_that_cannot_be_replayed_is_set_aside_and_replay_goes_on() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let budget = 1 << 20;
        {
            let mut spool = Spool::open(tmp.path(), budget, None).await?;
            for n in 0..4 {
                spool.append(&batch(n..n + 1)).await?;
            }
        }
        // Before the spool opens: a sparse file far over the budget, and a huge number.
        fs::File::create(tmp.path().join(seg(1)))?.set_len(1 << 40)?;
        fs::write(tmp.path().join(seg(u64::MAX - 1)), record(9))?;
        let mut spool = Spool::open(tmp.path(), budget, None).await?;
        assert!(spool.used_bytes() < budget, "{}", spool.used_bytes());
        // After it opened: a directory and a FIFO in place of two segments.
        fs::remove_file(tmp.path().join(seg(0)))?;
        fs::create_dir(tmp.path().join(seg(0)))?;
        fs::remove_file(tmp.path().join(seg(2)))?;
        let status = std::process::Command::new("mkfifo")
            .arg(tmp.path().join(seg(2)))
            .status()?;
        assert!(status.success());

        let mut replayed = Vec::new();
        let mut rejected = 0;
        while let Some(oldest) = spool.oldest_batch(1, budget).await? {
            replayed.extend(oldest.records);
            rejected += oldest.rejected;
            for id in oldest.ids {
                spool.remove(id).await?;
            }
        }
        assert_eq!(replayed, batch(3..4), "the readable segment is replayed");
        assert_eq!(rejected, 2, "the directory and the FIFO");
        assert!(spool.is_empty());
        // The spool still stores, numbered after what it took as its own.
        assert_eq!(spool.append(&batch(5..6)).await?, Appended::Stored);
        let aside = fs::read_dir(tmp.path())?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(UNREADABLE_SUFFIX))
            .count();
        assert_eq!(aside, 4, "set aside, not deleted");
        Ok(())
    }

    fn spool_key() -> SealKey {
        let secret = crate::chain::ChainSecret::from_bytes([3; 32]);
        crate::chain::ChainKeys::from_secret(&secret)
            .spool_key()
            .clone()
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_directory_and_segments_are_private() -> TestResult {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("spool");
        let mut spool = Spool::open(&dir, 1 << 20, Some(spool_key())).await?;
        spool.append(&batch(0..2)).await?;
        let mode = |p: &Path| fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode(&dir)?, 0o700);
        assert_eq!(mode(&dir.join(seg(0)))?, 0o600);
        Ok(())
    }

    #[tokio::test]
    async fn lines_without_a_valid_mac_are_refused_and_counted() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let mut spool = Spool::open(tmp.path(), 1 << 20, Some(spool_key())).await?;
        spool.append(&batch(0..2)).await?;
        spool.append(&batch(2..3)).await?;
        let first = fs::read_to_string(tmp.path().join(seg(0)))?;
        let line = first.lines().next().ok_or("a line")?;
        assert_eq!(line.len(), MAC_PREFIX + record(0).len());
        assert_eq!(
            spool.used_bytes(),
            3 * MAC_PREFIX as u64 + size(&batch(0..3))
        );

        // A record appended by hand, bare or with a made-up MAC; a genuine record edited; a
        // genuine line of segment 0 copied into segment 1.
        let mut forged = first.clone();
        forged.push_str(&record(10));
        forged.push('\n');
        forged.push_str(&format!("{} {}\n", "ab".repeat(32), record(11)));
        forged.push_str(&line.replace("/items/0", "/items/9"));
        forged.push('\n');
        fs::write(tmp.path().join(seg(0)), forged)?;
        let mut second = fs::read_to_string(tmp.path().join(seg(1)))?;
        second.push_str(line);
        second.push('\n');
        fs::write(tmp.path().join(seg(1)), second)?;

        let oldest = spool
            .oldest_batch(100, u64::MAX)
            .await?
            .ok_or("segments expected")?;
        assert_eq!(oldest.records, batch(0..3), "only the genuine lines");
        assert_eq!(oldest.rejected, 4);

        // Another key (another secret) authenticates nothing; neither does no key at all.
        let other =
            crate::chain::ChainKeys::from_secret(&crate::chain::ChainSecret::from_bytes([4; 32]));
        let stranger = Spool::open(tmp.path(), 1 << 20, Some(other.spool_key().clone())).await?;
        let oldest = stranger
            .oldest_batch(100, u64::MAX)
            .await?
            .ok_or("segments expected")?;
        assert!(oldest.records.is_empty());
        assert_eq!(oldest.rejected, 7);
        // Unauthenticated segments do not replay into a keyed spool.
        let plain = tmp.path().join("plain");
        Spool::open(&plain, 1 << 20, None)
            .await?
            .append(&batch(0..1))
            .await?;
        let keyed = Spool::open(&plain, 1 << 20, Some(spool_key())).await?;
        let oldest = keyed
            .oldest_batch(100, u64::MAX)
            .await?
            .ok_or("segments expected")?;
        assert_eq!((oldest.records.len(), oldest.rejected), (0, 1));
        Ok(())
    }

    #[tokio::test]
    async fn batch_with_a_newline_or_empty_writes_nothing() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let mut spool = Spool::open(tmp.path(), 1 << 20, None).await?;

        assert_eq!(spool.append(&[]).await?, Appended::Stored);
        assert!(spool.is_empty());

        let bad = vec![record(0), "{\"a\":\n1}".to_owned()];
        match spool.append(&bad).await {
            Err(StoreError::Spool { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::InvalidInput);
            }
            other => panic!("expected a spool error, got {other:?}"),
        }
        assert!(spool.is_empty());
        assert_eq!(spool.used_bytes(), 0);
        assert!(names(tmp.path())?.is_empty());
        Ok(())
    }
}

//! The file destination cuts a half-written batch back off when a write fails (a full disk),
//! so that the retry starts on a line of its own. A full disk is made for real, without root
//! or a mount, by lowering this process's `RLIMIT_FSIZE`: writes past it fail with `EFBIG`.
//! The limit is process-wide, hence this binary's single test.

#![cfg(unix)]

use audit_store::export::{Destination, EncodedBatch, FileDestination, Format};
use rustix::process::{Resource, Rlimit, Signal, getrlimit, setrlimit};
use tokio::signal::unix::{SignalKind, signal};
use uuid::Uuid;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A batch of `lines`, one NDJSON record each.
fn batch(lines: &str) -> EncodedBatch {
    EncodedBatch {
        job: "file".into(),
        account_id: "acc_1".into(),
        idempotency_key: "k".into(),
        first: (0, Uuid::nil()),
        last: (0, Uuid::nil()),
        records: lines.lines().count(),
        format: Format::Ndjson,
        lines: lines.into(),
        positions: Vec::new(),
    }
}

/// `n` records of about 100 bytes, the `i`th of them numbered `from + i`.
fn records(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(80)))
        .collect()
}

/// The file size limit as it was, put back when dropped (when the test fails, too).
struct FsizeLimit(Rlimit);

impl FsizeLimit {
    /// Limits the files this process writes to `bytes`.
    fn lower(bytes: u64) -> TestResult<Self> {
        let old = getrlimit(Resource::Fsize);
        let new = Rlimit {
            current: Some(bytes),
            maximum: old.maximum,
        };
        setrlimit(Resource::Fsize, new)?;
        Ok(Self(old))
    }
}

impl Drop for FsizeLimit {
    fn drop(&mut self) {
        if let Err(e) = setrlimit(Resource::Fsize, self.0) {
            eprintln!("restoring RLIMIT_FSIZE failed: {e}");
        }
    }
}

#[tokio::test]
async fn a_batch_cut_short_by_a_full_disk_is_cut_back_and_sent_again_whole() -> TestResult {
    // A write past the limit raises SIGXFSZ, which kills the process unless it is handled:
    // tokio's handler (never unregistered) lets the write fail with EFBIG instead.
    let _xfsz = signal(SignalKind::from_raw(Signal::XFSZ.as_raw()))?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("audit.ndjson");
    let file = FileDestination::new(&path)?;

    let first = records(0, 2);
    file.deliver(&batch(&first)).await?;
    assert_eq!(std::fs::read_to_string(&path)?, first);

    // Room for the first batch and one and a half lines of the second.
    let second = batch(&records(2, 4));
    let line = second.lines.len() / 4;
    let room = first.len() + line + line / 2;
    let failed = {
        let _limit = FsizeLimit::lower(u64::try_from(room)?)?;
        file.deliver(&second).await
    };
    let Err(e) = failed else {
        return Err("a batch past the file size limit was delivered".into());
    };
    let path_text = path.display().to_string();
    assert!(
        e.to_string().contains(&path_text),
        "the error names the file: {e}"
    );
    assert_eq!(
        std::fs::read_to_string(&path)?,
        first,
        "the half-written batch is cut back off"
    );

    // The limit is back: the retry goes through, on lines of its own.
    file.deliver(&second).await?;
    let written = std::fs::read_to_string(&path)?;
    assert_eq!(written, format!("{first}{}", second.lines));
    for (i, line) in written.lines().enumerate() {
        let record: serde_json::Value = serde_json::from_str(line)?;
        assert_eq!(record["n"], i, "line {i}: {line}");
    }
    Ok(())
}

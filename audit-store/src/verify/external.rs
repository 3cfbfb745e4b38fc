//! Checkpoints kept outside the database, as a verifier reads them back.

use std::future::Future;
use std::io::BufRead as _;
use std::pin::Pin;

use audit_layer::BoxError;

use crate::chain::JsonLinesCheckpoints;
use crate::model::Checkpoint;

/// The future of [`CheckpointSource::checkpoints`].
pub type ReadCheckpoints<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Checkpoint>, BoxError>> + Send + 'a>>;

/// Where a verifier reads the checkpoints kept outside the database (what a
/// [`CheckpointSink`](crate::chain::CheckpointSink) wrote): the query router's `/verify`
/// counts them like the stored ones, so deleting an account's newest records, or all of
/// them, together with the stored checkpoints and head is still found.
pub trait CheckpointSource: Send + Sync + 'static {
    /// The checkpoints of `account_id` (of every account when `None`).
    fn checkpoints<'a>(&'a self, account_id: Option<&'a str>) -> ReadCheckpoints<'a>;
}

/// Reads the file back, one line at a time, keeping the account's lines only. A file not
/// written yet holds none; a line that is not a checkpoint is an error naming it.
impl CheckpointSource for JsonLinesCheckpoints {
    fn checkpoints<'a>(&'a self, account_id: Option<&'a str>) -> ReadCheckpoints<'a> {
        let path = self.path().to_path_buf();
        let account = account_id.map(str::to_owned);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || -> Result<Vec<Checkpoint>, BoxError> {
                let file = match std::fs::File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => {
                        return Err(format!(
                            "cannot read checkpoints from {}: {e}",
                            path.display()
                        )
                        .into());
                    }
                };
                // The account id as it appears, JSON-escaped, in its lines: lines without it
                // are skipped unparsed.
                let needle = account
                    .as_deref()
                    .map(|a| serde_json::to_string(a).unwrap_or_default());
                let mut kept = Vec::new();
                for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                    let line = line.map_err(|e| {
                        format!("cannot read checkpoints from {}: {e}", path.display())
                    })?;
                    if line.trim().is_empty()
                        || needle.as_deref().is_some_and(|n| !line.contains(n))
                    {
                        continue;
                    }
                    let checkpoint: Checkpoint = serde_json::from_str(&line).map_err(|e| {
                        format!("{}:{}: not a checkpoint: {e}", path.display(), i + 1)
                    })?;
                    if account
                        .as_deref()
                        .is_none_or(|a| checkpoint.account_id == a)
                    {
                        kept.push(checkpoint);
                    }
                }
                Ok(kept)
            })
            .await
            .map_err(|e| BoxError::from(e.to_string()))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{ChainKeys, ChainSecret, CheckpointSink as _};
    use crate::model::CheckpointKind;

    #[tokio::test]
    async fn a_file_of_checkpoints_reads_back_per_account() {
        let dir = tempfile::tempdir().unwrap();
        let file = JsonLinesCheckpoints::new(dir.path().join("checkpoints.jsonl"));
        assert!(
            file.checkpoints(None).await.unwrap().is_empty(),
            "no file yet"
        );
        let keys = ChainKeys::from_secret(&ChainSecret::from_bytes([1; 32]));
        let sign = |account: &str, seq| {
            Checkpoint::sign(
                &keys,
                CheckpointKind::Checkpoint,
                account.into(),
                seq,
                vec![0; 32],
                1,
            )
        };
        let written = vec![sign("a", 1), sign("ab", 2), sign("a\"b", 3), sign("a", 4)];
        file.publish(&written).await.unwrap();
        let of_a: Vec<i64> = file
            .checkpoints(Some("a"))
            .await
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(of_a, [1, 4]);
        assert_eq!(file.checkpoints(Some("a\"b")).await.unwrap().len(), 1);
        assert_eq!(file.checkpoints(None).await.unwrap(), written);

        std::fs::write(dir.path().join("checkpoints.jsonl"), "{\"a\": 1}\n").unwrap();
        let e = file.checkpoints(None).await.unwrap_err().to_string();
        assert!(e.contains("checkpoints.jsonl:1: not a checkpoint"), "{e}");
    }
}

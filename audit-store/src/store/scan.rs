//! Reading links on a task of their own, handed over in chunks.

use std::future::Future;

use futures_util::stream::BoxStream;

use super::TableNames;
use super::sql::{Dialect, Numbered};
use crate::Result;
use crate::model::{ChainScope, ScannedLink};

/// Links per chunk of [`ChainedStore::chain_scan`](super::ChainedStore::chain_scan).
pub(super) const SCAN_CHUNK: usize = 2048;

/// The sending side of a scan.
pub(super) type Chunks = tokio::sync::mpsc::Sender<Result<Vec<ScannedLink>>>;

/// Runs `read` on a task of its own, which sends chunks of links into a channel, and returns
/// the channel as a stream: reading and decoding (the store's side) overlap with verifying
/// (the caller's). An error of `read` is the stream's last item.
pub(super) fn spawn_scan<F, Fut>(read: F) -> BoxStream<'static, Result<Vec<ScannedLink>>>
where
    F: FnOnce(Chunks) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let fut = read(tx.clone());
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            // The reader may be gone already; then nobody is left to tell.
            let _ = tx.send(Err(e)).await;
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// The statement of a scan selecting `select` in `dialect`, and the chain and sequence range
/// it binds (the chain only when it is not `""`: see [`Numbered::chain_condition`]).
pub(super) fn scan_statement(
    names: &TableNames,
    scope: &ChainScope,
    dialect: Dialect,
    select: &str,
) -> (String, Option<(String, i64, i64)>) {
    let logs = names.logs();
    match scope {
        // One pass in the table's order (SQLite's table is clustered by id; PostgreSQL reads
        // its partitions sequentially).
        ChainScope::All => (
            format!("SELECT {select} FROM {logs} WHERE chain_seq IS NOT NULL"),
            None,
        ),
        // The account index, in its order: records of one account in time order are nearly
        // in chain order.
        ChainScope::Chain { chain, first, last } => {
            let mut n = Numbered::new(dialect);
            let condition = n.chain_condition(chain);
            (
                format!(
                    "SELECT {select} FROM {logs} WHERE {condition} \
                     AND chain_seq >= {} AND chain_seq <= {} ORDER BY time_ms, id",
                    n.next(),
                    n.next()
                ),
                Some((chain.clone(), *first, *last)),
            )
        }
    }
}

/// Collects links into chunks of [`SCAN_CHUNK`] and sends each full one. `false` once the
/// reader is gone: the scan should stop.
pub(super) struct Chunker {
    tx: Chunks,
    chunk: Vec<ScannedLink>,
}

impl Chunker {
    pub(super) fn new(tx: Chunks) -> Self {
        Self {
            tx,
            chunk: Vec::with_capacity(SCAN_CHUNK),
        }
    }

    /// Adds a link; sends the chunk when full. `false` when the reader is gone.
    pub(super) async fn push(&mut self, link: ScannedLink) -> bool {
        self.chunk.push(link);
        if self.chunk.len() < SCAN_CHUNK {
            return true;
        }
        let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(SCAN_CHUNK));
        self.tx.send(Ok(full)).await.is_ok()
    }

    /// Sends what is left.
    pub(super) async fn finish(self) {
        if !self.chunk.is_empty() {
            let _ = self.tx.send(Ok(self.chunk)).await;
        }
    }
}

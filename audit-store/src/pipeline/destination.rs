//! Where a pipeline writes: a chained SQL store (every [`ChainedStore`] is a destination), or
//! a stream that other processes ingest from (the fleet's `NatsDestination`, feature `nats`).

use std::future::Future;

use crate::Result;
use crate::chain::ChainKeys;
use crate::model::{ChainHead, Checkpoint, Retention, StoredRecord};
use crate::store::ChainedStore;

/// Where the pipeline's batches go.
///
/// The pipeline's batching, enrichment, retries, spool, strict mode, backpressure and gap
/// records work the same whatever the destination: a batch is written with
/// [`write_rows`](Self::write_rows); when that fails (after retries) batches go to the spool,
/// and [`probe`](Self::probe) tells when to replay them. A strict-mode commit resolves when
/// `write_rows` returned `Ok`, so a destination must return only once the rows are durable
/// there (committed by the database; acknowledged by the stream).
///
/// Checkpoints and retention are a chained SQL store's: the provided methods do nothing, and
/// every [`ChainedStore`] implements them through its own methods.
///
/// A destination of your own (a message queue, another database) implements the two required
/// methods:
///
/// ```
/// use audit_store::model::StoredRecord;
/// use audit_store::pipeline::Destination;
///
/// /// Writes records to standard output, one JSON line each.
/// struct Stdout;
///
/// impl Destination for Stdout {
///     async fn write_rows(&self, rows: &[StoredRecord]) -> audit_store::Result<u64> {
///         for row in rows {
///             println!("{}", row.record);
///         }
///         Ok(rows.len() as u64)
///     }
///
///     async fn probe(&self) -> audit_store::Result<()> {
///         Ok(())
///     }
/// }
///
/// # async fn run() -> audit_store::Result<()> {
/// let (sink, pipeline) = audit_store::pipeline::builder(Stdout).build().await?;
/// # Ok(()) }
/// ```
pub trait Destination: Send + Sync + 'static {
    /// Writes `rows` (enriched and flattened records, [`StoredRecord::record`] their JSON) and
    /// returns how many were new. Idempotent by record id: a retried batch must not duplicate
    /// a record. An error that [`is_data_error`](crate::StoreError::is_data_error) makes the
    /// pipeline write the rows one by one and drop those refused; any other error is retried,
    /// then the batch is spooled.
    fn write_rows(&self, rows: &[StoredRecord]) -> impl Future<Output = Result<u64>> + Send;

    /// Whether the destination takes writes again; probed while the pipeline is degraded.
    fn probe(&self) -> impl Future<Output = Result<()>> + Send;

    /// The keys whose spool key authenticates the lines of the pipeline's spool. Defaults to
    /// none: spooled lines carry no MAC (and do not replay into a chained store).
    fn spool_keys(&self) -> Option<&ChainKeys> {
        None
    }

    /// The keys checkpoints are signed with; `None` (the default) signs no checkpoints.
    fn checkpoint_keys(&self) -> Option<&ChainKeys> {
        None
    }

    /// The newest link of every chain, for checkpoints. Defaults to none.
    fn heads(&self) -> impl Future<Output = Result<Vec<ChainHead>>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Stores signed checkpoints. Defaults to doing nothing.
    fn keep_checkpoints(
        &self,
        checkpoints: &[Checkpoint],
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = checkpoints;
        async { Ok(()) }
    }

    /// Whether the destination keeps records, so that retention applies. Defaults to `false`.
    fn keeps_records(&self) -> bool {
        false
    }

    /// Retention: deletes records older than `cutoff_ms` (see [`ChainedStore::retain`]).
    /// Defaults to deleting nothing.
    fn expire(&self, cutoff_ms: i64) -> impl Future<Output = Result<Retention>> + Send {
        let _ = cutoff_ms;
        async { Ok(Retention::default()) }
    }
}

impl<S: ChainedStore> Destination for S {
    fn write_rows(&self, rows: &[StoredRecord]) -> impl Future<Output = Result<u64>> + Send {
        self.insert(rows)
    }

    fn probe(&self) -> impl Future<Output = Result<()>> + Send {
        self.ping()
    }

    fn spool_keys(&self) -> Option<&ChainKeys> {
        self.chain_keys()
    }

    fn checkpoint_keys(&self) -> Option<&ChainKeys> {
        self.chain_keys()
    }

    fn heads(&self) -> impl Future<Output = Result<Vec<ChainHead>>> + Send {
        self.chain_heads()
    }

    fn keep_checkpoints(
        &self,
        checkpoints: &[Checkpoint],
    ) -> impl Future<Output = Result<()>> + Send {
        self.write_checkpoints(checkpoints)
    }

    fn keeps_records(&self) -> bool {
        true
    }

    fn expire(&self, cutoff_ms: i64) -> impl Future<Output = Result<Retention>> + Send {
        self.retain(cutoff_ms)
    }
}

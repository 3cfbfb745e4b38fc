//! [`NatsDestination`]: the pipeline's destination that publishes records to the fleet's
//! JetStream stream, and the stream's creation.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream};

use super::config::FleetConfig;
use super::message;
use crate::chain::{ChainKeys, ChainSecret};
use crate::model::StoredRecord;
use crate::pipeline::Destination;
use crate::{Result, StoreError};

/// Room for a message's headers (its id) under the servers' payload limit, which counts them.
const HEADROOM: usize = 512;

/// Publishes the pipeline's batches to the fleet's JetStream stream (see [the module
/// docs](super)). Cheap to clone: clones share the connection.
///
/// [`write_rows`](Destination::write_rows) packs a batch into messages (see [the module
/// docs](super)), publishes them all (pipelined), then awaits every acknowledgement: it
/// returns once the stream stored them all (on a majority of its replicas), counting the
/// records of messages the stream had already (a duplicate within its window) as not new. A
/// publish error or a missing acknowledgement is a [`StoreError::Stream`]: the pipeline
/// retries, then spools, and replays through here once [`probe`](Destination::probe) (the
/// stream's information) answers. A record larger than the servers' payload limit is refused
/// as data ([`StoreError::StreamRefused`]) before anything of its batch is published: the
/// pipeline then writes the batch record by record, and that one is dropped and reported by a
/// gap record.
///
/// ```no_run
/// use audit_store::fleet::{FleetConfig, NatsDestination};
///
/// # async fn run(secret: audit_store::chain::ChainSecret) -> audit_store::Result<()> {
/// let destination = NatsDestination::connect(FleetConfig::new("nats://127.0.0.1:4222")?)
///     .await?
///     .spool_secret(&secret);
/// let (sink, pipeline) = audit_store::pipeline::builder(destination)
///     .spool("audit-spool", 256 << 20)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsDestination {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    config: Arc<FleetConfig>,
    keys: Option<ChainKeys>,
}

impl std::fmt::Debug for NatsDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDestination")
            .field("config", &self.config)
            .field("authenticated_spool", &self.keys.is_some())
            .finish_non_exhaustive()
    }
}

impl NatsDestination {
    /// Connects to the fleet's servers, in the background: it returns at once, and until a
    /// server answers, writes fail and the pipeline spools. Checks the settings first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] naming a setting that cannot work.
    pub async fn connect(config: FleetConfig) -> Result<Self> {
        let client = config.connect(false).await?;
        Ok(Self::new(client, config))
    }

    /// A destination over a client the application connected itself (its own TLS,
    /// credentials or options).
    pub fn new(client: async_nats::Client, config: FleetConfig) -> Self {
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            // A batch's publishes are all in flight before their acks are awaited: room for
            // a few batches of the pipeline's largest (4,000 records by default), and the
            // permits of acks abandoned by a failed batch back after the request timeout.
            .max_ack_inflight(1 << 16)
            .ack_timeout(config.request_timeout)
            .build(client.clone());
        Self {
            client,
            jetstream,
            config: Arc::new(config),
            keys: None,
        }
    }

    /// Authenticates the spool's lines with the spool key of `keys` (a key derived from the
    /// chain secret for that purpose only), as a chained store's pipeline does: a line
    /// written into the spool by hand is then refused at replay, counted and reported by a
    /// gap record. Defaults to none (lines without a MAC). Give the keys of the secret the
    /// ingestors' store chains with.
    pub fn spool_keys_from(mut self, keys: &ChainKeys) -> Self {
        self.keys = Some(keys.clone());
        self
    }

    /// [`spool_keys_from`](Self::spool_keys_from) the keys of `secret`.
    pub fn spool_secret(self, secret: &ChainSecret) -> Self {
        let keys = ChainKeys::from_secret(secret);
        self.spool_keys_from(&keys)
    }

    /// The largest payload the connected server takes (a little less, for the headers);
    /// 1 MiB, NATS's default, until a server said otherwise.
    fn max_payload(&self) -> usize {
        self.client.max_payload().saturating_sub(HEADROOM)
    }

    /// The fleet's settings.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// The connection, e.g. to read its state or statistics.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Creates the stream (and the dead-letter stream) if missing, as described in [the
    /// module docs](super); an existing stream is left as it is. Returns whether the records'
    /// stream was created.
    ///
    /// # Errors
    ///
    /// [`StoreError::Stream`] when NATS does not answer or refuses (a replica count larger
    /// than the cluster, JetStream not enabled, subjects overlapping another stream's).
    pub async fn ensure_stream(&self) -> Result<bool> {
        ensure_streams(&self.jetstream, &self.config).await
    }
}

/// Creates the records' and the dead-letter streams of `config` when missing; whether the
/// records' stream was created.
pub(crate) async fn ensure_streams(js: &jetstream::Context, config: &FleetConfig) -> Result<bool> {
    let records = stream::Config {
        name: config.stream.clone(),
        description: Some("audit records waiting for an ingestor".to_owned()),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        discard: stream::DiscardPolicy::New,
        max_bytes: config
            .max_bytes
            .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        max_age: config.max_age.unwrap_or(Duration::ZERO),
        ..Default::default()
    };
    let dead = stream::Config {
        name: config.dead_letter_stream.clone(),
        description: Some("audit messages ingestors could not store".to_owned()),
        subjects: vec![config.dead_letter_subject.clone()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        max_age: config.dead_letter_max_age,
        max_bytes: i64::try_from(config.dead_letter_max_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    let created = create_if_missing(js, records).await?;
    create_if_missing(js, dead).await?;
    Ok(created)
}

async fn create_if_missing(js: &jetstream::Context, config: stream::Config) -> Result<bool> {
    let name = config.name.clone();
    match js.get_stream(&name).await {
        Ok(_) => return Ok(false),
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) => {}
        Err(e) => {
            return Err(StoreError::Stream(format!(
                "cannot read the stream {name}: {e}"
            )));
        }
    }
    match js.create_stream(config).await {
        Ok(_) => {
            tracing::info!(target: "audit_store", stream = %name, "created the audit stream");
            Ok(true)
        }
        // Created by another instance meanwhile.
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::CreateStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(StoreError::Stream(format!(
            "cannot create the stream {name}: {e}"
        ))),
    }
}

impl Destination for NatsDestination {
    async fn write_rows(&self, rows: &[StoredRecord]) -> Result<u64> {
        let max_payload = self.max_payload();
        if let Some(row) = rows.iter().find(|r| r.record.len() > max_payload) {
            return Err(StoreError::StreamRefused(format!(
                "record {} has {} bytes, more than the servers' payload limit ({max_payload} bytes)",
                row.id,
                row.record.len()
            )));
        }
        let messages = message::pack(
            rows,
            &self.config,
            self.config.records_per_message,
            self.config.message_bytes.min(max_payload),
        );
        let mut acks = Vec::with_capacity(messages.len());
        for message in messages {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, message.id.as_str());
            let ack = self
                .jetstream
                .publish_with_headers(message.subject, headers, message.payload)
                .await
                .map_err(publish_error)?;
            acks.push((ack, message.records));
        }
        let mut new = 0;
        for (ack, records) in acks {
            let ack = ack.await.map_err(publish_error)?;
            if !ack.duplicate {
                new += records;
            }
        }
        Ok(new)
    }

    async fn probe(&self) -> Result<()> {
        self.jetstream
            .get_stream(&self.config.stream)
            .await
            .map(drop)
            .map_err(|e| {
                StoreError::Stream(format!(
                    "the stream {} does not answer: {e}",
                    self.config.stream
                ))
            })
    }

    fn spool_keys(&self) -> Option<&ChainKeys> {
        self.keys.as_ref()
    }
}

fn publish_error(e: jetstream::context::PublishError) -> StoreError {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => {
            StoreError::StreamRefused(format!("publish refused: {e}"))
        }
        _ => StoreError::Stream(format!("publish failed: {e}")),
    }
}

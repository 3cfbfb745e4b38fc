//! Fleet mode (feature `nats`): app instances publish their records to a NATS JetStream
//! stream, and any number of ingestor processes write them into SQL.
//!
//! ```text
//! app instances:  request → AuditLayer → IngestSink → pipeline ─(NatsDestination)─┐
//!                                                     (spool while NATS is down)   │
//! NATS JetStream: stream AUDIT, subjects audit.records.<partition>, replicated  ◄──┘
//!                 │ durable pull consumer "audit-ingest", shared
//! ingestors:      Ingestor (audit-ingest) → pipeline → chained SQL store → query router
//!                 poison messages → audit.dead (stream AUDIT_DEAD), a gap record
//! ```
//!
//! **Publishing.** The app's pipeline is the usual one ([`pipeline::builder`]) with a
//! [`NatsDestination`] instead of a store: batching, enrichment, retries, the spool,
//! backpressure and gap records are the same. A batch is published as a few messages (the
//! publishes pipelined, then every acknowledgement awaited); see **Messages** below.
//! A strict-mode commit is the stream's acknowledgement, which JetStream sends once the
//! write is stored on a majority of the stream's replicas. While NATS is unreachable, batches
//! go to the spool (authenticated with a key of the chain secret, see
//! [`NatsDestination::spool_keys_from`]) and are replayed through the stream once it answers.
//!
//! On an app instance the pipeline's metrics keep their names: `stored` counts the records
//! the stream acknowledged as new, `duplicates` those its window dropped, `spooled` and
//! `replayed` what waited for NATS; the commit lag is measured to the stream's ack.
//!
//! **Messages.** A message carries the records of one subject, up to [`FleetConfig::records_per_message`]
//! (256) and [`FleetConfig::message_bytes`] (256 KiB): their JSON, one record per line. Its
//! header `Nats-Msg-Id` is the record's id when it carries one; when it carries several, an id
//! derived from all of theirs in order (the first id, the count, 128 bits of their
//! SHA-256). A retried batch packs into the same messages, which the stream's duplicate
//! window drops; records replayed from the spool may be packed differently, and the store
//! skips those it already holds. The stream's cost is mostly per message (its
//! acknowledgement, index entry and deletion, the ingestor's acknowledgement), so packing
//! cuts it by the records per message; `records_per_message(1)` publishes each record alone.
//!
//! **Subjects.** A record goes to `<prefix>.<partition>` (default `audit.records.0` to
//! `audit.records.15`): the partition is a stable hash of its account id (FNV-1a, 64 bits)
//! modulo the number of partitions, and records without an account go to partition 0. One
//! account's records therefore stay in one subject, in publish order.
//!
//! **Ingesting.** An [`Ingestor`] is a durable pull consumer (default name `audit-ingest`)
//! shared by every ingestor process: each message goes to one of them. It feeds the records
//! to an in-process pipeline over the SQL store (enrichment, batched chained writes, retries,
//! checkpoints, retention, gap records), in strict mode, and acknowledges each message only
//! once all its records are committed; the store skips a record it already holds (same id), so a
//! redelivered message is stored once. See [`ingest`] for poison messages, the database
//! being down, and shutdown.
//!
//! **Stream.** [`NatsDestination::ensure_stream`] (the demo and `audit-ingest
//! --create-stream` call it) creates the stream if it is missing: file storage, work-queue
//! retention (a message is deleted once an ingestor acknowledged it, so the stream holds only
//! what is not in SQL yet), the configured replicas (3 in a cluster), a duplicate window of
//! 2 minutes, discard-new when full (publishers then get errors and spool locally instead of
//! the stream dropping old records), and no age limit unless [`FleetConfig::max_age`] sets
//! one; beside it the dead-letter stream (`AUDIT_DEAD`, limits retention: 30 days, 1 GiB).
//!
//! ```no_run
//! use audit_store::fleet::{FleetConfig, NatsDestination};
//! use audit_store::pipeline;
//!
//! # async fn run(keys: audit_store::chain::ChainKeys) -> audit_store::Result<()> {
//! let fleet = FleetConfig::new("nats://10.0.0.1:4222,nats://10.0.0.2:4222")?.replicas(3);
//! let destination = NatsDestination::connect(fleet).await?.spool_keys_from(&keys);
//! destination.ensure_stream().await?;
//! let (sink, pipeline) = pipeline::builder(destination)
//!     .spool("audit-spool", 256 << 20)
//!     .build()
//!     .await?;
//! tokio::spawn(pipeline.run());
//! // give `sink` to the AuditLayer
//! # Ok(()) }
//! ```
//!
//! [`pipeline::builder`]: crate::pipeline::builder

mod config;
mod destination;
pub mod ingest;
mod message;
mod subject;

pub use config::{
    DEFAULT_DEAD_LETTER_SUBJECT, DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX, FleetConfig,
};
pub use destination::NatsDestination;
pub use ingest::{DEFAULT_CONSUMER, Ingestor, IngestorBuilder, IngestorMetrics, IngestorMonitor};
pub use message::MAX_RECORDS_PER_MESSAGE;
pub use subject::{partition, redact_url};

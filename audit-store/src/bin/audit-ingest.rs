//! `audit-ingest`: the fleet's ingestor. Pulls audit records from a NATS JetStream stream (a
//! durable consumer shared by every `audit-ingest` process) and writes them into the audit
//! database through the ingest pipeline (chained, batched, exactly once by record id),
//! acknowledging each message once all its records are committed.
//!
//! ```text
//! AUDIT_CHAIN_SECRET=@/etc/audit/chain.secret \
//! audit-ingest --nats-url nats://10.0.0.1:4222,nats://10.0.0.2:4222 \
//!     --database-url postgres://audit@db/audit --writers 2
//! ```
//!
//! Every setting is also an environment variable (`--help` lists them). Exit status: 0 after
//! a clean shutdown (SIGTERM or SIGINT: the batch in hand is committed and acknowledged
//! first), 2 when it cannot start (a bad setting, named; NATS or the database unreachable).

// The settings' doc comments are their `--help` text, read in a terminal: `<PREFIX>` there is
// a placeholder, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use audit_store::chain::{ChainKeys, ChainSecret, JsonLinesCheckpoints};
use audit_store::fleet::{FleetConfig, IngestorMetrics, ingest, redact_url};
use audit_store::store::{ChainedStore, TableNames};
use audit_store::{PostgresStore, SqliteStore};
use clap::Parser;

/// mimalloc rather than the system allocator: records are parsed on one thread and freed on
/// another, which glibc's allocator made a fifth of the ingestor's CPU per row (`loadbench
/// --variants bare,audit-nats --nats-ingest backlog`, with and without; BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ingests audit records from a NATS JetStream stream into the audit database.
///
/// Run as many as the database absorbs: they share one durable consumer, each message goes
/// to one of them, and a message (one or more records, one per line) is acknowledged only
/// after its records are committed (a record delivered twice is stored once). Poison records
/// (unparseable, too large, refused by the database) go to the dead-letter subject, with a
/// gap record in the account's log.
/// SIGTERM or SIGINT stops pulling, commits and acknowledges what was taken, then exits.
#[derive(Debug, Parser)]
#[command(name = "audit-ingest", version)]
struct Args {
    /// NATS servers: comma-separated seed URLs (nats://host:4222, tls://host:4222,
    /// nats://user:password@host:4222). Credentials are never printed.
    #[arg(long, env = "AUDIT_NATS_URL", hide_env_values = true)]
    nats_url: String,
    /// The audit database: postgres://user@host/db or sqlite://path/to/audit.db (created and
    /// migrated if needed).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The chain secret the database's records are chained and sealed with (64 hex digits),
    /// or @FILE holding it (a file readable by its owner only). The same secret as the
    /// app instances' (their spool key derives from it). Prefer the environment variable
    /// or a file: a command line is visible to other users. Never printed.
    #[arg(long, env = "AUDIT_CHAIN_SECRET", hide_env_values = true)]
    chain_secret: Option<String>,
    /// Write records unchained (no hash chain, no checkpoints) instead of requiring
    /// --chain-secret.
    #[arg(long, env = "AUDIT_UNCHAINED", conflicts_with = "chain_secret")]
    unchained: bool,
    /// The JetStream stream records are published to.
    #[arg(long, env = "AUDIT_STREAM", default_value = "AUDIT")]
    stream: String,
    /// The records' subject prefix: records are published to <PREFIX>.<partition>.
    #[arg(long, env = "AUDIT_SUBJECT_PREFIX", default_value = "audit.records")]
    subject_prefix: String,
    /// The durable consumer's name, shared by every ingestor of the fleet.
    #[arg(long, env = "AUDIT_CONSUMER", default_value = "audit-ingest")]
    consumer: String,
    /// Where poison records go (kept by the stream <STREAM>_DEAD).
    #[arg(long, env = "AUDIT_DEAD_LETTER_SUBJECT", default_value = "audit.dead")]
    dead_letter_subject: String,
    /// Create the stream and the dead-letter stream when missing (file storage, work-queue
    /// retention, 2-minute duplicate window, --replicas replicas).
    #[arg(long, env = "AUDIT_CREATE_STREAM")]
    create_stream: bool,
    /// Replicas of the streams --create-stream creates: 3 in a three-node cluster.
    #[arg(long, env = "AUDIT_NATS_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// The most bytes the stream --create-stream creates holds (records not yet ingested);
    /// when full, app instances spool locally. Default: the server's JetStream limit.
    #[arg(long, env = "AUDIT_STREAM_MAX_BYTES")]
    stream_max_bytes: Option<u64>,
    /// The most messages pulled at once, and the records committed as one group.
    #[arg(long, env = "AUDIT_INGEST_BATCH_SIZE", default_value_t = 1000)]
    batch_size: usize,
    /// The most records waiting for their commit in this process.
    #[arg(long, env = "AUDIT_INGEST_IN_FLIGHT", default_value_t = 8000)]
    in_flight: usize,
    /// The most bytes of messages waiting for their commit in this process (at least 1 MiB).
    #[arg(long, env = "AUDIT_INGEST_IN_FLIGHT_BYTES", default_value_t = 64 << 20)]
    in_flight_bytes: usize,
    /// Concurrent database writers (1 for SQLite; 2 to 4 for PostgreSQL).
    #[arg(long, env = "AUDIT_INGEST_WRITERS", default_value_t = 1)]
    writers: usize,
    /// Seconds JetStream waits for an acknowledgement before handing a message to another
    /// ingestor (set when the consumer is created).
    #[arg(long, env = "AUDIT_ACK_WAIT", default_value_t = 30)]
    ack_wait: u64,
    /// The most messages handed out and not yet acknowledged, over all ingestors (set when
    /// the consumer is created).
    #[arg(long, env = "AUDIT_MAX_ACK_PENDING", default_value_t = 20_000)]
    max_ack_pending: i64,
    /// Records larger than this many bytes are poison.
    #[arg(long, env = "AUDIT_MAX_RECORD_BYTES", default_value_t = 1 << 20)]
    max_record_bytes: usize,
    /// Seconds a shutdown waits for the records taken to be committed; what is not is left
    /// to the stream and redelivered.
    #[arg(long, env = "AUDIT_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    shutdown_timeout: u64,
    /// Also keep the signed chain checkpoints in this JSON-lines file (outside the database).
    #[arg(long, env = "AUDIT_CHECKPOINTS")]
    checkpoints: Option<PathBuf>,
    /// The prefix of the store's tables, when the app gave it one.
    #[arg(long, env = "AUDIT_TABLE_PREFIX", default_value = audit_store::store::DEFAULT_PREFIX)]
    table_prefix: String,
    /// The PostgreSQL schema of the store's tables, when the app gave it one.
    #[arg(long, env = "AUDIT_SCHEMA")]
    schema: Option<String>,
}

/// Everything the arguments configure, checked.
struct Settings {
    fleet: FleetConfig,
    keys: Option<ChainKeys>,
    names: TableNames,
}

fn settings(args: &Args) -> Result<Settings, String> {
    let fleet = FleetConfig::new(&args.nats_url)
        .map_err(|e| format!("--nats-url/AUDIT_NATS_URL: {e}"))?
        .stream(&args.stream)
        .subject_prefix(&args.subject_prefix)
        .dead_letter_subject(&args.dead_letter_subject)
        .replicas(args.replicas)
        .max_bytes(args.stream_max_bytes)
        .client_name("audit-ingest");
    fleet.validate().map_err(|e| e.to_string())?;
    let keys = match (&args.chain_secret, args.unchained) {
        (_, true) => None,
        (None, false) => {
            return Err("missing --chain-secret/AUDIT_CHAIN_SECRET: give the chain secret (64 hex digits, or @FILE), or --unchained to write records without a hash chain".to_owned());
        }
        (Some(value), false) => {
            let secret = match value.strip_prefix('@') {
                Some(path) => ChainSecret::from_file(path)
                    .map_err(|e| format!("--chain-secret/AUDIT_CHAIN_SECRET: {e}"))?,
                None => ChainSecret::from_hex(value.trim()).map_err(|_| {
                    "invalid value for --chain-secret/AUDIT_CHAIN_SECRET: expected 64 hex digits or @FILE (the value is not shown)".to_owned()
                })?,
            };
            Some(ChainKeys::from_secret(&secret))
        }
    };
    let names = TableNames::new()
        .prefix(&args.table_prefix)
        .map_err(|e| format!("--table-prefix/AUDIT_TABLE_PREFIX: {e}"))?;
    let names = match &args.schema {
        None => names,
        Some(schema) => names
            .schema(schema)
            .map_err(|e| format!("--schema/AUDIT_SCHEMA: {e}"))?,
    };
    Ok(Settings { fleet, keys, names })
}

async fn main_inner(args: Args) -> Result<IngestorMetrics, String> {
    let Settings { fleet, keys, names } = settings(&args)?;
    let url = args.database_url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url)
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to --database-url/DATABASE_URL {}: {e}",
                    redact_url(url)
                )
            })?
            .table_names(names);
        let store = match keys {
            Some(keys) => store.chained(keys),
            None => store,
        };
        ingest_into(store, fleet, &args).await
    } else if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url)
            .await
            .map_err(|e| format!("cannot open --database-url/DATABASE_URL {url}: {e}"))?
            .table_names(names)
            .map_err(|e| format!("--schema/AUDIT_SCHEMA: {e}"))?;
        let store = match keys {
            Some(keys) => store.chained(keys),
            None => store,
        };
        ingest_into(store, fleet, &args).await
    } else {
        Err(format!(
            "invalid value for --database-url/DATABASE_URL: expected postgres://USER@HOST/DB or sqlite://FILE, got {:?}",
            redact_url(url)
        ))
    }
}

async fn ingest_into<S: ChainedStore>(
    store: S,
    fleet: FleetConfig,
    args: &Args,
) -> Result<IngestorMetrics, String> {
    store.migrate().await.map_err(|e| {
        format!("cannot migrate the audit database (--database-url/DATABASE_URL): {e}")
    })?;
    let servers = fleet.redacted_servers();
    let stream = fleet.stream_name().to_owned();
    let writers = args.writers;
    let checkpoints = args.checkpoints.clone();
    let ingestor = ingest::builder(store, fleet)
        .consumer(&args.consumer)
        .batch_size(args.batch_size)
        .in_flight(args.in_flight)
        .in_flight_bytes(args.in_flight_bytes)
        .ack_wait(Duration::from_secs(args.ack_wait))
        .max_ack_pending(args.max_ack_pending)
        .max_record_bytes(args.max_record_bytes)
        .shutdown_timeout(Duration::from_secs(args.shutdown_timeout))
        .create_stream(args.create_stream)
        .pipeline(move |p| {
            let p = p.writers(writers);
            match checkpoints {
                Some(path) => p.checkpoint_sink(JsonLinesCheckpoints::new(path)),
                None => p,
            }
        })
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "audit-ingest: consuming stream {stream} (consumer {}) from {servers} into {}",
        args.consumer,
        redact_url(&args.database_url)
    );
    ingestor
        .run(audit_store::start::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Warnings and errors (a database down, a poison message) to standard error; RUST_LOG
    // says otherwise.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("audit-ingest: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(main_inner(args)) {
        Ok(m) => {
            println!(
                "audit-ingest: stopped; fetched {} messages ({} records) acked {} stored {} duplicates {} dead-lettered {} gap records {}",
                m.fetched,
                m.records,
                m.acked,
                m.pipeline.stored,
                m.pipeline.duplicates,
                m.dead_lettered,
                m.pipeline.gap_records
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("audit-ingest: {e}");
            ExitCode::from(2)
        }
    }
}

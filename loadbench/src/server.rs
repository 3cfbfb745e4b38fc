//! The server under test: the same handlers behind each variant's stack.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use audit_layer::sink::DiscardSink;
use audit_layer::spec::OpenApiDocument;
use audit_layer::{AuditFlush, AuditLayer};
use audit_store::fleet::NatsDestination;
use audit_store::model::StoredRecord;
use audit_store::pipeline::{self, Destination, IngestSink};
use audit_store::store::AuditStore;
use audit_store::store::intercept::{Intercepted, Interceptor};
use audit_store::{PostgresStore, SqliteStore};
use axum::Router;
use axum::routing::{get, post};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::api::{COLLECTION_ROUTE, ITEM_ROUTE, create_policy, get_policy};
use crate::flags::Flags;
use crate::{BoxError, ServerReport, Variant, unix_ms};

/// The API description the audit variants compile their policy from. Only leaves are marked
/// auditable: `description`, the webhook `url` and the query are never recorded.
const SPEC: &str = r##"{
  "openapi": "3.0.3",
  "info": {"title": "loadbench", "version": "1"},
  "paths": {
    "/accounts/{account_id}/alerting/v3/policies": {
      "post": {
        "summary": "Create a Notification policy",
        "parameters": [{"name": "account_id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Policy"}}}},
        "responses": {"200": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Created"}}}}}
      }
    },
    "/accounts/{account_id}/alerting/v3/policies/{policy_id}": {
      "get": {
        "summary": "Get a Notification policy",
        "parameters": [
          {"name": "account_id", "in": "path", "required": true, "schema": {"type": "string"}},
          {"name": "policy_id", "in": "path", "required": true, "schema": {"type": "string"}}
        ],
        "responses": {"200": {"description": "the policy", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PolicyView"}}}}}
      }
    }
  },
  "components": {
    "schemas": {
      "Policy": {
        "type": "object",
        "properties": {
          "name": {"type": "string", "x-auditable": true},
          "description": {"type": "string"},
          "enabled": {"type": "boolean", "x-auditable": true},
          "alert_type": {"type": "string", "x-auditable": true},
          "filters": {
            "type": "object",
            "properties": {
              "services": {"type": "array", "items": {"type": "string"}, "x-auditable": true},
              "zones": {"type": "array", "items": {"type": "string"}, "x-auditable": true}
            }
          },
          "mechanisms": {
            "type": "object",
            "properties": {
              "webhooks": {
                "type": "array",
                "items": {
                  "type": "object",
                  "properties": {
                    "id": {"type": "string", "x-auditable": true},
                    "url": {"type": "string"}
                  }
                }
              }
            }
          }
        }
      },
      "Created": {"type": "object", "properties": {"id": {"type": "string", "x-auditable": true}}},
      "PolicyView": {
        "type": "object",
        "properties": {
          "id": {"type": "string", "x-auditable": true},
          "name": {"type": "string", "x-auditable": true},
          "enabled": {"type": "boolean", "x-auditable": true}
        }
      }
    }
  }
}"##;

/// The handlers every variant shares.
fn app() -> Router {
    Router::new()
        .route(ITEM_ROUTE, get(get_policy))
        .route(COLLECTION_ROUTE, post(create_policy))
}

/// Options of `loadbench serve`.
#[derive(Debug)]
struct ServeArgs {
    variant: Variant,
    listen: SocketAddr,
    report: PathBuf,
    data_dir: PathBuf,
    postgres_url: Option<String>,
    nats_url: Option<String>,
    queue_capacity: usize,
    batch_size: usize,
    spool_budget: u64,
    backpressure_ms: u64,
    writers: usize,
}

impl ServeArgs {
    fn parse(args: &[String]) -> Result<Self, BoxError> {
        let mut variant = None;
        let mut listen = None;
        let mut report = None;
        let mut data_dir = None;
        let mut postgres_url = None;
        let mut nats_url = None;
        let mut queue_capacity = 8192;
        let mut batch_size = 4000;
        let mut spool_budget = 256 << 20;
        let mut backpressure_ms = 0;
        let mut writers = 0;
        let mut flags = Flags::new(args);
        while let Some(flag) = flags.flag() {
            match flag {
                "--variant" => variant = Some(Variant::parse(flags.value(flag)?)?),
                "--listen" => listen = Some(flags.parse(flag)?),
                "--report" => report = Some(PathBuf::from(flags.value(flag)?)),
                "--data-dir" => data_dir = Some(PathBuf::from(flags.value(flag)?)),
                "--postgres-url" => postgres_url = Some(flags.value(flag)?.to_owned()),
                "--nats-url" => nats_url = Some(flags.value(flag)?.to_owned()),
                "--queue-capacity" => queue_capacity = flags.parse(flag)?,
                "--batch-size" => batch_size = flags.parse(flag)?,
                "--spool-budget" => spool_budget = flags.parse(flag)?,
                "--backpressure" => backpressure_ms = flags.parse(flag)?,
                "--writers" => writers = flags.parse(flag)?,
                other => return Err(format!("serve: unknown option {other:?}").into()),
            }
        }
        Ok(Self {
            variant: variant.ok_or("serve: --variant is required")?,
            listen: listen.ok_or("serve: --listen is required")?,
            report: report.ok_or("serve: --report is required")?,
            data_dir: data_dir.ok_or("serve: --data-dir is required")?,
            postgres_url,
            nats_url,
            queue_capacity,
            batch_size,
            spool_budget,
            backpressure_ms,
            writers,
        })
    }
}

/// `loadbench serve ...`: serves until `SIGTERM`, flushes, writes the report, exits.
pub(crate) fn main(args: &[String]) -> Result<ExitCode, BoxError> {
    let args = ServeArgs::parse(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

/// What the audit variants keep to flush and report at exit.
struct Ingest {
    sink: IngestSink,
    worker: tokio::task::JoinHandle<()>,
    commits: Arc<Mutex<CommitLog>>,
    /// The layer's, once it is built: handlers whose clients left, and open summaries.
    flush: Option<AuditFlush>,
}

impl Ingest {
    /// Flushes the pipeline and notes its counters and commit log in `report`.
    async fn finish(self, report: &mut ServerReport) -> Result<(), BoxError> {
        if let Some(flush) = &self.flush {
            flush.flush(audit_layer::DEFAULT_DETACHED_TIMEOUT).await;
        }
        self.sink.shutdown().await;
        self.worker.await?;
        let metrics = self.sink.metrics();
        report.enqueued = metrics.enqueued;
        report.stored = metrics.stored;
        report.dropped = metrics.dropped;
        report.spooled = metrics.spooled;
        report.waited = metrics.waited;
        report.waits_timed_out = metrics.waits_timed_out;
        report.gap_records = metrics.gap_records;
        let log = std::mem::take(&mut *self.commits.lock().unwrap_or_else(PoisonError::into_inner));
        report.lags_ms = log.lags_ms;
        report.commits = log.commits;
        Ok(())
    }
}

async fn serve(args: ServeArgs) -> Result<(), BoxError> {
    std::fs::create_dir_all(&args.data_dir)?;
    let trace_guard = init_tracing(&args);
    let (app, ingest) = stack(&args).await?;

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
        }
    })
    .await?;

    let flush_started = Instant::now();
    let mut report = ServerReport::default();
    if let Some(ingest) = ingest {
        ingest.finish(&mut report).await?;
    }
    report.shutdown_ms = u64::try_from(flush_started.elapsed().as_millis()).unwrap_or(u64::MAX);
    drop(trace_guard);
    let (cpu_ticks, peak_rss_kib) = crate::usage::process_usage(std::process::id())?;
    report.cpu_ticks = cpu_ticks;
    report.peak_rss_kib = peak_rss_kib;
    std::fs::write(&args.report, serde_json::to_vec(&report)?)?;
    Ok(())
}

/// The `trace` variant logs at INFO into a non-blocking file appender (its guard is returned,
/// to flush at exit); every other variant logs warnings to stderr only, so INFO call sites
/// stay disabled.
fn init_tracing(args: &ServeArgs) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    if args.variant == Variant::Trace {
        let appender = tracing_appender::rolling::never(&args.data_dir, "trace.log");
        let (writer, guard) = tracing_appender::non_blocking(appender);
        tracing_subscriber::fmt()
            .with_max_level(Level::INFO)
            .with_ansi(false)
            .with_writer(writer)
            .init();
        Some(guard)
    } else {
        tracing_subscriber::fmt()
            .with_max_level(Level::WARN)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
        None
    }
}

/// The handlers behind the variant's stack, and the pipeline of the storing variants.
async fn stack(args: &ServeArgs) -> Result<(Router, Option<Ingest>), BoxError> {
    Ok(match args.variant {
        Variant::Bare => (app(), None),
        Variant::Trace => (
            app().layer(
                TraceLayer::new_for_http()
                    .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                    .on_response(DefaultOnResponse::new().level(Level::INFO)),
            ),
            None,
        ),
        Variant::AuditDiscard => (app().layer(audit_layer()?.sink(DiscardSink)), None),
        Variant::AuditSqlite => {
            let store = SqliteStore::open(args.data_dir.join("audit.db")).await?;
            store.migrate().await?;
            audited(start_pipeline(|log| Intercepted::new(store, log), args, 1).await?)?
        }
        Variant::AuditPostgres => {
            let url = args
                .postgres_url
                .as_deref()
                .ok_or("audit-postgres needs --postgres-url")?;
            let store = PostgresStore::connect(url).await?;
            store.migrate().await?;
            audited(start_pipeline(|log| Intercepted::new(store, log), args, 3).await?)?
        }
        Variant::AuditNats => {
            let url = args
                .nats_url
                .as_deref()
                .ok_or("audit-nats needs --nats-url")?;
            let destination = NatsDestination::connect(crate::nats::fleet(url)?).await?;
            // A cluster elects its JetStream leader a moment after its nodes answer.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while let Err(e) = destination.ensure_stream().await {
                if std::time::Instant::now() > deadline {
                    return Err(e.into());
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            audited(start_pipeline(|log| Published { destination, log }, args, 1).await?)?
        }
        Variant::Rune => (
            app().layer(rune_axum_audit::AuditLayer::new(RuneStdout)),
            None,
        ),
    })
}

/// The handlers behind the audit layer, into the pipeline.
fn audited(mut ingest: Ingest) -> Result<(Router, Option<Ingest>), BoxError> {
    let layer = audit_layer()?.sink(ingest.sink.clone());
    ingest.flush = Some(layer.flush_handle());
    Ok((app().layer(layer), Some(ingest)))
}

/// The audit layer of the audited variants. The load generator, on this host, stands in for a
/// trusted proxy: the layer keeps the `x-request-id` it gives each request as `raw.cf_ray_id`
/// only from a trusted peer, and the records are matched to the requests by it.
fn audit_layer() -> Result<AuditLayer, BoxError> {
    Ok(AuditLayer::new(spec()?).trusted_proxies(["127.0.0.1/32".parse()?, "::1/128".parse()?]))
}

/// rune-axum-audit's own `StdoutSink`, made `Clone`: its `AuditLayer` derives `Clone` with a
/// `Sink: Clone` bound that `StdoutSink` does not meet, so `Router::layer(AuditLayer::stdout())`
/// does not compile as documented.
#[derive(Clone, Copy, Debug)]
struct RuneStdout;

impl rune_axum_audit::AuditSink for RuneStdout {
    fn record(&self, event: rune_axum_audit::AuditEvent) {
        rune_axum_audit::StdoutSink.record(event);
    }
}

fn spec() -> Result<OpenApiDocument, BoxError> {
    Ok(OpenApiDocument::from_json_str(SPEC)?)
}

/// The pipeline as an app would configure it: a bounded queue, a spool, and `default_writers`
/// unless `--writers` says otherwise, into the destination `destination` builds around the
/// log of commit times it is given.
async fn start_pipeline<D: Destination>(
    destination: impl FnOnce(CommitTimes) -> D,
    args: &ServeArgs,
    default_writers: usize,
) -> Result<Ingest, BoxError> {
    let commits = Arc::new(Mutex::new(CommitLog::default()));
    let store = destination(CommitTimes(Arc::clone(&commits)));
    let writers = if args.writers == 0 {
        default_writers
    } else {
        args.writers
    };
    let mut builder = pipeline::builder(store)
        .queue_capacity(args.queue_capacity)
        .batch_size(args.batch_size)
        .writers(writers)
        .spool(args.data_dir.join("spool"), args.spool_budget);
    if args.backpressure_ms > 0 {
        builder = builder.backpressure(Duration::from_millis(args.backpressure_ms));
    }
    let (sink, pipeline) = builder.build().await?;
    let worker = tokio::spawn(pipeline.run());
    Ok(Ingest {
        sink,
        worker,
        commits,
        flush: None,
    })
}

/// Commit times as the server (or the ingestor) saw them.
#[derive(Debug, Default)]
pub(crate) struct CommitLog {
    pub(crate) lags_ms: Vec<u32>,
    pub(crate) commits: Vec<(i64, u64)>,
    committed: u64,
}

/// Notes, for every batch a store commits (or the stream acknowledges), when the write
/// returned and how old each record was by then (that time minus the record's
/// `action.time`, the request's start).
#[derive(Clone, Debug)]
pub(crate) struct CommitTimes(pub(crate) Arc<Mutex<CommitLog>>);

impl CommitTimes {
    /// Notes that `records` were written now, `new` of them for the first time.
    fn note(&self, records: &[StoredRecord], new: u64) {
        let now = unix_ms();
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for record in records.iter().filter(|r| r.action_type != "gap") {
            log.lags_ms
                .push(u32::try_from((now - record.time_ms).max(0)).unwrap_or(u32::MAX));
        }
        log.committed += new;
        let committed = log.committed;
        log.commits.push((now, committed));
    }

    /// The log so far, taken out.
    pub(crate) fn take(&self) -> CommitLog {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Interceptor for CommitTimes {
    async fn insert<S: AuditStore>(
        &self,
        inner: &S,
        records: &[StoredRecord],
    ) -> audit_store::Result<u64> {
        let new = inner.insert(records).await?;
        self.note(records, new);
        Ok(new)
    }
}

/// The NATS destination, its acknowledged publishes noted in the commit log (the stream's
/// acknowledgement is the app's commit in fleet mode).
struct Published {
    destination: NatsDestination,
    log: CommitTimes,
}

impl Destination for Published {
    async fn write_rows(&self, rows: &[StoredRecord]) -> audit_store::Result<u64> {
        let new = self.destination.write_rows(rows).await?;
        self.log.note(rows, new);
        Ok(new)
    }

    async fn probe(&self) -> audit_store::Result<()> {
        self.destination.probe().await
    }
}

/// How long the driver waits for a server to flush and exit after `SIGTERM`.
pub(crate) const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

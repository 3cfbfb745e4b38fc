//! Starting and stopping the app: open, migrate and seed the app's database, open the audit
//! store, run the audit pipeline, serve [`crate::app::router`] until SIGINT or SIGTERM, then
//! finish in-flight requests and flush the pipeline.

use std::net::SocketAddr;
use std::time::Duration;

use audit_store::chain::JsonLinesCheckpoints;
use audit_store::fleet::{FleetConfig, NatsDestination};
use audit_store::pipeline::{self, IngestSink};
use audit_store::store::ExportPositions;
use audit_store::{PostgresStore, SqliteStore};

use crate::app::{self, AppDirectory};
use crate::audit_chain::chain_keys;
use crate::banner::Banner;
use crate::config::{Config, Database, StartError, redact_url};
use crate::db::{self, Db, SeededAccount};
use crate::push::PushJobs;
use crate::state::AppState;

/// How long the shutdown waits for handlers whose clients left to finish (the audit layer's
/// detached timeout).
const FLUSH_WITHIN: Duration = audit_layer::DEFAULT_DETACHED_TIMEOUT;

/// Opens the databases, seeds, and serves until SIGINT or SIGTERM.
pub(crate) async fn start(config: Config) -> Result<(), StartError> {
    create_private_dir(&config.data_dir).map_err(|e| {
        StartError::Config(format!(
            "invalid value for --data-dir/DEMO_DATA_DIR: cannot create {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let (db, described) = open_app_db(&config).await?;
    db.migrate()
        .await
        .map_err(|e| StartError::runtime("cannot migrate the app database", &e))?;
    let seeded = db::seed(&db, &config.seed)
        .await
        .map_err(|e| StartError::runtime("cannot seed the app database", &e))?;
    let mut state = AppState::new(db.clone());
    state.max_failed_deliveries = config.jobs.max_failed_deliveries;
    let keys = chain_keys(&config)?;
    match &config.database {
        Database::Postgres(url) => {
            let store = PostgresStore::connect(url)
                .await
                .map_err(|e| {
                    StartError::runtime("cannot open the audit database (DATABASE_URL)", &e)
                })?
                .chained(keys);
            let where_ = format!("{described} (tables audit_logs*)");
            serve(config, state, store, &described, &where_, &seeded).await
        }
        Database::Sqlite { .. } => {
            let path = config.data_dir.join("audit.db");
            let store = SqliteStore::open(&path)
                .await
                .map_err(|e| {
                    StartError::runtime(
                        &format!("cannot open the audit database {}", path.display()),
                        &e,
                    )
                })?
                .chained(keys);
            let where_ = format!("sqlite {}", path.display());
            serve(config, state, store, &described, &where_, &seeded).await
        }
    }
}

/// Creates `dir` and its missing parents, accessible by the owner only: it holds the
/// databases, the spool and the chain's secret. An existing directory is left as it is.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The app's database, and where it is, for people (a URL without its password).
async fn open_app_db(config: &Config) -> Result<(Db, String), StartError> {
    match &config.database {
        Database::Sqlite { app: None } => {
            let path = config.data_dir.join("app.db");
            let db = Db::open_sqlite(&path).await.map_err(|e| {
                StartError::runtime(
                    &format!("cannot open the app database {}", path.display()),
                    &e,
                )
            })?;
            Ok((db, format!("sqlite {}", path.display())))
        }
        Database::Sqlite { app: Some(url) } | Database::Postgres(url) => {
            let db = Db::connect(url).await.map_err(|e| {
                StartError::runtime(&format!("cannot open DATABASE_URL {}", redact_url(url)), &e)
            })?;
            Ok((db, redact_url(url)))
        }
    }
}

/// Runs the audit pipeline into `store` and serves the app until a shutdown signal; then
/// finishes in-flight requests and flushes the pipeline.
async fn serve<S: ExportPositions>(
    mut config: Config,
    state: AppState,
    store: S,
    app_db: &str,
    audit_db: &str,
    seeded: &[SeededAccount],
) -> Result<(), StartError> {
    store
        .migrate()
        .await
        .map_err(|e| StartError::runtime("cannot migrate the audit database", &e))?;
    let spool = config.data_dir.join("spool");
    let (sink, worker, audit_db) = match config.fleet.clone() {
        None => {
            let (sink, pipeline) = pipeline::builder(store.clone())
                .spool(&spool, config.spool_budget)
                .directory(AppDirectory(state.db.clone()))
                .checkpoint_sink(JsonLinesCheckpoints::new(
                    config.data_dir.join("checkpoints.jsonl"),
                ))
                .build()
                .await
                .map_err(|e| StartError::runtime("cannot start the audit pipeline", &e))?;
            (sink, tokio::spawn(pipeline.run()), audit_db.to_owned())
        }
        Some(fleet) => {
            let (sink, worker, nats) =
                publish_to_nats(fleet, &store, &state, &spool, &config).await?;
            (
                sink,
                worker,
                format!("{audit_db}, written by audit-ingest from {nats}"),
            )
        }
    };
    let audit_db = audit_db.as_str();
    let categories = app::product_categories().map_err(|e| {
        StartError::runtime(
            "the OpenAPI document does not compile into an audit policy",
            &e,
        )
    })?;
    let push = PushJobs::start(std::mem::take(&mut config.push), &store, &sink)
        .map_err(|e| StartError::Config(e.0))?;
    let audit_log = app::audit_log_router(
        store,
        state.clone(),
        JsonLinesCheckpoints::new(config.data_dir.join("checkpoints.jsonl")),
        categories,
    );
    let bounds = &config.bounds;
    let state_for_jobs = state.clone();
    let (app, flush) = app::router(state, sink.clone(), audit_log, |layer| {
        layer
            .strict(config.strict)
            .body_read_timeout(bounds.body_read_timeout)
            .body_budget(bounds.body_budget)
            .failed_auth_rate(bounds.failed_auth_rate)
            .failed_auth_window(bounds.failed_auth_window)
    })
    .map_err(|e| {
        StartError::runtime(
            "the OpenAPI document does not compile into an audit policy",
            &e,
        )
    })?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            StartError::runtime(
                &format!("cannot listen on {} (--listen/DEMO_LISTEN)", config.listen),
                &e,
            )
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError::runtime("cannot read the listening address", &e))?;
    Banner {
        config: &config,
        local,
        app_db,
        audit_db,
        spool: &spool,
        seeded,
    }
    .print();

    let sweep = tokio::spawn(crate::jobs::sweep_expired_tokens(
        state_for_jobs,
        config.jobs.sweep_interval,
    ));
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await;
    tracing::info!(target: "demo_app", "stopped accepting; flushing the audit pipeline");
    sweep.abort();
    // Handlers whose clients left finish, and the layer's summaries go out, before the sink
    // shuts down.
    flush.flush(FLUSH_WITHIN).await;
    // The alert job records its notifications through the sink: it stops first.
    push.stop().await;
    sink.shutdown().await;
    let _ = worker.await;
    served.map_err(|e| StartError::runtime("the server failed", &e))
}

/// Fleet mode: the same pipeline (spool, strict mode, backpressure, gap records) with the
/// NATS stream as its destination, creating the stream when missing (when NATS is down at
/// start, records spool and the stream is created by the first ingestor or the next start).
/// Returns the sink, the pipeline's task, and where records go, for people.
async fn publish_to_nats<S: ExportPositions>(
    fleet: FleetConfig,
    store: &S,
    state: &AppState,
    spool: &std::path::Path,
    config: &Config,
) -> Result<(IngestSink, tokio::task::JoinHandle<()>, String), StartError> {
    let nats = format!(
        "NATS stream {} at {}",
        fleet.stream_name(),
        fleet.redacted_servers()
    );
    let mut destination = NatsDestination::connect(fleet)
        .await
        .map_err(|e| StartError::runtime("cannot use --nats-url/AUDIT_NATS_URL", &e))?;
    if let Some(keys) = store.chain_keys() {
        // The spool's lines are authenticated as with the database.
        destination = destination.spool_keys_from(keys);
    }
    if let Err(e) = destination.ensure_stream().await {
        tracing::warn!(target: "demo_app", "cannot create the audit stream now (records spool until NATS answers): {e}");
    }
    let (sink, pipeline) = pipeline::builder(destination)
        .spool(spool, config.spool_budget)
        .directory(AppDirectory(state.db.clone()))
        .build()
        .await
        .map_err(|e| StartError::runtime("cannot start the audit pipeline", &e))?;
    Ok((sink, tokio::spawn(pipeline.run()), nats))
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

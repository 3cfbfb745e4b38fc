//! Starting and stopping the app: open, migrate and seed the app's database, start the audit
//! log ([`AuditLog`]: the store, its pipeline and its query API), serve [`crate::app::router`]
//! until SIGINT or SIGTERM, then finish in-flight requests and flush the pipeline.

use std::net::SocketAddr;
use std::time::Duration;

use audit_layer::ProductCategories;
use audit_store::chain::JsonLinesCheckpoints;
use audit_store::fleet::{FleetConfig, NatsDestination};
use audit_store::store::ExportPositions;
use audit_store::{AuditLog, AuditLogBuilder};

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
            let audit = AuditLog::postgres(url.as_str()).chained(keys);
            let where_ = format!("{described} (tables audit_logs*)");
            serve(config, state, audit, &described, &where_, &seeded).await
        }
        Database::Sqlite { .. } => {
            let path = config.data_dir.join("audit.db");
            let where_ = format!("sqlite {}", path.display());
            let audit = AuditLog::sqlite(path).chained(keys);
            serve(config, state, audit, &described, &where_, &seeded).await
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

/// Starts the audit log and serves the app until a shutdown signal; then finishes in-flight
/// requests and flushes the pipeline.
async fn serve<S: ExportPositions>(
    mut config: Config,
    state: AppState,
    audit: AuditLogBuilder<S>,
    app_db: &str,
    audit_db: &str,
    seeded: &[SeededAccount],
) -> Result<(), StartError> {
    let categories = app::product_categories().map_err(|e| {
        StartError::runtime(
            "the OpenAPI document does not compile into an audit policy",
            &e,
        )
    })?;
    let spool = config.data_dir.join("spool");
    let audit = start_audit_log(audit, &config, &state, categories).await?;
    let published;
    let audit_db = match &config.fleet {
        None => audit_db,
        Some(fleet) => {
            published = format!(
                "{audit_db}, written by audit-ingest from NATS stream {} at {}",
                fleet.stream_name(),
                fleet.redacted_servers()
            );
            published.as_str()
        }
    };
    let sink = audit.sink();
    let push = PushJobs::start(std::mem::take(&mut config.push), audit.store(), &sink)
        .map_err(|e| StartError::Config(e.0))?;
    let bounds = &config.bounds;
    let state_for_jobs = state.clone();
    let (app, flush) = app::router(state, sink, audit.router(), |layer| {
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
    .with_graceful_shutdown(audit_store::start::shutdown_signal())
    .await;
    tracing::info!(target: "demo_app", "stopped accepting; flushing the audit pipeline");
    sweep.abort();
    // Handlers whose clients left finish, and the layer's summaries go out, before the sink
    // shuts down.
    flush.flush(FLUSH_WITHIN).await;
    // The alert job records its notifications through the sink: it stops first.
    push.stop().await;
    audit.shutdown().await;
    served.map_err(|e| StartError::runtime("the server failed", &e))
}

/// Opens and migrates the audit store, runs its ingest pipeline (spooled in the data
/// directory, account and zone names from the app's tables) and builds its query API
/// ([`app::configure_audit_log_router`]). The pipeline writes to the store, with checkpoints
/// also kept in a file; in fleet mode (`AUDIT_NATS_URL`), to the NATS stream instead, which
/// `audit-ingest` processes write into the store (and sign checkpoints of).
async fn start_audit_log<S: ExportPositions>(
    audit: AuditLogBuilder<S>,
    config: &Config,
    state: &AppState,
    categories: ProductCategories,
) -> Result<AuditLog<S>, StartError> {
    let (spool, budget) = (config.data_dir.join("spool"), config.spool_budget);
    let checkpoints = config.data_dir.join("checkpoints.jsonl");
    let directory = AppDirectory(state.db.clone());
    let external = JsonLinesCheckpoints::new(&checkpoints);
    let audit = audit
        .authorizer(app::audit_log_authorizer(state))
        .router(move |router| app::configure_audit_log_router(router, external, categories));
    let started = match config.fleet.clone() {
        None => {
            audit
                .pipeline(move |pipeline| {
                    pipeline
                        .spool(spool, budget)
                        .directory(directory)
                        .checkpoint_sink(JsonLinesCheckpoints::new(checkpoints))
                })
                .start()
                .await
        }
        Some(fleet) => {
            let stream = nats_destination(fleet, config).await?;
            audit
                .start_publishing(stream, move |pipeline| {
                    pipeline.spool(spool, budget).directory(directory)
                })
                .await
        }
    };
    started.map_err(|e| StartError::runtime("cannot start the audit log", &e))
}

/// Fleet mode's destination: the NATS stream (created when missing; when NATS is down at
/// start, records spool, and the stream is created by the first ingestor or the next start),
/// the spool's lines authenticated under the chain's keys as with the database.
async fn nats_destination(
    fleet: FleetConfig,
    config: &Config,
) -> Result<NatsDestination, StartError> {
    let destination = NatsDestination::connect(fleet)
        .await
        .map_err(|e| StartError::runtime("cannot use --nats-url/AUDIT_NATS_URL", &e))?
        .spool_keys_from(&chain_keys(config)?);
    if let Err(e) = destination.ensure_stream().await {
        tracing::warn!(target: "demo_app", "cannot create the audit stream now (records spool until NATS answers): {e}");
    }
    Ok(destination)
}

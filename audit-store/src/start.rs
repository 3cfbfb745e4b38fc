//! One obvious way to start: [`AuditLog`] opens a store, migrates it, runs the ingest
//! pipeline on a task of its own, and builds the query router, in one call; its
//! [`shutdown`](AuditLog::shutdown) flushes the layer and the pipeline.
//!
//! ```no_run
//! use audit_layer::AuditLayer;
//! use audit_store::AuditLog;
//! use audit_store::query::Access;
//! use axum::{Router, routing::get};
//!
//! # async fn run(spec: utoipa::openapi::OpenApi, listener: tokio::net::TcpListener)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! let audit = AuditLog::sqlite("audit.db")
//!     .authorizer(|_: &http::request::Parts, _account: &str| Access::Denied) // the app's own check
//!     .start()
//!     .await?;
//! let app: Router = Router::new()
//!     .route("/zones/{zone_id}", get(|| async { "{}" }))
//!     .merge(audit.router())
//!     .layer(audit.layer(AuditLayer::new(spec)));
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(audit_store::start::shutdown_signal())
//!     .await?;
//! audit.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! What it does is the six steps an app may also take itself, for a setting this does not
//! offer: open the store ([`SqliteStore::open`]), [`migrate`](crate::store::AuditStore::migrate) it, build
//! the pipeline ([`pipeline::builder`]), spawn [`Pipeline::run`](crate::pipeline::Pipeline::run),
//! give the layer the [`IngestSink`], and at shutdown flush the layer
//! ([`AuditFlush`]) then the sink ([`IngestSink::shutdown`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use audit_layer::{AuditFlush, AuditLayer};
use axum::Router;
use http::request::Parts;
use tokio::task::JoinHandle;

#[cfg(feature = "postgres")]
use crate::PostgresStore;
use crate::Result;
#[cfg(feature = "sqlite")]
use crate::SqliteStore;
use crate::pipeline::{self, Destination, IngestSink, PipelineBuilder, PipelineMetrics};
use crate::query::{Access, AuditLogRouter, Authorizer};
use crate::store::ChainedStore;

type Opening<S> = Pin<Box<dyn Future<Output = Result<S>> + Send>>;
type Opener<S> = Box<dyn FnOnce() -> Opening<S> + Send>;
type Configure<T> = Box<dyn FnOnce(T) -> T + Send>;
type MakeRouter<S> = Box<dyn FnOnce(S) -> AuditLogRouter<S> + Send>;

/// Configures an [`AuditLog`]; made by [`AuditLog::sqlite`], [`AuditLog::postgres`] or
/// [`AuditLog::with_store`], started by [`start`](Self::start).
#[must_use]
pub struct AuditLogBuilder<S> {
    open: Opener<S>,
    migrate: bool,
    pipeline: Configure<PipelineBuilder<S>>,
    make_router: MakeRouter<S>,
    router: Configure<AuditLogRouter<S>>,
    flush_within: Duration,
}

impl<S> std::fmt::Debug for AuditLogBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLogBuilder")
            .field("migrate", &self.migrate)
            .field("flush_within", &self.flush_within)
            .finish_non_exhaustive()
    }
}

/// A running audit log: the sink the layer writes to, the pipeline storing what it receives
/// (on a task of its own), and the query router. Call [`shutdown`](Self::shutdown) once the
/// server stopped serving: dropped without it, the pipeline is shut down on a task of its
/// own, which the runtime may not let finish.
pub struct AuditLog<S> {
    store: S,
    sink: IngestSink,
    router: Router,
    worker: Option<JoinHandle<()>>,
    layers: Mutex<Vec<AuditFlush>>,
    flush_within: Duration,
}

impl<S> std::fmt::Debug for AuditLog<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("sink", &self.sink)
            .field("running", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
impl AuditLog<SqliteStore> {
    /// An audit log in the SQLite file at `path` (created if missing; see
    /// [`SqliteStore::open`]).
    pub fn sqlite(path: impl Into<std::path::PathBuf>) -> AuditLogBuilder<SqliteStore> {
        let path = path.into();
        AuditLogBuilder::new(Box::new(move || Box::pin(SqliteStore::open(path))))
    }
}

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
impl AuditLog<PostgresStore> {
    /// An audit log in the PostgreSQL database at `url` (see [`PostgresStore::connect`]).
    pub fn postgres(url: impl Into<String>) -> AuditLogBuilder<PostgresStore> {
        let url = url.into();
        AuditLogBuilder::new(Box::new(move || {
            Box::pin(async move { PostgresStore::connect(&url).await })
        }))
    }
}

impl<S: ChainedStore> AuditLog<S> {
    /// An audit log in a store the app opened (any [`ChainedStore`], configured as it likes).
    pub fn with_store(store: S) -> AuditLogBuilder<S> {
        AuditLogBuilder::new(Box::new(move || Box::pin(std::future::ready(Ok(store)))))
    }

    /// The sink records go to, for a layer configured elsewhere (see [`layer`](Self::layer),
    /// which also flushes the layer at shutdown).
    pub fn sink(&self) -> IngestSink {
        self.sink.clone()
    }

    /// The audit log API (see [`query`](crate::query)), to `merge` into the app's router.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// `layer`, configured, writing to this audit log; [`shutdown`](Self::shutdown) flushes
    /// it. Give it the layer once its settings are made: settings made later are not flushed.
    pub fn layer(&self, layer: AuditLayer) -> AuditLayer {
        let layer = layer.sink(self.sink.clone());
        self.layers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(layer.flush_handle());
        layer
    }

    /// The pipeline's counters so far.
    pub fn metrics(&self) -> PipelineMetrics {
        self.sink.metrics()
    }

    /// Flushes every layer made by [`layer`](Self::layer) (waiting up to
    /// [`flush_within`](AuditLogBuilder::flush_within) for handlers whose clients left), then
    /// writes (or spools) everything the pipeline accepted and waits for it to stop. Call it
    /// after the server stopped serving. Returns the final counters.
    pub async fn shutdown(mut self) -> PipelineMetrics {
        let layers =
            std::mem::take(&mut *self.layers.lock().unwrap_or_else(PoisonError::into_inner));
        for layer in layers {
            layer.flush(self.flush_within).await;
        }
        self.sink.shutdown().await;
        if let Some(worker) = self.worker.take() {
            let _ = worker.await;
        }
        self.sink.metrics()
    }
}

impl<S> Drop for AuditLog<S> {
    fn drop(&mut self) {
        let Some(worker) = self.worker.take() else {
            return;
        };
        tracing::warn!(
            target: "audit_store",
            "an AuditLog was dropped without shutdown(): records still queued may be lost; call \
             `audit.shutdown().await` after the server stopped serving"
        );
        let sink = self.sink.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                sink.shutdown().await;
                let _ = worker.await;
            });
        }
    }
}

impl<S: ChainedStore> AuditLogBuilder<S> {
    fn new(open: Opener<S>) -> Self {
        Self {
            open,
            migrate: true,
            pipeline: Box::new(|builder| builder),
            make_router: Box::new(|store| {
                AuditLogRouter::new(store, |_: &Parts, _: &str| Access::Unauthenticated)
            }),
            router: Box::new(|router| router),
            flush_within: audit_layer::DEFAULT_DETACHED_TIMEOUT,
        }
    }

    /// Who may read which account's log through the [router](AuditLog::router) (see
    /// [`Authorizer`]). Defaults to no one: every request is answered `401`.
    pub fn authorizer(mut self, authorizer: impl Authorizer) -> Self {
        self.make_router = Box::new(move |store| AuditLogRouter::new(store, authorizer));
        self
    }

    /// Configures the pipeline beyond its defaults (a spool, a directory of names, batch
    /// sizes, retention...; see [`PipelineBuilder`]).
    ///
    /// ```no_run
    /// # use audit_store::AuditLog;
    /// # async fn run() -> audit_store::Result<()> {
    /// let audit = AuditLog::sqlite("audit.db")
    ///     .pipeline(|p| p.spool("audit-spool", 256 << 20))
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn pipeline(
        mut self,
        configure: impl FnOnce(PipelineBuilder<S>) -> PipelineBuilder<S> + Send + 'static,
    ) -> Self {
        let before = self.pipeline;
        self.pipeline = Box::new(move |builder| configure(before(builder)));
        self
    }

    /// Configures the query router beyond its defaults (see [`AuditLogRouter`]).
    pub fn router(
        mut self,
        configure: impl FnOnce(AuditLogRouter<S>) -> AuditLogRouter<S> + Send + 'static,
    ) -> Self {
        let before = self.router;
        self.router = Box::new(move |router| configure(before(router)));
        self
    }

    /// Whether [`start`](Self::start) migrates the store. Defaults to `true`; `false` for an
    /// app that runs the store's migrations with its own migrator (see
    /// [`SqliteStore::migrations`](crate::SqliteStore::migrations)).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// How long [`shutdown`](AuditLog::shutdown) waits for handlers whose clients left.
    /// Defaults to the layer's detached timeout
    /// ([`DEFAULT_DETACHED_TIMEOUT`](audit_layer::DEFAULT_DETACHED_TIMEOUT)).
    pub fn flush_within(mut self, within: Duration) -> Self {
        self.flush_within = within;
        self
    }

    /// Opens and migrates the store, starts the pipeline on a task of its own, and builds
    /// the router. Call it within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// When the store cannot be opened or migrated, or the pipeline cannot start (its spool
    /// cannot be opened).
    pub async fn start(self) -> Result<AuditLog<S>> {
        self.launch(|store, configure| configure(pipeline::builder(store.clone())))
            .await
    }

    /// Starts like [`start`](Self::start), but the pipeline writes to `destination` instead
    /// of the store: fleet mode, where the layer's records go to a stream (the
    /// `NatsDestination` of feature `nats`) and ingestors write them into the store, which
    /// the router still reads. `configure` sets that pipeline up (a spool, a directory...);
    /// the settings given to [`pipeline`](Self::pipeline) are for a pipeline into the store,
    /// and do not apply here.
    ///
    /// ```no_run
    /// # use audit_store::AuditLog;
    /// # use audit_store::pipeline::Destination;
    /// # async fn run(stream: impl Destination) -> audit_store::Result<()> {
    /// let audit = AuditLog::postgres("postgres://audit@db/audit")
    ///     .start_publishing(stream, |p| p.spool("audit-spool", 256 << 20))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_publishing<D: Destination>(
        self,
        destination: D,
        configure: impl FnOnce(PipelineBuilder<D>) -> PipelineBuilder<D> + Send,
    ) -> Result<AuditLog<S>> {
        self.launch(move |_, _| configure(pipeline::builder(destination)))
            .await
    }

    /// Opens (and migrates) the store, runs the pipeline `build` makes on a task of its own
    /// (given the store and the settings of [`pipeline`](Self::pipeline)), builds the router.
    async fn launch<D: Destination>(
        self,
        build: impl FnOnce(&S, Configure<PipelineBuilder<S>>) -> PipelineBuilder<D> + Send,
    ) -> Result<AuditLog<S>> {
        let Self {
            open,
            migrate,
            pipeline,
            make_router,
            router,
            flush_within,
        } = self;
        let store = open().await?;
        if migrate {
            store.migrate().await?;
        }
        let (sink, pipeline) = build(&store, pipeline).build().await?;
        let worker = tokio::spawn(pipeline.run());
        let router = router(make_router(store.clone())).into_router();
        Ok(AuditLog {
            store,
            sink,
            router,
            worker: Some(worker),
            layers: Mutex::default(),
            flush_within,
        })
    }

    fn map_store(mut self, map: impl FnOnce(S) -> Result<S> + Send + 'static) -> Self {
        let open = self.open;
        self.open = Box::new(move || Box::pin(async move { map(open().await?) }));
        self
    }
}

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
impl AuditLogBuilder<SqliteStore> {
    /// Chains the records (see [`SqliteStore::chained`]).
    pub fn chained(self, keys: crate::chain::ChainKeys) -> Self {
        self.map_store(move |store| Ok(store.chained(keys)))
    }

    /// The store's table names (see [`SqliteStore::table_names`]); a schema fails
    /// [`start`](Self::start).
    pub fn table_names(self, names: crate::store::TableNames) -> Self {
        self.map_store(move |store| store.table_names(names))
    }
}

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
impl AuditLogBuilder<PostgresStore> {
    /// Chains the records (see [`PostgresStore::chained`]).
    pub fn chained(self, keys: crate::chain::ChainKeys) -> Self {
        self.map_store(move |store| Ok(store.chained(keys)))
    }

    /// The store's table names and schema (see [`PostgresStore::table_names`]).
    pub fn table_names(self, names: crate::store::TableNames) -> Self {
        self.map_store(move |store| Ok(store.table_names(names)))
    }
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM (on Unix; elsewhere at Ctrl-C only): the
/// future to stop serving on, before [`AuditLog::shutdown`] flushes what was recorded.
///
/// ```
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let serving = axum::serve(listener, axum::Router::new())
///     .with_graceful_shutdown(audit_store::start::shutdown_signal());
/// // It serves until the process is asked to stop; no signal comes here.
/// let stopped = tokio::time::timeout(Duration::from_millis(50), serving).await;
/// assert!(stopped.is_err(), "still serving");
/// # Ok(())
/// # }
/// ```
pub async fn shutdown_signal() {
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

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use tower_layer::Layer;

use crate::ahead::{BodyBudget, DEFAULT_BODY_BUDGET, DEFAULT_BODY_READ_TIMEOUT};
use crate::capture::RecordLimits;
use crate::client_ip::{ForwardingHeader, TrustedProxies};
use crate::coalesce::{Coalescing, Rules};
use crate::config::Config;
use crate::correlation;
use crate::detach::{DEFAULT_DETACHED_TIMEOUT, Detached};
use crate::escape::MIN_STRING_LIMIT;
use crate::flush::AuditFlush;
use crate::policy::{IntoAuditPolicy, PolicyError};
use crate::record::MIN_RECORD_LIMIT;
use crate::service::Audit;
use crate::sink::{AuditSink, TracingSink};

/// The default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The default request-id header: `x-request-id`.
pub const DEFAULT_REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Layer that applies the [`Audit`] middleware: every request becomes one audit record.
///
/// The layer holds configuration only and is cheap to clone; the compiled policy sits behind
/// an `Arc`. See the [crate docs](crate) for an overview.
///
/// ```
/// use audit_layer::{AuditLayer, AuditPolicy, Operation, sink::MemorySink};
/// use axum::{Router, routing::put};
/// use http::Method;
///
/// let policy = AuditPolicy::builder()
///     .operation(Operation::new(Method::PUT, "/zones/{zone_id}").summary("Update a zone"))
///     .build()?;
/// let records = MemorySink::new();
/// let app: Router = Router::new()
///     .route("/zones/{zone_id}", put(|| async { "ok" }))
///     .layer(
///         AuditLayer::new(policy)
///             .sink(records.clone())
///             .body_limit(64 * 1024)
///             .trusted_proxies(["10.0.0.0/8".parse()?])
///             .request_id_header(http::HeaderName::from_static("x-ray-id")),
///     );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct AuditLayer {
    config: Arc<Config>,
}

impl std::fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLayer")
            .field("policy", &self.config.policy)
            .field("body_limit", &self.config.body_limit)
            .field("body_read_timeout", &self.config.body_read_timeout)
            .field("body_budget", &self.config.body_budget.limit())
            .field("detached_timeout", &self.config.detached.timeout())
            .field("failed_auth", &self.config.coalescing.rules())
            .field("trusted_proxies", &self.config.trusted_proxies)
            .field("request_id_header", &self.config.request_id_header)
            .finish_non_exhaustive()
    }
}

impl AuditLayer {
    /// A layer that audits by `spec`, the compiled policy of the API.
    ///
    /// # Panics
    ///
    /// If the spec cannot be compiled. The message says where and how to fix it; this happens
    /// at start-up, like axum's panics on conflicting routes. Use [`try_new`](Self::try_new) to
    /// handle the error instead.
    #[track_caller]
    pub fn new(spec: impl IntoAuditPolicy) -> Self {
        match Self::try_new(spec) {
            Ok(layer) => layer,
            Err(e) => panic!("audit policy: {e}"),
        }
    }

    /// A layer that audits by `spec`, or why the spec cannot be compiled.
    ///
    /// # Errors
    ///
    /// When the spec cannot be compiled into a policy.
    pub fn try_new(spec: impl IntoAuditPolicy) -> Result<Self, PolicyError> {
        let coalescing = Coalescing::new(Arc::new(TracingSink), Rules::default());
        Ok(Self {
            config: Arc::new(Config {
                policy: spec.into_audit_policy()?,
                sink: Arc::clone(&coalescing) as Arc<dyn AuditSink>,
                coalescing,
                body_limit: DEFAULT_BODY_LIMIT,
                body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
                body_budget: Arc::new(BodyBudget::new(DEFAULT_BODY_BUDGET)),
                detached: Arc::new(Detached::new(DEFAULT_DETACHED_TIMEOUT)),
                trusted_proxies: TrustedProxies::default(),
                request_id_header: DEFAULT_REQUEST_ID_HEADER,
                strict: false,
                record_limits: RecordLimits::default(),
                service: None,
            }),
        })
    }

    /// Where finished records go. Defaults to [`TracingSink`], which logs each record.
    pub fn sink(mut self, sink: impl AuditSink) -> Self {
        let config = Arc::make_mut(&mut self.config);
        let rules = config.coalescing.rules();
        config.set_sink(Arc::new(sink), rules);
        self
    }

    /// How many records of failed authentication are kept individually per source, account
    /// and [window](Self::failed_auth_window); beyond it they are counted into one `summary`
    /// record per source, account and window. Defaults to 10
    /// ([`DEFAULT_FAILED_AUTH_RATE`](crate::DEFAULT_FAILED_AUTH_RATE)); `0` counts them all.
    ///
    /// A record of failed authentication is one answered `401` or `403` whose actor is not
    /// known (no `actor.id`, no token: the app did not identify one). Anyone can cause them,
    /// in any account's log; see [Bounds](crate#bounds) for the summary's fields.
    pub fn failed_auth_rate(mut self, per_window: u32) -> Self {
        Arc::make_mut(&mut self.config).set_rules(|r| r.rate = per_window);
        self
    }

    /// The window of [`failed_auth_rate`](Self::failed_auth_rate), from a source and
    /// account's first failed authentication; its summary is emitted when it closes. Defaults
    /// to 60 s ([`DEFAULT_FAILED_AUTH_WINDOW`](crate::DEFAULT_FAILED_AUTH_WINDOW)).
    ///
    /// # Panics
    ///
    /// If `window` is zero.
    #[track_caller]
    pub fn failed_auth_window(mut self, window: Duration) -> Self {
        assert!(
            !window.is_zero(),
            "audit failed-auth window: must be more than zero"
        );
        Arc::make_mut(&mut self.config).set_rules(|r| r.window = window);
        self
    }

    /// How many (source, account) pairs of failed authentications are counted at once.
    /// Defaults to 10,000 ([`DEFAULT_FAILED_AUTH_SOURCES`](crate::DEFAULT_FAILED_AUTH_SOURCES)).
    /// Beyond it, a new pair is counted with its source's other accounts; beyond as many
    /// sources, with everyone's. The table's memory is bounded by it.
    ///
    /// # Panics
    ///
    /// If `pairs` is zero.
    #[track_caller]
    pub fn failed_auth_sources(mut self, pairs: usize) -> Self {
        assert!(
            pairs > 0,
            "audit failed-auth sources: must be more than zero"
        );
        Arc::make_mut(&mut self.config).set_rules(|r| r.sources = pairs);
        self
    }

    /// The largest request body the layer reads ahead of the handler, and the most of a
    /// response body it copies for the record. Defaults to 1 MiB.
    ///
    /// Only operations that record bodies are limited. A request body over the limit (by its
    /// `Content-Length`, or as it arrives) is answered `413 Payload Too Large` without running
    /// the handler, and recorded as a failure with a `_truncated` marker. A response body over
    /// the limit is sent whole; its record carries the marker instead of the body.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).body_limit = bytes;
        self
    }

    /// The longest a request body read ahead of the handler may take to arrive whole, from
    /// when the layer starts reading it. Defaults to 10 s
    /// ([`DEFAULT_BODY_READ_TIMEOUT`](crate::DEFAULT_BODY_READ_TIMEOUT)).
    ///
    /// Such bodies are read before the app's authentication runs, so anyone can send one; a
    /// body still incomplete at the deadline is answered `408 Request Timeout` without running
    /// the handler, and recorded as a failure with a `_truncated` marker. See
    /// [Bounds](crate#bounds).
    ///
    /// # Panics
    ///
    /// If `timeout` is zero: no body could arrive.
    #[track_caller]
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        assert!(
            !timeout.is_zero(),
            "audit body read timeout: must be more than zero"
        );
        Arc::make_mut(&mut self.config).body_read_timeout = timeout;
        self
    }

    /// The bytes that request bodies read ahead of their handlers may hold at once, all
    /// requests of this layer together. Defaults to 32 MiB
    /// ([`DEFAULT_BODY_BUDGET`](crate::DEFAULT_BODY_BUDGET)).
    ///
    /// A body is charged with what it holds, as it arrives (never its declared
    /// `Content-Length` ahead of its bytes: requests that declare a megabyte and send nothing
    /// would hold the budget for free); the charge is returned when the body is handed to the
    /// handler, or refused. A request whose body the budget cannot cover is answered
    /// `503 Service Unavailable` (with `Retry-After: 1`) without running the handler, and
    /// recorded as a failure with a `_truncated` marker. See [Bounds](crate#bounds).
    ///
    /// A budget below the body limit refuses every body larger than the budget.
    pub fn body_budget(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).body_budget = Arc::new(BodyBudget::new(bytes));
        self
    }

    /// How long a handler whose client went away may go on to finish. Defaults to 30 s
    /// ([`DEFAULT_DETACHED_TIMEOUT`](crate::DEFAULT_DETACHED_TIMEOUT)).
    ///
    /// A server drops a request's response future when the client disconnects. Dropped before
    /// its handler completed, the layer's future moves the handler into a task of its own (on
    /// the current tokio runtime), so that a change it began is finished and recorded with the
    /// handler's status and result, marked `raw.client_gone`. A handler still running after
    /// this timeout is dropped and recorded `499`, a failure. The app's graceful shutdown
    /// waits for these tasks through [`flush_handle`](Self::flush_handle).
    pub fn detached_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.config).detached = Arc::new(Detached::new(timeout));
        self
    }

    /// The proxies whose forwarding header ([`forwarding_header`](Self::forwarding_header))
    /// and whose [request id](Self::request_id_header) are believed. Defaults to none: the
    /// client IP is the socket peer's (see [the client address](crate#the-client-address)),
    /// and every trace id is generated.
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpNet>) -> Self {
        let config = Arc::make_mut(&mut self.config);
        let header = config.trusted_proxies.header();
        config.trusted_proxies = TrustedProxies::new(proxies).writing(header);
        self
    }

    /// The header the [trusted proxies](Self::trusted_proxies) write the client's address in:
    /// only that one is read. Defaults to [`ForwardingHeader::XForwardedFor`]. A proxy appends
    /// to its own header and passes any other on as the client sent it, so a layer that read
    /// both would record whatever address a client claimed.
    ///
    /// ```
    /// use audit_layer::{AuditLayer, AuditPolicy, ForwardingHeader};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = AuditLayer::new(AuditPolicy::builder().build()?)
    ///     .trusted_proxies(["10.0.0.0/8".parse()?])
    ///     .forwarding_header(ForwardingHeader::Forwarded);
    /// # let _ = layer; Ok(()) }
    /// ```
    pub fn forwarding_header(mut self, header: ForwardingHeader) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.trusted_proxies = std::mem::take(&mut config.trusted_proxies).writing(header);
        self
    }

    /// Strict mode for every operation that does not say otherwise (`x-audit-strict`).
    /// Defaults to off.
    ///
    /// In strict mode a response is released only once its record is durably stored (the
    /// sink's [`submit_and_commit`](crate::AuditSink::submit_and_commit)); if the sink
    /// reports it cannot store records ([`is_available`](crate::AuditSink::is_available)), the
    /// request is answered `503 Service Unavailable` before the handler runs, and if the
    /// commit fails after the handler ran, the client gets a `503` instead of the response.
    /// A response body the record keeps is held (up to the body limit) until the commit; one
    /// it does not keep is not read before the release. A body that fails while it is held
    /// is answered `500` (its head was not sent yet) rather than cut short.
    pub fn strict(mut self, strict: bool) -> Self {
        Arc::make_mut(&mut self.config).strict = strict;
        self
    }

    /// The header carrying the request's trace id (`raw.cf_ray_id`). Defaults to `x-request-id`.
    ///
    /// An incoming value is kept only when the socket peer is one of the
    /// [trusted proxies](Self::trusted_proxies) and the value is well-formed (1–128
    /// characters of `A-Z a-z 0-9 . _ : -`); otherwise the layer generates one, and a value the
    /// client sent is recorded apart, unverified, as `raw.client_request_id`. Either way the
    /// handler sees the trace id in the request and the client in the response.
    pub fn request_id_header(mut self, header: HeaderName) -> Self {
        Arc::make_mut(&mut self.config).request_id_header = header;
        self
    }

    /// The name of the service, recorded as `service` in every record the layer makes (the
    /// `summary` records too), so that the records of a fleet writing into one log say where
    /// they come from. Defaults to none: records have no `service`.
    ///
    /// Hidden characters are escaped and a name over
    /// [256 bytes](crate::correlation::MAX_SERVICE_NAME) is cut, as any recorded string; an
    /// empty name is none.
    ///
    /// ```
    /// use audit_layer::{AuditLayer, AuditPolicy};
    ///
    /// let layer = AuditLayer::new(AuditPolicy::default()).service_name("billing-api");
    /// ```
    pub fn service_name(mut self, name: impl AsRef<str>) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.service = correlation::service_name(name.as_ref());
        // Summaries carry it too.
        config.set_rules(|_| {});
        self
    }
}

impl AuditLayer {
    /// What the app calls on graceful shutdown so that nothing the layer still holds is lost:
    /// see [`AuditFlush`]. Take it once the layer is configured: it belongs to the settings
    /// made so far.
    pub fn flush_handle(&self) -> AuditFlush {
        AuditFlush {
            detached: Arc::clone(&self.config.detached),
            coalescing: Arc::clone(&self.config.coalescing),
        }
    }
}

// --- Events beyond HTTP (issue 19) ---
impl AuditLayer {
    /// What the app emits [events](crate::event) with — actions that are not HTTP requests —
    /// into this layer's sink, under its record bounds. Cheap to clone; take it once the layer
    /// is configured: it belongs to the sink set so far.
    ///
    /// ```
    /// use audit_layer::{AuditLayer, AuditPolicy, record::ActionType, sink::MemorySink};
    ///
    /// let records = MemorySink::new();
    /// let layer = AuditLayer::new(AuditPolicy::default()).sink(records.clone());
    /// let events = layer.events();
    /// events.event(ActionType::from_static("expire")).account("acc_demo").emit();
    /// assert_eq!(records.records()[0].action.kind.as_str(), "expire");
    /// ```
    pub fn events(&self) -> crate::event::AuditEvents {
        crate::event::AuditEvents::with_sink(
            Arc::clone(&self.config.sink),
            self.config.record_limits,
            self.config.service.clone(),
        )
    }
}

// --- What a record holds (layer-content, issue 18) ---
impl AuditLayer {
    /// The most bytes of each string a record holds (`raw.user_agent`, `raw.uri`, the request
    /// id a client sent, the ids, what the app or its headers say of the actor), its
    /// truncation marker included. Defaults to 8 KiB ([`DEFAULT_STRING_LIMIT`](crate::DEFAULT_STRING_LIMIT)).
    ///
    /// A longer string is cut between two characters and ends with
    /// `…[truncated from N bytes]`, `N` being its length as received.
    ///
    /// # Panics
    ///
    /// If `bytes` is below 64 ([`MIN_STRING_LIMIT`](crate::escape::MIN_STRING_LIMIT)): no room for the marker.
    ///
    /// ```
    /// use audit_layer::{AuditLayer, AuditPolicy};
    ///
    /// let layer = AuditLayer::new(AuditPolicy::default()).string_limit(2 * 1024);
    /// ```
    #[track_caller]
    pub fn string_limit(mut self, bytes: usize) -> Self {
        assert!(
            bytes >= MIN_STRING_LIMIT,
            "audit layer: string_limit({bytes}) is below the minimum of {MIN_STRING_LIMIT} bytes"
        );
        Arc::make_mut(&mut self.config).record_limits.string = bytes;
        self
    }

    /// The most bytes of one record's JSON text. Defaults to 64 KiB
    /// ([`DEFAULT_RECORD_LIMIT`](crate::DEFAULT_RECORD_LIMIT)).
    ///
    /// A record that would be longer loses its response body, then its request body (each
    /// replaced by a `_truncated` marker), then has its strings cut shorter until it fits; who
    /// acted, what they did and when stay in it.
    ///
    /// # Panics
    ///
    /// If `bytes` is below 4 KiB ([`MIN_RECORD_LIMIT`](crate::record::MIN_RECORD_LIMIT)): no room for who, what and when.
    ///
    /// ```
    /// use audit_layer::{AuditLayer, AuditPolicy};
    ///
    /// let layer = AuditLayer::new(AuditPolicy::default()).record_limit(256 * 1024);
    /// ```
    #[track_caller]
    pub fn record_limit(mut self, bytes: usize) -> Self {
        assert!(
            bytes >= MIN_RECORD_LIMIT,
            "audit layer: record_limit({bytes}) is below the minimum of {MIN_RECORD_LIMIT} bytes"
        );
        Arc::make_mut(&mut self.config).record_limits.record = bytes;
        self
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit::new(inner, Arc::clone(&self.config))
    }
}

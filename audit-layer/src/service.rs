use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Extensions, HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use tower_service::Service;
use uuid::Uuid;

use crate::ahead::{Bounds, read_ahead};
use crate::body::{AuditBody, AuditRequestBody};
use crate::capture::{AuditGuard, Capture, RequestBody, ResponseCopy};
use crate::client_ip::peer_addr;
use crate::config::Config;
use crate::correlation;
use crate::escape;
use crate::future::{Detach, Refusal, ResponseFuture, Then};
use crate::identity::AuditHandle;
use crate::policy::{AuditLevel, OperationPlan};
use crate::record::{ActionType, Timestamp, is_valid_ray_id};
use crate::redact::QueryPlan;

/// Middleware that records every request it serves as an audit record.
///
/// Created by [`AuditLayer`](crate::AuditLayer); see there for configuration.
#[derive(Clone)]
pub struct Audit<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> std::fmt::Debug for Audit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").finish_non_exhaustive()
    }
}

impl<S> Audit<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// A reference to the inner service.
    ///
    /// ```
    /// use audit_layer::{AuditLayer, AuditPolicy};
    /// use tower::Layer;
    ///
    /// #[derive(Clone)]
    /// struct Upstream {
    ///     name: &'static str,
    /// }
    ///
    /// let mut audited = AuditLayer::new(AuditPolicy::default()).layer(Upstream { name: "billing" });
    /// assert_eq!(audited.get_ref().name, "billing");
    /// audited.get_mut().name = "billing-v2";
    /// assert_eq!(audited.into_inner().name, "billing-v2");
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service; see [`get_ref`](Self::get_ref).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the layer; see [`get_ref`](Self::get_ref).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Audit<S>
where
    S: Service<Request<AuditRequestBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    // Sent to a task of their own when the client goes away before the handler completed.
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<AuditBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let plan = plan_for(&self.config, &req);
        if plan.as_ref().is_some_and(|p| !p.audited) {
            let req = req.map(AuditRequestBody::streaming);
            return ResponseFuture::passing(self.inner.call(req));
        }
        let detach = Detach::new::<ResBody, S::Error>(&self.config);
        let Begun {
            mut guard,
            ray_id,
            reads_body,
        } = begin(&self.config, plan, &mut req);
        let config = &self.config;

        // Strict mode fails closed: no handler runs while its record could not be stored.
        if let Some(capture) = guard.get_mut()
            && capture.strict
            && !config.sink.is_available()
        {
            capture.strict = false;
            return ResponseFuture::rejected(Refusal::Unavailable, guard, ray_id, detach);
        }

        // Backpressure: while the sink is full, the request waits before it is served.
        let wait = config.sink.backpressure();

        if !reads_body {
            let req = req.map(AuditRequestBody::streaming);
            let Some(wait) = wait else {
                let future = self.inner.call(req);
                return ResponseFuture::calling(future, guard, Some(ray_id), detach);
            };
            let inner = self.take_ready();
            let then = Then::Call(inner, req);
            return ResponseFuture::waiting(wait, then, guard, ray_id, detach);
        }

        let limit = config.body_limit;
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let declared = match declared.map(usize::try_from) {
            Some(Ok(len)) if len <= limit => Some(len),
            Some(_) => {
                guard.set_request(RequestBody::OverLimit(limit));
                return ResponseFuture::rejected(Refusal::TooLarge, guard, ray_id, detach);
            }
            None => None,
        };
        let bounds = Bounds {
            limit,
            declared,
            timeout: config.body_read_timeout,
            budget: Arc::clone(&config.body_budget),
        };
        let inner = self.take_ready();
        let (parts, body) = req.into_parts();
        let read = read_ahead(body, bounds);
        match wait {
            None => ResponseFuture::reading(read, inner, parts, guard, ray_id, detach),
            Some(wait) => {
                let then = Then::Read(read, inner, parts);
                ResponseFuture::waiting(wait, then, guard, ray_id, detach)
            }
        }
    }
}

impl<S: Clone> Audit<S> {
    /// The inner service, made ready for this call, to call later; a fresh clone takes its
    /// place.
    fn take_ready(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}

fn plan_for<B>(config: &Config, req: &Request<B>) -> Option<Arc<OperationPlan>> {
    let matched = matched_template(req.extensions());
    config
        .policy
        .plan_for(req.method(), matched, req.uri().path())
        .or_else(|| matched.and_then(|m| config.policy.undescribed_plan(req.method(), m)))
}

/// The route template axum matched, when the layer sits inside a `Router` (not for fallbacks).
#[cfg(feature = "axum")]
fn matched_template(extensions: &Extensions) -> Option<&str> {
    extensions
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

/// Without axum no router says which template matched: the policy's own templates decide.
#[cfg(not(feature = "axum"))]
fn matched_template(_extensions: &Extensions) -> Option<&str> {
    None
}

/// A request's record, begun.
struct Begun {
    /// Emits the record.
    guard: AuditGuard,
    /// The trace-id header, to echo in the response.
    ray_id: (HeaderName, HeaderValue),
    /// Whether the request body is read ahead of the handler, for the record.
    reads_body: bool,
}

/// Begins the record of `req` with what is known when it arrives, and gives the request its
/// [`AuditHandle`] and trace id.
fn begin<B>(config: &Config, plan: Option<Arc<OperationPlan>>, req: &mut Request<B>) -> Begun {
    let strict = plan
        .as_ref()
        .and_then(|p| p.strict)
        .unwrap_or(config.strict);
    let time = Timestamp::now();
    let id = Uuid::now_v7();
    let (ray_id, ray_id_header, client_request_id) = ray_id(config, req, id);
    let method = req.method().clone();
    let action = plan
        .as_ref()
        .map_or_else(|| ActionType::from_method(&method), |p| p.action);
    let level = plan.as_ref().map(|p| p.level);
    let records_bodies = action != ActionType::View
        && method != Method::GET
        && method != Method::HEAD
        && level.is_some_and(|level| level >= AuditLevel::Request);
    let records_response =
        records_bodies && level.is_some_and(|level| level >= AuditLevel::RequestResponse);
    // A body of a media type the operation describes but does not record (an upload) is not
    // read ahead: the record says what it was without it, and it streams to the handler
    // whatever its size.
    let content_type = req.headers().get(http::header::CONTENT_TYPE);
    let unrecorded = records_bodies && plan.as_ref().is_some_and(|p| p.request.skips(content_type));
    // Such a body is marked in the record unless it is declared empty.
    let marked = unrecorded
        && req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() != b"0");

    let handle = AuditHandle::for_request(ray_id);
    req.extensions_mut().insert(handle.clone());
    let capture = Capture {
        sink: Arc::clone(&config.sink),
        ip: config
            .trusted_proxies
            .client_ip(peer_addr(req.extensions()), req.headers()),
        uri: recorded_uri(plan.as_deref(), req.uri()),
        ids: plan
            .as_ref()
            .map(|p| p.template.ids(req.uri().path()))
            .unwrap_or_default(),
        user_agent: req.headers().get(http::header::USER_AGENT).map(|v| {
            escape::visible_within(v.as_bytes(), config.record_limits.string).into_owned()
        }),
        request_type: records_bodies
            .then(|| req.headers().get(http::header::CONTENT_TYPE).cloned())
            .flatten(),
        plan,
        id,
        time,
        method,
        action,
        handle,
        request: if marked {
            RequestBody::NotRecorded
        } else {
            RequestBody::NotCaptured
        },
        response_type: None,
        status: None,
        header_identity: None,
        response: ResponseCopy::new(records_response.then_some(config.body_limit)),
        in_service: false,
        strict,
        client_gone: false,
        client_request_id,
        limits: config.record_limits,
        trace: correlation::request_trace(req.headers()),
        service: config.service.clone(),
    };
    Begun {
        guard: AuditGuard::new(capture),
        ray_id: ray_id_header,
        reads_body: records_bodies && !unrecorded,
    }
}

/// `raw.uri`: the path and query, with the values of the parameters the operation does not
/// mark auditable redacted.
pub(crate) fn recorded_uri(plan: Option<&OperationPlan>, uri: &Uri) -> String {
    match plan {
        Some(plan) => plan.query.redact_uri(uri),
        // Undescribed and unmatched: no parameter is auditable. Built once, not per request.
        None => {
            static NONE_AUDITABLE: OnceLock<QueryPlan> = OnceLock::new();
            NONE_AUDITABLE.get_or_init(Default::default).redact_uri(uri)
        }
    }
}

/// The request's trace id, as a string for the record and as a header to echo, and the id the
/// client sent when it is not that (`raw.client_request_id`).
///
/// An incoming id is taken only from a trusted proxy: anyone else could choose another
/// request's id.
fn ray_id<B>(
    config: &Config,
    req: &mut Request<B>,
    id: Uuid,
) -> (String, (HeaderName, HeaderValue), Option<String>) {
    let header = &config.request_id_header;
    let mut client_request_id = None;
    if let Some(value) = req.headers().get(header) {
        let trusted = config
            .trusted_proxies
            .trusts_peer(peer_addr(req.extensions()));
        if trusted
            && is_valid_ray_id(value.as_bytes())
            && let Ok(s) = value.to_str()
        {
            return (s.to_owned(), (header.clone(), value.clone()), None);
        }
        let limit = config.record_limits.string;
        client_request_id = Some(escape::visible_within(value.as_bytes(), limit).into_owned());
    }
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    let generated: &str = id.simple().encode_lower(&mut buf);
    let value = HeaderValue::from_str(generated).unwrap_or(HeaderValue::from_static("0"));
    req.headers_mut().insert(header.clone(), value.clone());
    (
        generated.to_owned(),
        (header.clone(), value),
        client_request_id,
    )
}

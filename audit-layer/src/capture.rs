//! The record of one request while it is being served, and the guard that emits it exactly
//! once: at the end of the response body, or wherever the exchange is abandoned.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method};
use uuid::Uuid;

use crate::escape;
use crate::identity::{AuditHandle, Identity};
use crate::policy::{OperationPlan, PathIds};
use crate::record::{
    Account, Action, ActionResult, ActionType, Actor, AuditRecord, Body, DEFAULT_RECORD_LIMIT,
    DEFAULT_STRING_LIMIT, MIN_RECORD_LIMIT, Raw, Resource, Timestamp, Token, Trace, Zone,
};
use crate::sink::AuditSink;

/// Status recorded when the client went away before a response was produced (as nginx does).
pub(crate) const STATUS_CLIENT_GONE: u16 = 499;
/// Status recorded when the handler panicked and nothing turned the panic into a response.
const STATUS_PANIC: u16 = 500;

/// What became of the request body.
#[derive(Debug, Default)]
pub(crate) enum RequestBody {
    /// Not captured: a `view` action, a metadata-only operation, or not read yet.
    #[default]
    NotCaptured,
    /// Read whole (and handed to the handler unchanged).
    Complete(Bytes),
    /// Longer than the body limit; none of it is kept.
    OverLimit(usize),
    /// The body could not be read to its end (the client went away, or sent a broken body).
    Incomplete,
    /// The body did not arrive whole within the read timeout.
    TimedOut(std::time::Duration),
    /// The byte budget for bodies read ahead of handlers (of this many bytes) was spent.
    OverBudget(usize),
    /// Of a media type the operation describes but does not record (not JSON: an upload):
    /// not read ahead, streamed to the handler.
    NotRecorded,
}

/// The parts of a record known when the request arrives.
pub(crate) struct Capture {
    pub(crate) sink: Arc<dyn AuditSink>,
    pub(crate) plan: Option<Arc<OperationPlan>>,
    pub(crate) id: Uuid,
    pub(crate) time: Timestamp,
    pub(crate) method: Method,
    pub(crate) action: ActionType,
    pub(crate) uri: String,
    pub(crate) user_agent: Option<String>,
    /// The request id the client sent, when it was not taken as `cf_ray_id`.
    pub(crate) client_request_id: Option<String>,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) ids: PathIds,
    /// Holds the ray id, and what the app tells of the actor and of what changed.
    pub(crate) handle: AuditHandle,
    pub(crate) request: RequestBody,
    pub(crate) request_type: Option<HeaderValue>,
    /// Filled in as the exchange goes on.
    pub(crate) response_type: Option<HeaderValue>,
    pub(crate) status: Option<u16>,
    pub(crate) header_identity: Option<Identity>,
    pub(crate) response: ResponseCopy,
    /// Set while the inner service (or its body) is being polled: a guard dropped while it is
    /// set was dropped by a panic, even one caught further out.
    pub(crate) in_service: bool,
    /// Strict mode: the response waits for the record's commit.
    pub(crate) strict: bool,
    /// The client went away before the response was delivered; the handler went on alone.
    pub(crate) client_gone: bool,
    /// The caps on the record's strings and size.
    pub(crate) limits: RecordLimits,
    /// The request's distributed trace, and the service's name.
    pub(crate) trace: Option<Trace>,
    pub(crate) service: Option<Arc<str>>,
}

/// The caps on what one record holds: each string, and the whole record's JSON text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordLimits {
    /// The most bytes of each string, truncation marker included (see
    /// [`escape::visible_within`]).
    pub(crate) string: usize,
    /// The most bytes of the record's JSON text.
    pub(crate) record: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            string: DEFAULT_STRING_LIMIT,
            record: DEFAULT_RECORD_LIMIT,
        }
    }
}

impl RecordLimits {
    /// `s` escaped and cut to the string limit.
    pub(crate) fn string(self, s: String) -> String {
        escape::visible_string(s, self.string)
    }

    /// Brings `record`, whose strings are within the string limit, within the record limit:
    /// first its response body, then its request body are replaced by a marker, then its
    /// strings are cut shorter and shorter, until its JSON text fits. Who acted, what they did
    /// and when (the ids, the action, the time, the status) are kept, if shortened. What
    /// changed goes with the bodies, after them.
    pub(crate) fn fit(self, record: &mut AuditRecord) {
        let limit = self.record.max(MIN_RECORD_LIMIT);
        // The common case: fits however its strings are escaped, known without serializing.
        if record.max_json_len() <= limit {
            return;
        }
        let fits = |record: &AuditRecord| record.json_len() <= limit;
        let dropped = || {
            marker(
                "_truncated",
                format!("dropped: the record exceeded the audit record limit of {limit} bytes"),
            )
        };
        if fits(record) {
            return;
        }
        if record.resource.response.is_some() {
            record.resource.response = Some(dropped());
            if fits(record) {
                return;
            }
        }
        if record.resource.request.is_some() {
            record.resource.request = Some(dropped());
            if fits(record) {
                return;
            }
        }
        if let Some(change) = record.change.as_mut() {
            for side in [&mut change.after, &mut change.before] {
                if side.is_some() {
                    *side = Some(dropped());
                }
            }
        }
        let mut string = self.string;
        while !fits(record) && string > escape::MIN_STRING_LIMIT {
            string = (string / 2).max(escape::MIN_STRING_LIMIT);
            cut_strings(record, string);
        }
    }
}

/// Cuts every string of `record` longer than `limit` bytes to `limit`, with the truncation
/// marker.
fn cut_strings(record: &mut AuditRecord, limit: usize) {
    record.visit_texts(
        |s| {
            if s.len() > limit {
                *s = escape::visible_string(std::mem::take(s), limit);
            }
        },
        |text| {
            if text.len() > limit {
                *text = Arc::from(escape::visible_within(text.as_bytes(), limit));
            }
        },
    );
}

/// A copy of the response body, up to a limit, taken as frames pass.
#[derive(Debug, Default)]
pub(crate) struct ResponseCopy {
    /// `None` when the response body is not recorded.
    pub(crate) limit: Option<usize>,
    buf: BytesMut,
    over_limit: bool,
}

impl ResponseCopy {
    pub(crate) fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            buf: BytesMut::new(),
            over_limit: false,
        }
    }

    /// Whether more of the body would be kept: it is recorded, and not past the limit.
    pub(crate) fn wants_more(&self) -> bool {
        self.limit.is_some() && !self.over_limit
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        let Some(limit) = self.limit else { return };
        if self.over_limit {
            return;
        }
        if self.buf.len() + data.len() > limit {
            self.over_limit = true;
            self.buf = BytesMut::new();
        } else {
            self.buf.extend_from_slice(data);
        }
    }
}

/// How the exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The response body was sent to its end.
    Complete,
    /// The handler completed, but the client went away before its whole response was sent:
    /// the handler's status and result, marked `client_gone`.
    ClientGone,
    /// The exchange was abandoned before the handler completed (the client went away, the
    /// handler panicked or failed), or the response body failed mid-stream.
    Abandoned,
}

/// Emits its record exactly once: through [`finish`](Self::finish), or on drop.
pub(crate) struct AuditGuard(Option<Box<Capture>>);

impl AuditGuard {
    pub(crate) fn new(capture: Capture) -> Self {
        Self(Some(Box::new(capture)))
    }

    /// A guard that records nothing (for operations that are not audited).
    pub(crate) fn none() -> Self {
        Self(None)
    }

    pub(crate) fn get_mut(&mut self) -> Option<&mut Capture> {
        self.0.as_deref_mut()
    }

    pub(crate) fn set_request(&mut self, request: RequestBody) {
        if let Some(capture) = self.get_mut() {
            capture.request = request;
        }
    }

    pub(crate) fn set_in_service(&mut self, in_service: bool) {
        if let Some(capture) = self.get_mut() {
            capture.in_service = in_service;
        }
    }

    pub(crate) fn take(&mut self) -> Self {
        Self(self.0.take())
    }

    /// The finished record and its sink, for a caller that submits it itself (strict mode).
    pub(crate) fn take_record(
        &mut self,
        ending: Ending,
    ) -> Option<(AuditRecord, Arc<dyn AuditSink>)> {
        let capture = self.0.take()?;
        let sink = Arc::clone(&capture.sink);
        Some((capture.into_record(ending), sink))
    }

    pub(crate) fn finish(&mut self, ending: Ending) {
        if let Some(capture) = self.0.take() {
            capture.emit(ending);
        }
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        // Dropped before `finish`: after the handler's response, the client went away; before
        // it (or in a panic), the exchange was abandoned midway.
        let ending = match self.0.as_deref() {
            Some(c) if c.status.is_some() && !c.in_service && !std::thread::panicking() => {
                Ending::ClientGone
            }
            _ => Ending::Abandoned,
        };
        self.finish(ending);
    }
}

impl Capture {
    fn emit(self: Box<Self>, ending: Ending) {
        let sink = Arc::clone(&self.sink);
        sink.submit(self.into_record(ending));
    }

    fn into_record(self: Box<Self>, ending: Ending) -> AuditRecord {
        let capture = *self;
        let status = capture
            .status
            .unwrap_or(if capture.in_service || std::thread::panicking() {
                STATUS_PANIC
            } else {
                STATUS_CLIENT_GONE
            });
        let complete = ending == Ending::Complete;
        let result = if ending == Ending::Abandoned {
            ActionResult::Failure
        } else {
            ActionResult::from_status(status)
        };
        // Only a handler that completed is marked: one that did not is the `499` itself.
        let client_gone = ending != Ending::Abandoned && (capture.client_gone || !complete);
        let plan = capture.plan.as_deref();
        let request = capture
            .request
            .recorded(plan, capture.request_type.as_ref());
        let response =
            capture
                .response
                .recorded(plan, status, capture.response_type.as_ref(), complete);
        let told = capture.handle.finish(capture.header_identity);
        let identity = told.identity.unwrap_or_default();
        // The app's own strings too may carry hidden characters, and be long.
        let limits = capture.limits;
        let clean = |s: Option<String>| s.map(|s| limits.string(s));

        let mut record = AuditRecord {
            id: capture.id,
            account: clean(capture.ids.account)
                .or(clean(identity.account_id))
                .map(|id| Account { id, name: None }),
            action: Action {
                description: plan.and_then(|p| p.summary.clone()),
                result,
                time: capture.time,
                kind: capture.action,
            },
            actor: Actor {
                context: identity.context,
                email: clean(identity.email),
                id: clean(identity.id),
                ip_address: capture.ip,
                token: Token {
                    id: clean(identity.token_id),
                    name: clean(identity.token_name),
                },
                kind: identity.kind,
            },
            raw: Raw {
                method: Some(limits.string(capture.method.as_str().to_owned())),
                cf_ray_id: limits.string(told.ray_id),
                status_code: Some(status),
                uri: Some(limits.string(capture.uri)),
                user_agent: clean(capture.user_agent),
                client_request_id: clean(capture.client_request_id),
                client_gone,
            },
            resource: Resource {
                id: clean(identity.resource_id).or(clean(capture.ids.resource)),
                product: plan.and_then(|p| p.product.clone()),
                request,
                response,
                scope: plan.and_then(|p| p.scope.clone()),
                kind: plan.and_then(|p| p.kind.clone()),
            },
            zone: clean(capture.ids.zone).map(|id| Zone { id, name: None }),
            change: told.change,
            trace: capture.trace,
            service: capture.service,
        };
        crate::record::cap_ids(&mut record);
        limits.fit(&mut record);
        record
    }
}

impl RequestBody {
    /// `resource.request`: the body redacted by the operation's plan, or a marker saying why
    /// it is missing.
    fn recorded(
        self,
        plan: Option<&OperationPlan>,
        content_type: Option<&HeaderValue>,
    ) -> Option<Body> {
        match self {
            Self::NotCaptured => None,
            Self::Complete(bytes) => plan
                .and_then(|p| p.request.redact(content_type, &bytes))
                .map(into_body),
            Self::NotRecorded => Some(into_body(crate::redact::not_recorded())),
            Self::OverLimit(limit) => Some(marker(
                "_truncated",
                format!("the request body exceeded the audit body limit of {limit} bytes"),
            )),
            Self::Incomplete => Some(marker(
                "_truncated",
                "the request body ended before it was complete".to_owned(),
            )),
            Self::TimedOut(timeout) => Some(marker(
                "_truncated",
                format!(
                    "the request body did not arrive within the audit read timeout of {} ms",
                    timeout.as_millis()
                ),
            )),
            Self::OverBudget(budget) => Some(marker(
                "_truncated",
                format!(
                    "the request body was not read whole: the audit budget of {budget} bytes \
                     for bodies read ahead of handlers was spent"
                ),
            )),
        }
    }
}

impl ResponseCopy {
    /// `resource.response`: the copy redacted by the operation's plan for `status`, or a marker
    /// saying why it is missing (over the limit, or a response that did not complete).
    fn recorded(
        self,
        plan: Option<&OperationPlan>,
        status: u16,
        content_type: Option<&HeaderValue>,
        complete: bool,
    ) -> Option<Body> {
        let (Some(plan), Some(limit)) = (plan, self.limit) else {
            return None;
        };
        if self.over_limit {
            Some(marker(
                "_truncated",
                format!("the response body exceeded the audit body limit of {limit} bytes"),
            ))
        } else if !complete && !self.buf.is_empty() {
            Some(marker(
                "_truncated",
                "the response ended before it was complete".to_owned(),
            ))
        } else {
            plan.response
                .redact(status, content_type, &self.buf)
                .map(into_body)
        }
    }
}

/// The recorded body, kept as the redactor's text. The text is valid by construction; were it
/// not, the record says so rather than holding `null`.
fn into_body(text: crate::redact::RedactedBody) -> Body {
    text.into_raw_value()
        .map(Body::from_redacted)
        .unwrap_or_else(|| marker("_unparsed", "internal redaction error".to_owned()))
}

fn marker(key: &str, reason: String) -> Body {
    into_body(crate::redact::marker(key, &reason))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use serde_json::json;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::escape::TRUNCATION_MARKER;
    use crate::record::Change;
    use crate::record::{ActorContext, ActorType};
    use crate::sink::MemorySink;
    use crate::{AuditLayer, AuditPolicy, AuditRequestBody, Operation};

    /// A record with every string `text` and both bodies `body`.
    fn record(text: &str, body: &serde_json::Value) -> AuditRecord {
        let s = || Some(text.to_owned());
        let shared = || Some(Arc::from(text));
        AuditRecord {
            id: Uuid::now_v7(),
            account: Some(Account {
                id: text.to_owned(),
                name: s(),
            }),
            action: Action {
                description: shared(),
                result: ActionResult::Failure,
                time: Timestamp::now(),
                kind: ActionType::Update,
            },
            actor: Actor {
                context: Some(ActorContext::ApiToken),
                email: s(),
                id: s(),
                ip_address: Some("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()),
                token: Token { id: s(), name: s() },
                kind: Some(ActorType::User),
            },
            raw: Raw {
                method: s(),
                cf_ray_id: text.to_owned(),
                status_code: Some(499),
                uri: s(),
                user_agent: s(),
                client_request_id: s(),
                client_gone: true,
            },
            resource: Resource {
                id: s(),
                product: shared(),
                request: Some(Body::from(body)),
                response: Some(Body::from(body)),
                scope: shared(),
                kind: shared(),
            },
            zone: Some(Zone {
                id: text.to_owned(),
                name: s(),
            }),
            change: None,
            trace: Some(Trace {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
            }),
            service: shared(),
        }
    }

    fn limits(string: usize, record: usize) -> RecordLimits {
        RecordLimits { string, record }
    }

    #[test]
    fn the_json_length_bound_holds_for_the_worst_strings() {
        for text in ["", "\u{1}", "\"", "é"] {
            let r = record(&text.repeat(100), &json!({}));
            let exact = serde_json::to_string(&r).unwrap().len();
            assert_eq!(r.json_len(), exact);
            assert!(r.max_json_len() >= exact, "{text:?}: {exact}");
        }
    }

    #[test]
    fn a_small_record_is_left_alone() {
        let mut r = record("acc_1", &json!({"name": "page me"}));
        let before = r.clone();
        RecordLimits::default().fit(&mut r);
        assert_eq!(r, before);
    }

    #[test]
    fn an_oversized_record_loses_its_response_body_first_then_its_request_body() {
        let big = json!({"name": "x".repeat(40_000)});
        let mut r = record("acc_1", &big);
        limits(8192, 65536).fit(&mut r);
        assert!(r.json_len() <= 65536);
        let dropped = json!({"_truncated":
            "dropped: the record exceeded the audit record limit of 65536 bytes"});
        assert_eq!(r.resource.response.as_ref().unwrap(), &dropped);
        assert_eq!(
            r.resource.request.as_ref().unwrap().to_value(),
            big,
            "the request fits"
        );

        let mut r = record("acc_1", &json!({"name": "x".repeat(70_000)}));
        limits(8192, 65536).fit(&mut r);
        assert_eq!(r.resource.request.as_ref().unwrap(), &dropped);
        assert_eq!(r.account.as_ref().unwrap().id, "acc_1");
        assert_eq!(r.raw.status_code, Some(499));
    }

    #[test]
    fn what_changed_is_dropped_after_the_bodies() {
        let big = json!({"name": "x".repeat(40_000)});
        let mut r = record("acc_1", &json!({"small": true}));
        r.change = Some(Change {
            before: Some(Body::from(&big)),
            after: Some(Body::from(&big)),
        });
        limits(8192, 65536).fit(&mut r);
        assert!(r.json_len() <= 65536);
        let change = r.change.unwrap();
        let dropped = json!({"_truncated":
            "dropped: the record exceeded the audit record limit of 65536 bytes"});
        assert_eq!(change.before.unwrap(), dropped);
        assert_eq!(change.after.unwrap(), dropped);
    }

    #[test]
    fn the_longest_strings_and_bodies_still_make_a_record_within_the_limit() {
        // Quotes double in JSON: the strings at their cap weigh twice as much.
        let body = json!({"name": "y".repeat(1 << 20)});
        for record_limit in [MIN_RECORD_LIMIT, 16 * 1024, DEFAULT_RECORD_LIMIT] {
            let limits = limits(DEFAULT_STRING_LIMIT, record_limit);
            let text = limits.string("\"".repeat(400_000));
            assert!(text.len() <= DEFAULT_STRING_LIMIT && text.contains(TRUNCATION_MARKER));
            let mut r = record(&text, &body);
            limits.fit(&mut r);
            let json = serde_json::to_string(&r).unwrap();
            assert!(
                json.len() <= record_limit,
                "{} > {record_limit}",
                json.len()
            );
            // Still says who, what, when: the strings start as they did, and are marked cut.
            let account = &r.account.as_ref().unwrap().id;
            assert!(account.starts_with("\"\"\"") && account.contains(TRUNCATION_MARKER));
            assert!(r.actor.email.as_ref().unwrap().starts_with('"'));
            assert_eq!(r.action.kind, ActionType::Update);
            let parsed: AuditRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(parsed, r);
        }
    }

    /// An inner service that answers `200` with a JSON body.
    fn ok<B>() -> impl tower::Service<
        Request<B>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        service_fn(|_req: Request<B>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
        })
    }

    async fn record_of(
        layer: AuditLayer,
        sink: &MemorySink,
        req: Request<Full<Bytes>>,
    ) -> AuditRecord {
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service(ok::<AuditRequestBody<Full<Bytes>>>());
        let response = svc.oneshot(req).await.unwrap();
        response.into_body().collect().await.unwrap();
        let mut records = sink.wait_for(1, std::time::Duration::from_secs(5)).await;
        records.remove(0)
    }

    fn policy() -> AuditPolicy {
        AuditPolicy::builder()
            .operation(Operation::new(Method::GET, "/zones/{zone_id}"))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_huge_user_agent_and_uri_are_recorded_capped() {
        let sink = MemorySink::new();
        let agent = format!("evil\u{202e}{}", "A".repeat(400_000));
        let path = format!("/zones/{}", "z".repeat(60_000));
        let req = Request::get(&path)
            .header("user-agent", agent.as_bytes())
            .body(Full::default())
            .unwrap();
        let layer = AuditLayer::new(policy())
            .sink(sink.clone())
            .string_limit(1024);
        let r = record_of(layer, &sink, req).await;
        let agent = r.raw.user_agent.unwrap();
        assert_eq!(agent.len(), 1024);
        assert!(agent.starts_with(r"evil\u{202e}AAA"), "{agent:.40}");
        assert!(
            agent.ends_with("A…[truncated from 400007 bytes]"),
            "{agent}"
        );
        let uri = r.raw.uri.unwrap();
        assert!(uri.len() <= 1024 && uri.starts_with("/zones/zzz"));
        assert!(uri.ends_with("…[truncated from 60007 bytes]"), "{uri}");
        assert!(r.zone.unwrap().id.len() <= 1024);
    }

    #[tokio::test]
    async fn a_request_id_is_taken_only_from_a_trusted_proxy() {
        let request = |peer: &str, id: &[u8]| {
            let mut req = Request::get("/zones/z1")
                .header("x-request-id", id)
                .body(Full::default())
                .unwrap();
            req.extensions_mut()
                .insert(peer.parse::<SocketAddr>().unwrap());
            req
        };
        let layer = |sink: &MemorySink| {
            AuditLayer::new(policy())
                .sink(sink.clone())
                .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
        };

        let sink = MemorySink::new();
        let r = record_of(
            layer(&sink),
            &sink,
            request("10.1.2.3:4000", b"ray-from-proxy"),
        )
        .await;
        assert_eq!(r.raw.cf_ray_id, "ray-from-proxy");
        assert_eq!(r.raw.client_request_id, None);

        let sink = MemorySink::new();
        let r = record_of(
            layer(&sink),
            &sink,
            request("203.0.113.9:4000", b"alices-ray"),
        )
        .await;
        assert_ne!(r.raw.cf_ray_id, "alices-ray");
        assert_eq!(
            r.raw.cf_ray_id.len(),
            32,
            "a generated id: {}",
            r.raw.cf_ray_id
        );
        assert_eq!(r.raw.client_request_id.as_deref(), Some("alices-ray"));

        // A proxy's malformed id is not taken either, but kept apart, escaped.
        let sink = MemorySink::new();
        let r = record_of(layer(&sink), &sink, request("10.1.2.3:4000", b"bad id\xff")).await;
        assert_eq!(r.raw.cf_ray_id.len(), 32);
        assert_eq!(r.raw.client_request_id.as_deref(), Some(r"bad id\xff"));
    }
}

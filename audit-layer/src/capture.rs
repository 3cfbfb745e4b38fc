//! The record of one request while it is being served, and the guard that emits it exactly
//! once: at the end of the response body, or wherever the exchange is abandoned.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method};
use uuid::Uuid;

use crate::identity::{AuditHandle, Identity};
use crate::policy::{OperationPlan, PathIds};
use crate::record::{
    Account, Action, ActionResult, ActionType, Actor, AuditRecord, Body, Raw, Resource, Timestamp,
    Token, Zone,
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
    pub(crate) ray_id: String,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) ids: PathIds,
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

    pub(crate) fn is_over_limit(&self) -> bool {
        self.over_limit
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
        let identity = capture
            .handle
            .resolve(capture.header_identity)
            .unwrap_or_default();
        // The app's own strings too may carry control characters.
        let clean = |s: Option<String>| s.map(escaped);

        AuditRecord {
            id: capture.id,
            account: capture
                .ids
                .account
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
                method: capture.method.as_str().to_owned(),
                ray_id: capture.ray_id,
                status_code: status,
                uri: capture.uri,
                user_agent: capture.user_agent,
                client_request_id: None,
                client_gone,
            },
            resource: Resource {
                id: clean(identity.resource_id).or(capture.ids.resource),
                product: plan.and_then(|p| p.product.clone()),
                request,
                response,
                scope: plan.and_then(|p| p.scope.clone()),
                kind: plan.and_then(|p| p.kind.clone()),
            },
            zone: capture.ids.zone.map(|id| Zone { id, name: None }),
        }
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
                    "the request body was not read: the audit budget of {budget} bytes for \
                     bodies read ahead of handlers was spent"
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

/// `s` with control characters escaped, reusing it when it has none.
fn escaped(s: String) -> String {
    if s.chars().any(char::is_control) {
        crate::escape::visible(s.as_bytes()).into_owned()
    } else {
        s
    }
}

/// The recorded body, kept as the redactor's text. The text is valid by construction; were it
/// not, the record says so rather than holding `null`.
fn into_body(text: crate::redact::RedactedBody) -> Body {
    text.into_raw_value()
        .map(Body::from)
        .unwrap_or_else(|| marker("_unparsed", "internal redaction error".to_owned()))
}

fn marker(key: &str, reason: String) -> Body {
    into_body(crate::redact::marker(key, &reason))
}

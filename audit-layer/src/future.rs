use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, request, response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{AuditBody, AuditRequestBody, poll_watched};
use crate::capture::{AuditGuard, Ending, RequestBody, ResponseCopy};
use crate::identity::Identity;
use crate::sink::{Backpressure, Commit};

use crate::BoxError;

/// The outcome of reading a request body ahead of the handler.
pub(crate) enum BodyRead {
    Complete(Bytes, Option<http::HeaderMap>),
    OverLimit(usize),
    Incomplete,
}

type ReadFuture = Pin<Box<dyn Future<Output = BodyRead> + Send>>;

/// Reads `body` whole, or stops once it exceeds `limit` bytes.
pub(crate) fn read_body<B>(body: B, limit: usize) -> ReadFuture
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Box::pin(async move {
        match Limited::new(body, limit).collect().await {
            Ok(collected) => {
                let trailers = collected.trailers().cloned();
                BodyRead::Complete(collected.to_bytes(), trailers)
            }
            Err(e) if e.is::<LengthLimitError>() => BodyRead::OverLimit(limit),
            Err(_) => BodyRead::Incomplete,
        }
    })
}

pin_project! {
    /// Response future of [`Audit`](crate::Audit).
    pub struct ResponseFuture<S, B, RB>
    where
        S: Service<Request<AuditRequestBody<B>>>,
    {
        #[pin]
        state: State<S::Future, S, B, RB>,
        guard: AuditGuard,
        ray_id: Option<(HeaderName, HeaderValue)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B, RB> {
        Reading {
            read: ReadFuture,
            service: Option<S>,
            parts: Option<request::Parts>,
            _body: PhantomData<fn(B)>,
        },
        Calling { #[pin] future: F },
        Committing { held: Held<RB> },
        Rejected { status: StatusCode },
        // Backpressure: the sink is full; the request waits before it is served.
        Waiting {
            wait: Backpressure,
            then: Option<Then<S, B>>,
        },
    }
}

impl<F, S, B, RB> State<F, S, B, RB> {
    fn reading(read: ReadFuture, service: S, parts: request::Parts) -> Self {
        Self::Reading {
            read,
            service: Some(service),
            parts: Some(parts),
            _body: PhantomData,
        }
    }
}

/// How a request that waited for the sink goes on.
pub(crate) enum Then<S, B> {
    /// Calls the service (made ready for this request) with the streaming request.
    Call(S, Request<AuditRequestBody<B>>),
    /// Reads the body ahead, then calls the service.
    Read(ReadFuture, S, request::Parts),
}

impl<S, B> Then<S, B>
where
    S: Service<Request<AuditRequestBody<B>>>,
{
    fn resume<RB>(self) -> State<S::Future, S, B, RB> {
        match self {
            Self::Call(mut service, req) => State::Calling {
                future: service.call(req),
            },
            Self::Read(read, service, parts) => State::reading(read, service, parts),
        }
    }
}

impl<S, B, RB> ResponseFuture<S, B, RB>
where
    S: Service<Request<AuditRequestBody<B>>>,
{
    pub(crate) fn calling(
        future: S::Future,
        guard: AuditGuard,
        ray_id: Option<(HeaderName, HeaderValue)>,
    ) -> Self {
        Self {
            state: State::Calling { future },
            guard,
            ray_id,
        }
    }

    pub(crate) fn reading(
        read: ReadFuture,
        service: S,
        parts: request::Parts,
        guard: AuditGuard,
        ray_id: (HeaderName, HeaderValue),
    ) -> Self {
        Self {
            state: State::reading(read, service, parts),
            guard,
            ray_id: Some(ray_id),
        }
    }

    /// A request that waits for room in the sink, then goes on as `then` says.
    pub(crate) fn waiting(
        wait: Backpressure,
        then: Then<S, B>,
        guard: AuditGuard,
        ray_id: (HeaderName, HeaderValue),
    ) -> Self {
        Self {
            state: State::Waiting {
                wait,
                then: Some(then),
            },
            guard,
            ray_id: Some(ray_id),
        }
    }

    /// A response the layer gives itself, without calling the service.
    pub(crate) fn rejected(
        status: StatusCode,
        guard: AuditGuard,
        ray_id: (HeaderName, HeaderValue),
    ) -> Self {
        Self {
            state: State::Rejected { status },
            guard,
            ray_id: Some(ray_id),
        }
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B, RB>
where
    S: Service<Request<AuditRequestBody<B>>, Response = Response<RB>>,
    RB: Body<Data = Bytes>,
{
    type Output = Result<Response<AuditBody<RB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Reading {
                    read,
                    service,
                    parts,
                    ..
                } => {
                    let outcome = ready!(read.as_mut().poll(cx));
                    let (Some(service), Some(parts)) = (service.take(), parts.take()) else {
                        unreachable!("the request is read once");
                    };
                    call_with_body(this.guard, outcome, service, parts)
                }
                StateProj::Calling { future } => {
                    let polled = poll_watched(this.guard, |cx| future.poll(cx), cx);
                    match ready!(polled) {
                        Ok(response) => match release(this.guard, this.ray_id, response) {
                            Released::Now(response) => return Poll::Ready(Ok(response)),
                            Released::AfterCommit(held) => State::Committing { held },
                        },
                        Err(e) => {
                            // The server turns this into a dropped connection: abandoned.
                            if let Some(capture) = this.guard.get_mut() {
                                capture.status = Some(StatusCode::INTERNAL_SERVER_ERROR.as_u16());
                            }
                            this.guard.finish(Ending::Abandoned);
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                StateProj::Committing { held } => {
                    return held.poll_release(this.guard, this.ray_id, cx).map(Ok);
                }
                StateProj::Waiting { wait, then } => {
                    ready!(wait.as_mut().poll(cx));
                    let Some(then) = then.take() else {
                        unreachable!("a request goes on once");
                    };
                    then.resume()
                }
                StateProj::Rejected { status } => {
                    let status = *status;
                    if let Some(capture) = this.guard.get_mut() {
                        capture.status = Some(status.as_u16());
                        capture.response = ResponseCopy::new(None);
                    }
                    let response = layer_response(status, this.guard.take(), this.ray_id.take());
                    return Poll::Ready(Ok(response));
                }
            };
            this.state.set(next);
        }
    }
}

/// Calls the service with the body read ahead, or refuses a body that was over the limit or
/// did not arrive whole.
fn call_with_body<S, B, RB>(
    guard: &mut AuditGuard,
    outcome: BodyRead,
    mut service: S,
    parts: request::Parts,
) -> State<S::Future, S, B, RB>
where
    S: Service<Request<AuditRequestBody<B>>>,
{
    let (data, trailers) = match outcome {
        BodyRead::Complete(data, trailers) => (data, trailers),
        BodyRead::OverLimit(limit) => {
            guard.set_request(RequestBody::OverLimit(limit));
            return State::Rejected {
                status: StatusCode::PAYLOAD_TOO_LARGE,
            };
        }
        BodyRead::Incomplete => {
            guard.set_request(RequestBody::Incomplete);
            return State::Rejected {
                status: StatusCode::BAD_REQUEST,
            };
        }
    };
    guard.set_request(RequestBody::Complete(data.clone()));
    let req = Request::from_parts(parts, AuditRequestBody::buffered(data, trailers));
    State::Calling {
        future: service.call(req),
    }
}

/// What becomes of the service's response.
enum Released<RB> {
    /// It goes to the client now; its record is emitted at the end of its body.
    Now(Response<AuditBody<RB>>),
    /// Strict mode: it is held until its record is committed.
    AfterCommit(Held<RB>),
}

/// Takes the service's response into the record (status, actor headers, content type) and
/// echoes the trace id.
fn release<RB: Body<Data = Bytes>>(
    guard: &mut AuditGuard,
    ray_id: &Option<(HeaderName, HeaderValue)>,
    mut response: Response<RB>,
) -> Released<RB> {
    let identity = Identity::take_from_headers(response.headers_mut());
    let mut strict = false;
    let mut head = false;
    if let Some(capture) = guard.get_mut() {
        capture.status = Some(response.status().as_u16());
        capture.header_identity = identity;
        if capture.response.limit.is_some() {
            capture.response_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
        }
        strict = capture.strict;
        head = capture.method == http::Method::HEAD;
    }
    if let Some((name, value)) = ray_id {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    if strict {
        return Released::AfterCommit(Held::new(response));
    }
    // No body follows a HEAD response or a 1xx/204/304: servers (and axum, for HEAD) drop it
    // unread, so the exchange is complete with the head.
    let status = response.status();
    if head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        guard.finish(Ending::Complete);
    }
    let guard = guard.take();
    Released::Now(response.map(|body| AuditBody::new(body, guard)))
}

/// Strict mode: a response held until its record is committed.
pub(crate) struct Held<RB> {
    parts: Option<response::Parts>,
    body: Option<Pin<Box<RB>>>,
    frames: VecDeque<Frame<Bytes>>,
    commit: Option<Commit>,
}

impl<RB: Body<Data = Bytes>> Held<RB> {
    fn new(response: Response<RB>) -> Self {
        let (parts, body) = response.into_parts();
        Self {
            parts: Some(parts),
            body: Some(Box::pin(body)),
            frames: VecDeque::new(),
            commit: None,
        }
    }

    /// Reads the body (up to the body limit) into the record, commits the record, and then
    /// releases the response, or answers `503` when the commit failed.
    fn poll_release(
        &mut self,
        guard: &mut AuditGuard,
        ray_id: &mut Option<(HeaderName, HeaderValue)>,
        cx: &mut Context<'_>,
    ) -> Poll<Response<AuditBody<RB>>> {
        if self.commit.is_none() {
            ready!(self.poll_read(guard, cx));
            // The record is complete as far as it goes: the rest of an over-limit body streams
            // after the commit, unrecorded.
            self.commit = Some(match guard.take_record(Ending::Complete) {
                Some((record, sink)) => sink.submit_and_commit(record),
                None => Box::pin(std::future::ready(Ok(()))),
            });
        }
        let Some(pending) = self.commit.as_mut() else {
            unreachable!("set above");
        };
        let committed = ready!(pending.as_mut().poll(cx));
        let Some(parts) = self.parts.take() else {
            unreachable!("the response is released once");
        };
        if let Err(e) = committed {
            tracing::error!(target: "audit", "strict mode: {e}; answering 503");
            let refusal = layer_response(
                StatusCode::SERVICE_UNAVAILABLE,
                AuditGuard::none(),
                ray_id.take(),
            );
            return Poll::Ready(refusal);
        }
        let body = AuditBody::replay(std::mem::take(&mut self.frames), self.body.take());
        Poll::Ready(Response::from_parts(parts, body))
    }

    /// Reads the held body into `frames`, copying data for the record, until it ends or passes
    /// the body limit. A body that fails is recorded as abandoned.
    fn poll_read(&mut self, guard: &mut AuditGuard, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(inner) = self.body.as_mut() else {
                return Poll::Ready(());
            };
            if inner.is_end_stream() {
                self.body = None;
                return Poll::Ready(());
            }
            if guard.get_mut().is_some_and(|c| c.response.is_over_limit()) {
                return Poll::Ready(());
            }
            match ready!(poll_watched(guard, |cx| inner.as_mut().poll_frame(cx), cx)) {
                Some(Ok(frame)) => {
                    if let (Some(data), Some(capture)) = (frame.data_ref(), guard.get_mut()) {
                        capture.response.push(data);
                    }
                    self.frames.push_back(frame);
                }
                Some(Err(_)) => {
                    self.body = None;
                    guard.finish(Ending::Abandoned);
                    return Poll::Ready(());
                }
                None => {
                    self.body = None;
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// A plain-text response the layer produces itself, with the trace id when there is one.
fn layer_response<RB>(
    status: StatusCode,
    guard: AuditGuard,
    ray_id: Option<(HeaderName, HeaderValue)>,
) -> Response<AuditBody<RB>> {
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large",
        StatusCode::SERVICE_UNAVAILABLE => "audit log unavailable",
        _ => "request body incomplete",
    };
    let mut response = Response::new(AuditBody::layer(message, guard));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some((name, value)) = ray_id {
        response.headers_mut().insert(name, value);
    }
    response
}

impl<S, B, RB> std::fmt::Debug for ResponseFuture<S, B, RB>
where
    S: Service<Request<AuditRequestBody<B>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, request, response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tower_service::Service;

use crate::ahead::{BodyRead, ReadFuture};
use crate::body::{AuditBody, AuditRequestBody, poll_watched};
use crate::capture::{AuditGuard, Ending, RequestBody, ResponseCopy};
use crate::config::Config;
use crate::identity::Identity;
use crate::sink::{Backpressure, Commit};

/// What a response future needs to finish its handler on its own when the server drops it
/// (the client went away): the layer's settings, and the function that moves the handler's
/// future into a task of its own (made where the future's type is known to be `Send`).
pub(crate) struct Detach<F> {
    config: Arc<Config>,
    run: fn(Pin<Box<F>>, AuditGuard, Arc<Config>),
}

impl<F> Detach<F> {
    /// The detach of the futures of a service whose responses have bodies `RB`.
    pub(crate) fn new<RB, E>(config: &Arc<Config>) -> Self
    where
        F: Future<Output = Result<Response<RB>, E>> + Send + 'static,
        RB: Body<Data = Bytes> + Send + 'static,
        E: Send + 'static,
    {
        Self {
            config: Arc::clone(config),
            run: run_detached::<F, RB, E>,
        }
    }
}

/// Response future of [`Audit`](crate::Audit).
///
/// Dropped before the handler completed (the server drops it when the client goes away), it
/// moves the handler's future into a task of its own (on the current tokio runtime), where the
/// handler runs to completion and its record is emitted with its real outcome, marked
/// `client_gone`. See [`AuditLayer::detached_timeout`](crate::AuditLayer::detached_timeout).
pub struct ResponseFuture<S, B, RB>
where
    S: Service<Request<AuditRequestBody<B>>>,
{
    state: State<S::Future, S, B, RB>,
    guard: AuditGuard,
    ray_id: Option<(HeaderName, HeaderValue)>,
    detach: Option<Detach<S::Future>>,
}

// No field is pinned: the handler's future is boxed, so that it can be moved into a task of
// its own when this future is dropped.
impl<S, B, RB> Unpin for ResponseFuture<S, B, RB> where S: Service<Request<AuditRequestBody<B>>> {}

enum State<F, S, B, RB> {
    Reading {
        read: ReadFuture,
        service: S,
        parts: request::Parts,
        _body: PhantomData<fn(B)>,
    },
    Calling {
        future: Pin<Box<F>>,
    },
    Committing {
        held: Held<RB>,
    },
    Rejected {
        refusal: Refusal,
    },
    // Backpressure: the sink is full; the request waits before it is served.
    Waiting {
        wait: Backpressure,
        then: Then<S, B>,
    },
    // The response was given out (or the future taken apart).
    Done,
}

impl<F, S, B, RB> State<F, S, B, RB> {
    fn reading(read: ReadFuture, service: S, parts: request::Parts) -> Self {
        Self::Reading {
            read,
            service,
            parts,
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
                future: Box::pin(service.call(req)),
            },
            Self::Read(read, service, parts) => State::reading(read, service, parts),
        }
    }
}

impl<S, B, RB> ResponseFuture<S, B, RB>
where
    S: Service<Request<AuditRequestBody<B>>>,
{
    fn new(
        state: State<S::Future, S, B, RB>,
        guard: AuditGuard,
        ray_id: Option<(HeaderName, HeaderValue)>,
        detach: Detach<S::Future>,
    ) -> Self {
        Self {
            state,
            guard,
            ray_id,
            detach: Some(detach),
        }
    }

    pub(crate) fn calling(
        future: S::Future,
        guard: AuditGuard,
        ray_id: Option<(HeaderName, HeaderValue)>,
        detach: Detach<S::Future>,
    ) -> Self {
        let future = Box::pin(future);
        Self::new(State::Calling { future }, guard, ray_id, detach)
    }

    /// An exchange the policy does not audit: dropped, its handler is dropped too (nothing
    /// to finish for a record).
    pub(crate) fn passing(future: S::Future) -> Self {
        Self {
            state: State::Calling {
                future: Box::pin(future),
            },
            guard: AuditGuard::none(),
            ray_id: None,
            detach: None,
        }
    }

    pub(crate) fn reading(
        read: ReadFuture,
        service: S,
        parts: request::Parts,
        guard: AuditGuard,
        ray_id: (HeaderName, HeaderValue),
        detach: Detach<S::Future>,
    ) -> Self {
        let state = State::reading(read, service, parts);
        Self::new(state, guard, Some(ray_id), detach)
    }

    /// A request that waits for room in the sink, then goes on as `then` says.
    pub(crate) fn waiting(
        wait: Backpressure,
        then: Then<S, B>,
        guard: AuditGuard,
        ray_id: (HeaderName, HeaderValue),
        detach: Detach<S::Future>,
    ) -> Self {
        let state = State::Waiting { wait, then };
        Self::new(state, guard, Some(ray_id), detach)
    }

    /// A response the layer gives itself, without calling the service.
    pub(crate) fn rejected(
        refusal: Refusal,
        guard: AuditGuard,
        ray_id: (HeaderName, HeaderValue),
        detach: Detach<S::Future>,
    ) -> Self {
        Self::new(State::Rejected { refusal }, guard, Some(ray_id), detach)
    }
}

impl<S, B, RB> Drop for ResponseFuture<S, B, RB>
where
    S: Service<Request<AuditRequestBody<B>>>,
{
    fn drop(&mut self) {
        // Dropped while the handler runs: it finishes on its own, and its record with it.
        if let State::Calling { .. } = self.state
            && let Some(detach) = self.detach.take()
            && let State::Calling { future } = std::mem::replace(&mut self.state, State::Done)
        {
            (detach.run)(future, self.guard.take(), detach.config);
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
        let this = self.get_mut();
        loop {
            let next = match &mut this.state {
                State::Reading { read, .. } => {
                    let outcome = ready!(read.as_mut().poll(cx));
                    let State::Reading { service, parts, .. } =
                        std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched above");
                    };
                    call_with_body(&mut this.guard, outcome, service, parts)
                }
                State::Calling { future } => {
                    // Taken while the handler is polled: one that panics (and a layer outside
                    // catches it) is dropped with this future, never run on detached and
                    // polled again.
                    let detach = this.detach.take();
                    let polled = poll_watched(&mut this.guard, |cx| future.as_mut().poll(cx), cx);
                    this.detach = detach;
                    let result = ready!(polled);
                    this.state = State::Done;
                    match result {
                        Ok(response) => match release(&mut this.guard, &this.ray_id, response) {
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
                State::Committing { held } => {
                    let response = ready!(held.poll_release(&mut this.guard, &mut this.ray_id, cx));
                    this.state = State::Done;
                    return Poll::Ready(Ok(response));
                }
                State::Waiting { wait, .. } => {
                    ready!(wait.as_mut().poll(cx));
                    let State::Waiting { then, .. } =
                        std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched above");
                    };
                    then.resume()
                }
                State::Rejected { refusal } => {
                    let refusal = *refusal;
                    this.state = State::Done;
                    if let Some(capture) = this.guard.get_mut() {
                        capture.status = Some(refusal.status().as_u16());
                        capture.response = ResponseCopy::new(None);
                    }
                    let response = layer_response(refusal, this.guard.take(), this.ray_id.take());
                    return Poll::Ready(Ok(response));
                }
                State::Done => panic!("audit ResponseFuture polled after completion"),
            };
            this.state = next;
        }
    }
}

/// Finishes, in a task of its own, a handler whose client went away; its record gets the
/// handler's outcome, marked `client_gone`. Without a tokio runtime to run it on, the handler
/// is dropped (and recorded `499`).
fn run_detached<F, RB, E>(future: Pin<Box<F>>, mut guard: AuditGuard, config: Arc<Config>)
where
    F: Future<Output = Result<Response<RB>, E>> + Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    E: Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if let Some(capture) = guard.get_mut() {
        capture.client_gone = true;
    }
    let running = config.detached.enter();
    let timeout = config.detached.timeout();
    let limit = config.body_limit;
    runtime.spawn(async move {
        let _running = running;
        let finished = finish_detached(future, guard, limit);
        if tokio::time::timeout(timeout, finished).await.is_err() {
            tracing::warn!(
                target: "audit",
                "a handler whose client left did not finish within {} ms; it was dropped",
                timeout.as_millis()
            );
        }
    });
}

/// Runs the handler's future to its end, then its response as far as the record needs it.
async fn finish_detached<F, RB, E>(mut future: Pin<Box<F>>, mut guard: AuditGuard, limit: usize)
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: Body<Data = Bytes>,
{
    let polled =
        std::future::poll_fn(|cx| poll_watched(&mut guard, |cx| future.as_mut().poll(cx), cx));
    let Ok(response) = polled.await else {
        if let Some(capture) = guard.get_mut() {
            capture.status = Some(StatusCode::INTERNAL_SERVER_ERROR.as_u16());
        }
        guard.finish(Ending::Abandoned);
        return;
    };
    drop(future);
    let copies = guard.get_mut().is_some_and(|c| c.response.limit.is_some());
    match release(&mut guard, &None, response) {
        Released::Now(response) if copies => {
            // Read as much of the body as the record keeps; the rest goes nowhere.
            let mut body = std::pin::pin!(response.into_body());
            let mut read = 0;
            while read <= limit {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                    Some(Err(_)) | None => break,
                }
            }
        }
        // The record keeps no body: it is emitted as the response is dropped.
        Released::Now(_) => {}
        Released::AfterCommit(mut held) => {
            let mut ray_id = None;
            std::future::poll_fn(|cx| held.poll_release(&mut guard, &mut ray_id, cx)).await;
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
                refusal: Refusal::TooLarge,
            };
        }
        BodyRead::Incomplete => {
            guard.set_request(RequestBody::Incomplete);
            return State::Rejected {
                refusal: Refusal::Incomplete,
            };
        }
        BodyRead::TimedOut(timeout) => {
            guard.set_request(RequestBody::TimedOut(timeout));
            return State::Rejected {
                refusal: Refusal::TimedOut,
            };
        }
        BodyRead::OverBudget(budget) => {
            guard.set_request(RequestBody::OverBudget(budget));
            return State::Rejected {
                refusal: Refusal::OverBudget,
            };
        }
    };
    guard.set_request(RequestBody::Complete(data.clone()));
    let req = Request::from_parts(parts, AuditRequestBody::buffered(data, trailers));
    State::Calling {
        future: Box::pin(service.call(req)),
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
    /// The body failed while it was read ahead: what was read of it is not released.
    failed: bool,
}

impl<RB: Body<Data = Bytes>> Held<RB> {
    fn new(response: Response<RB>) -> Self {
        let (parts, body) = response.into_parts();
        Self {
            parts: Some(parts),
            body: Some(Box::pin(body)),
            frames: VecDeque::new(),
            commit: None,
            failed: false,
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
            let refusal = layer_response(Refusal::Unavailable, AuditGuard::none(), ray_id.take());
            return Poll::Ready(refusal);
        }
        if self.failed {
            // Its head is not sent yet: a 500 rather than the part read, which would end as
            // if it were whole (outside strict mode the connection is cut instead).
            tracing::error!(target: "audit", "strict mode: the response body failed before it was released; answering 500");
            let refusal = layer_response(Refusal::BodyFailed, AuditGuard::none(), ray_id.take());
            return Poll::Ready(refusal);
        }
        let body = AuditBody::replay(std::mem::take(&mut self.frames), self.body.take());
        Poll::Ready(Response::from_parts(parts, body))
    }

    /// Reads the held body into `frames`, copying data for the record, until it ends or passes
    /// the body limit; a body the record does not keep is not read at all. A body that fails
    /// is recorded as abandoned.
    fn poll_read(&mut self, guard: &mut AuditGuard, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(inner) = self.body.as_mut() else {
                return Poll::Ready(());
            };
            if inner.is_end_stream() {
                self.body = None;
                return Poll::Ready(());
            }
            // Nothing more to keep (the body is not recorded, or past the limit): the rest
            // streams after the commit. Reading on would hold a download, or a stream that
            // never ends, in memory.
            if !guard.get_mut().is_some_and(|c| c.response.wants_more()) {
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
                    self.frames.clear();
                    self.failed = true;
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

/// Why the layer answers a request itself, without the handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The request body is over the body limit: `413`.
    TooLarge,
    /// The request body ended before it was complete: `400`.
    Incomplete,
    /// The request body did not arrive within the read timeout: `408`.
    TimedOut,
    /// The budget for bodies read ahead of handlers is spent: `503`.
    OverBudget,
    /// Strict mode, and the sink cannot store records: `503`.
    Unavailable,
    /// Strict mode, and the handler's response body failed before it was released: `500`.
    BodyFailed,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Incomplete => StatusCode::BAD_REQUEST,
            Self::TimedOut => StatusCode::REQUEST_TIMEOUT,
            Self::OverBudget | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::TooLarge => "request body too large",
            Self::Incomplete => "request body incomplete",
            Self::TimedOut => "request body timed out",
            Self::OverBudget => "server busy: too many request bodies in flight",
            Self::Unavailable => "audit log unavailable",
            Self::BodyFailed => "response body failed",
        }
    }
}

/// A plain-text response the layer produces itself, with the trace id when there is one.
fn layer_response<RB>(
    refusal: Refusal,
    mut guard: AuditGuard,
    ray_id: Option<(HeaderName, HeaderValue)>,
) -> Response<AuditBody<RB>> {
    // No handler ran and the record keeps none of this answer: it is complete as it is made.
    guard.finish(Ending::Complete);
    let mut response = Response::new(AuditBody::layer(refusal.message()));
    *response.status_mut() = refusal.status();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if refusal == Refusal::OverBudget {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
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

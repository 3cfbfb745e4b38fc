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
        // Strict mode: the response is held until its record is committed.
        Committing {
            parts: Option<response::Parts>,
            body: Option<Pin<Box<RB>>>,
            frames: VecDeque<Frame<Bytes>>,
            commit: Option<Commit>,
        },
        Rejected { status: StatusCode },
        // Backpressure: the sink is full; the request waits before it is served.
        Waiting {
            wait: Backpressure,
            then: Option<Then<S, B>>,
        },
    }
}

/// How a request that waited for the sink goes on.
pub(crate) enum Then<S, B> {
    /// Calls the service (made ready for this request) with the streaming request.
    Call(S, Request<AuditRequestBody<B>>),
    /// Reads the body ahead, then calls the service.
    Read(ReadFuture, S, request::Parts),
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
            state: State::Reading {
                read,
                service: Some(service),
                parts: Some(parts),
                _body: PhantomData,
            },
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
            match this.state.as_mut().project() {
                StateProj::Reading {
                    read,
                    service,
                    parts,
                    ..
                } => {
                    let outcome = ready!(read.as_mut().poll(cx));
                    let (Some(mut service), Some(parts)) = (service.take(), parts.take()) else {
                        unreachable!("the request is read once");
                    };
                    let (data, trailers) = match outcome {
                        BodyRead::Complete(data, trailers) => (data, trailers),
                        BodyRead::OverLimit(limit) => {
                            this.guard.set_request(RequestBody::OverLimit(limit));
                            this.state.set(State::Rejected {
                                status: StatusCode::PAYLOAD_TOO_LARGE,
                            });
                            continue;
                        }
                        BodyRead::Incomplete => {
                            this.guard.set_request(RequestBody::Incomplete);
                            this.state.set(State::Rejected {
                                status: StatusCode::BAD_REQUEST,
                            });
                            continue;
                        }
                    };
                    this.guard.set_request(RequestBody::Complete(data.clone()));
                    let req =
                        Request::from_parts(parts, AuditRequestBody::buffered(data, trailers));
                    let future = service.call(req);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let polled = poll_watched(this.guard, |cx| future.poll(cx), cx);
                    let mut response = match ready!(polled) {
                        Ok(response) => response,
                        Err(e) => {
                            // The server turns this into a dropped connection: abandoned.
                            if let Some(capture) = this.guard.get_mut() {
                                capture.status = Some(StatusCode::INTERNAL_SERVER_ERROR.as_u16());
                            }
                            this.guard.finish(Ending::Abandoned);
                            return Poll::Ready(Err(e));
                        }
                    };
                    let identity = Identity::take_from_headers(response.headers_mut());
                    let mut strict = false;
                    if let Some(capture) = this.guard.get_mut() {
                        capture.status = Some(response.status().as_u16());
                        capture.header_identity = identity;
                        if capture.response.limit.is_some() {
                            capture.response_type =
                                response.headers().get(http::header::CONTENT_TYPE).cloned();
                        }
                        strict = capture.strict;
                    }
                    if let Some((name, value)) = this.ray_id.as_ref() {
                        response.headers_mut().insert(name.clone(), value.clone());
                    }
                    if strict {
                        let (parts, body) = response.into_parts();
                        this.state.set(State::Committing {
                            parts: Some(parts),
                            body: Some(Box::pin(body)),
                            frames: VecDeque::new(),
                            commit: None,
                        });
                        continue;
                    }
                    // No body follows a HEAD response or a 1xx/204/304: servers (and axum, for
                    // HEAD) drop it unread, so the exchange is complete with the head.
                    let status = response.status();
                    let head = this
                        .guard
                        .get_mut()
                        .is_some_and(|c| c.method == http::Method::HEAD);
                    if head
                        || status.is_informational()
                        || status == StatusCode::NO_CONTENT
                        || status == StatusCode::NOT_MODIFIED
                    {
                        this.guard.finish(Ending::Complete);
                    }
                    let guard = this.guard.take();
                    return Poll::Ready(Ok(response.map(|body| AuditBody::new(body, guard))));
                }
                StateProj::Committing {
                    parts,
                    body,
                    frames,
                    commit,
                } => {
                    if commit.is_none() {
                        ready!(read_held_body(this.guard, body, frames, cx));
                        // The record is complete as far as it goes: the rest of an over-limit
                        // body streams after the commit, unrecorded.
                        match this.guard.take_record(Ending::Complete) {
                            Some((record, sink)) => *commit = Some(sink.submit_and_commit(record)),
                            None => *commit = Some(Box::pin(std::future::ready(Ok(())))),
                        }
                    }
                    let Some(pending) = commit.as_mut() else {
                        unreachable!("set above");
                    };
                    let committed = ready!(pending.as_mut().poll(cx));
                    let Some(parts) = parts.take() else {
                        unreachable!("the response is released once");
                    };
                    if let Err(e) = committed {
                        tracing::error!(target: "audit", "strict mode: {e}; answering 503");
                        let mut refusal =
                            layer_response(StatusCode::SERVICE_UNAVAILABLE, AuditGuard::none());
                        if let Some((name, value)) = this.ray_id.take() {
                            refusal.headers_mut().insert(name, value);
                        }
                        return Poll::Ready(Ok(refusal));
                    }
                    let body = AuditBody::replay(std::mem::take(frames), body.take());
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
                StateProj::Waiting { wait, then } => {
                    ready!(wait.as_mut().poll(cx));
                    match then.take() {
                        Some(Then::Call(mut service, req)) => {
                            let future = service.call(req);
                            this.state.set(State::Calling { future });
                        }
                        Some(Then::Read(read, service, parts)) => {
                            this.state.set(State::Reading {
                                read,
                                service: Some(service),
                                parts: Some(parts),
                                _body: PhantomData,
                            });
                        }
                        None => unreachable!("a request goes on once"),
                    }
                }
                StateProj::Rejected { status } => {
                    let status = *status;
                    if let Some(capture) = this.guard.get_mut() {
                        capture.status = Some(status.as_u16());
                        capture.response = ResponseCopy::new(None);
                    }
                    let mut response = layer_response(status, this.guard.take());
                    if let Some((name, value)) = this.ray_id.take() {
                        response.headers_mut().insert(name, value);
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

/// Reads a held response body into `frames`, copying data for the record, until it ends or
/// passes the body limit. A body that fails is recorded as abandoned.
fn read_held_body<RB>(
    guard: &mut AuditGuard,
    body: &mut Option<Pin<Box<RB>>>,
    frames: &mut VecDeque<Frame<Bytes>>,
    cx: &mut Context<'_>,
) -> Poll<()>
where
    RB: Body<Data = Bytes>,
{
    loop {
        let Some(inner) = body.as_mut() else {
            return Poll::Ready(());
        };
        if inner.is_end_stream() {
            *body = None;
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
                frames.push_back(frame);
            }
            Some(Err(_)) => {
                *body = None;
                guard.finish(Ending::Abandoned);
                return Poll::Ready(());
            }
            None => {
                *body = None;
                return Poll::Ready(());
            }
        }
    }
}

/// A plain-text response the layer produces itself.
fn layer_response<RB>(status: StatusCode, guard: AuditGuard) -> Response<AuditBody<RB>> {
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

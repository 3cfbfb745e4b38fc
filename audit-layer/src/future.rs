use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, request};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{AuditBody, AuditRequestBody, poll_watched};
use crate::capture::{AuditGuard, Ending, RequestBody, ResponseCopy};
use crate::identity::Identity;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<AuditRequestBody<B>>>,
    {
        #[pin]
        state: State<S::Future, S, B>,
        guard: AuditGuard,
        ray_id: Option<(HeaderName, HeaderValue)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B> {
        Reading {
            read: ReadFuture,
            service: Option<S>,
            parts: Option<request::Parts>,
            _body: std::marker::PhantomData<fn(B)>,
        },
        Calling { #[pin] future: F },
        Rejected { status: StatusCode },
    }
}

impl<S, B> ResponseFuture<S, B>
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
                _body: std::marker::PhantomData,
            },
            guard,
            ray_id: Some(ray_id),
        }
    }

    pub(crate) fn rejected(guard: AuditGuard, ray_id: (HeaderName, HeaderValue)) -> Self {
        Self {
            state: State::Rejected {
                status: StatusCode::PAYLOAD_TOO_LARGE,
            },
            guard,
            ray_id: Some(ray_id),
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<AuditRequestBody<B>>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Output = Result<Response<AuditBody<ResBody>>, S::Error>;

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
                    if let Some(capture) = this.guard.get_mut() {
                        capture.status = Some(response.status().as_u16());
                        capture.header_identity = identity;
                        if capture.response.limit.is_some() {
                            capture.response_type =
                                response.headers().get(http::header::CONTENT_TYPE).cloned();
                        }
                    }
                    if let Some((name, value)) = this.ray_id.take() {
                        response.headers_mut().insert(name, value);
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
                StateProj::Rejected { status } => {
                    let status = *status;
                    if let Some(capture) = this.guard.get_mut() {
                        capture.status = Some(status.as_u16());
                        capture.response = ResponseCopy::new(None);
                    }
                    let message = match status {
                        StatusCode::PAYLOAD_TOO_LARGE => "request body too large",
                        _ => "request body incomplete",
                    };
                    let mut response = Response::new(AuditBody::layer(message, this.guard.take()));
                    *response.status_mut() = status;
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    if let Some((name, value)) = this.ray_id.take() {
                        response.headers_mut().insert(name, value);
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<AuditRequestBody<B>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

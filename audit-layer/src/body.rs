//! The request and response bodies of an audited service.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::capture::{AuditGuard, Ending};

pin_project! {
    /// The request body the inner service receives.
    ///
    /// Either the original body, untouched, or — when the operation records request bodies —
    /// the identical bytes the layer read ahead of the handler.
    pub struct AuditRequestBody<B> {
        #[pin]
        kind: RequestKind<B>,
    }
}

pin_project! {
    #[project = RequestKindProj]
    enum RequestKind<B> {
        Streaming { #[pin] body: B },
        Buffered { data: Option<Bytes>, trailers: Option<HeaderMap> },
    }
}

impl<B> AuditRequestBody<B> {
    pub(crate) fn streaming(body: B) -> Self {
        Self {
            kind: RequestKind::Streaming { body },
        }
    }

    pub(crate) fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: RequestKind::Buffered {
                data: Some(data).filter(|d| !d.is_empty()),
                trailers,
            },
        }
    }
}

impl<B> Body for AuditRequestBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            RequestKindProj::Streaming { body } => body.poll_frame(cx),
            RequestKindProj::Buffered { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestKind::Streaming { body } => body.is_end_stream(),
            RequestKind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestKind::Streaming { body } => body.size_hint(),
            RequestKind::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

pin_project! {
    /// The response body of an audited service.
    ///
    /// Frames pass through as they come; nothing is buffered before it is sent. When the
    /// operation records response bodies, a copy of the data is kept up to the body limit. The
    /// record is emitted when the body ends, or when it is dropped before its end (the client
    /// went away): the guard it holds emits on drop.
    pub struct AuditBody<B> {
        #[pin]
        kind: ResponseKind<B>,
        guard: AuditGuard,
    }
}

pin_project! {
    #[project = ResponseKindProj]
    enum ResponseKind<B> {
        Inner { #[pin] body: B },
        Layer { data: Option<Bytes> },
    }
}

impl<B: Body> AuditBody<B> {
    pub(crate) fn new(body: B, mut guard: AuditGuard) -> Self {
        // A server may drop a body that reports its end without ever polling it (an empty
        // body, a HEAD response): such an exchange is complete now.
        if body.is_end_stream() {
            guard.finish(Ending::Complete);
        }
        Self {
            kind: ResponseKind::Inner { body },
            guard,
        }
    }
}

impl<B> AuditBody<B> {
    /// A response the layer itself produced (a request it refused).
    pub(crate) fn layer(message: &'static str, guard: AuditGuard) -> Self {
        Self {
            kind: ResponseKind::Layer {
                data: Some(Bytes::from_static(message.as_bytes())),
            },
            guard,
        }
    }
}

impl<B> Body for AuditBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let (frame, ended, copy) = match this.kind.project() {
            ResponseKindProj::Inner { mut body } => {
                let frame = ready!(poll_watched(
                    this.guard,
                    |cx| body.as_mut().poll_frame(cx),
                    cx
                ));
                let ended = match &frame {
                    None => Some(Ending::Complete),
                    Some(Err(_)) => Some(Ending::Abandoned),
                    Some(Ok(_)) => body.is_end_stream().then_some(Ending::Complete),
                };
                (frame, ended, true)
            }
            ResponseKindProj::Layer { data } => {
                // The layer's own refusal message is not the operation's response.
                let frame = data.take().map(|d| Ok(Frame::data(d)));
                (frame, Some(Ending::Complete), false)
            }
        };
        if copy
            && let (Some(Ok(frame)), Some(capture)) = (&frame, this.guard.get_mut())
            && let Some(data) = frame.data_ref()
        {
            capture.response.push(data);
        }
        // Fire as soon as the end is known: the server may never poll again.
        if let Some(ending) = ended {
            this.guard.finish(ending);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Inner { body } => body.is_end_stream(),
            ResponseKind::Layer { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Inner { body } => body.size_hint(),
            ResponseKind::Layer { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// Polls `poll` with the guard's capture marked as inside the service, so that a guard dropped
/// in the middle (a panic caught further out) knows the service panicked.
pub(crate) fn poll_watched<T>(
    guard: &mut AuditGuard,
    poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    cx: &mut Context<'_>,
) -> Poll<T> {
    guard.set_in_service(true);
    let result = poll(cx);
    guard.set_in_service(false);
    result
}

impl<B> std::fmt::Debug for AuditRequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            RequestKind::Streaming { .. } => "streaming",
            RequestKind::Buffered { .. } => "buffered",
        };
        f.debug_struct("AuditRequestBody")
            .field("kind", &kind)
            .finish()
    }
}

impl<B> std::fmt::Debug for AuditBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditBody").finish_non_exhaustive()
    }
}

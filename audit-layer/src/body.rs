//! The request and response bodies of an audited service.

use std::collections::VecDeque;
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
        Buffered { body: Buffered },
    }
}

/// A body held whole: its data in one frame, then its trailers.
#[derive(Debug)]
struct Buffered {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Buffered {
    fn new(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            data: Some(data).filter(|d| !d.is_empty()),
            trailers,
        }
    }

    fn next_frame(&mut self) -> Option<Frame<Bytes>> {
        self.data
            .take()
            .map(Frame::data)
            .or_else(|| self.trailers.take().map(Frame::trailers))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
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
                body: Buffered::new(data, trailers),
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
            RequestKindProj::Buffered { body } => Poll::Ready(body.next_frame().map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestKind::Streaming { body } => body.is_end_stream(),
            RequestKind::Buffered { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestKind::Streaming { body } => body.size_hint(),
            RequestKind::Buffered { body } => body.size_hint(),
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
        Layer { body: Buffered },
        // Strict mode: frames read ahead of the commit, then the rest of the body.
        Replay { frames: VecDeque<Frame<Bytes>>, rest: Option<Pin<Box<B>>> },
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
    /// A body whose first `frames` were read ahead (strict mode), followed by `rest`.
    pub(crate) fn replay(frames: VecDeque<Frame<Bytes>>, rest: Option<Pin<Box<B>>>) -> Self {
        Self {
            kind: ResponseKind::Replay { frames, rest },
            guard: AuditGuard::none(),
        }
    }

    /// A response the layer itself produced (a request it refused; its record is emitted
    /// already).
    pub(crate) fn layer(message: &'static str) -> Self {
        Self {
            kind: ResponseKind::Layer {
                body: Buffered::new(Bytes::from_static(message.as_bytes()), None),
            },
            guard: AuditGuard::none(),
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
            ResponseKindProj::Layer { body } => {
                // The layer's own refusal message is not the operation's response.
                (body.next_frame().map(Ok), Some(Ending::Complete), false)
            }
            ResponseKindProj::Replay { frames, rest } => {
                // The record was committed before this body was released.
                if let Some(frame) = frames.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                return match rest.as_mut() {
                    Some(body) => body.as_mut().poll_frame(cx),
                    None => Poll::Ready(None),
                };
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
            ResponseKind::Layer { body } => body.is_end_stream(),
            ResponseKind::Replay { frames, rest } => {
                frames.is_empty() && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Inner { body } => body.size_hint(),
            ResponseKind::Layer { body } => body.size_hint(),
            ResponseKind::Replay { frames, rest } => {
                let held: u64 = frames
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum();
                let rest = rest
                    .as_ref()
                    .map_or(SizeHint::with_exact(0), |b| b.size_hint());
                // Upper first: `set_lower` past the current upper bound panics.
                let mut hint = SizeHint::new();
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + held);
                }
                hint.set_lower(rest.lower() + held);
                hint
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

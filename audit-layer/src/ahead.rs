//! Request bodies read ahead of the handler (for the record, before the app's auth has run),
//! and what bounds them: the body limit, a time limit for the whole body to arrive, and one
//! byte budget shared by every request of a layer.
//!
//! The budget is charged with what is held, as it arrives: a body's buffer is charged before
//! it grows. A declared `Content-Length` is not charged ahead: a client would otherwise hold
//! the budget with requests that promise a megabyte and send nothing, shutting out every
//! audited write for the read timeout at no cost. When the budget cannot cover a body, the
//! request is refused (`503`) before the handler runs; the charge is returned as soon as the
//! body is handed to the handler, or refused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;

use crate::BoxError;

/// The default time a body read ahead of the handler may take to arrive whole: 10 s.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The default byte budget for bodies read ahead of handlers, all requests together: 32 MiB
/// (with hyper's own read buffers on top, 500 stalled connections add about 51 MiB; see
/// `demo_attacks`'s stalled-bodies test).
pub const DEFAULT_BODY_BUDGET: usize = 32 * 1024 * 1024;

/// The outcome of reading a request body ahead of the handler.
pub(crate) enum BodyRead {
    /// The whole body, and its trailers.
    Complete(Bytes, Option<HeaderMap>),
    /// Longer than the body limit.
    OverLimit(usize),
    /// The budget for bodies read ahead could not hold it.
    OverBudget(usize),
    /// It did not arrive whole within the time limit.
    TimedOut(Duration),
    /// It failed before its end (the client went away, or sent a broken body).
    Incomplete,
}

pub(crate) type ReadFuture = Pin<Box<dyn Future<Output = BodyRead> + Send>>;

/// The bytes held by bodies read ahead of their handlers, for all requests of a layer.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    limit: usize,
    held: AtomicUsize,
}

impl BodyBudget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            held: AtomicUsize::new(0),
        }
    }

    /// The budget, in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes charged now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Charges `bytes`, if the budget has room for them.
    fn try_charge(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// What one body has charged to the budget; returned when dropped.
struct Charge {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Charge {
    /// Raises the charge to `bytes`; `false` (and no change) when the budget cannot hold it.
    fn cover(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        if !self.budget.try_charge(bytes - self.bytes) {
            return false;
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// How a body read ahead is bounded.
pub(crate) struct Bounds {
    /// The body limit.
    pub(crate) limit: usize,
    /// The length the request declared, if any (already checked against the limit).
    pub(crate) declared: Option<usize>,
    /// The time the whole body may take.
    pub(crate) timeout: Duration,
    /// The shared budget.
    pub(crate) budget: Arc<BodyBudget>,
}

/// Reads `body` whole within `bounds`.
pub(crate) fn read_ahead<B>(body: B, bounds: Bounds) -> ReadFuture
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Box::pin(async move {
        let mut charge = Charge {
            budget: bounds.budget,
            bytes: 0,
        };
        let timeout = bounds.timeout;
        let mut read = std::pin::pin!(collect(body, bounds.limit, bounds.declared, &mut charge));
        // Most bodies are whole at the first poll: they need no timer.
        let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        if let Poll::Ready(outcome) = first {
            return outcome;
        }
        // The timer is made here, on the runtime that polls the read.
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or(BodyRead::TimedOut(timeout))
    })
}

/// The frames of `body`, joined, charging what is held to `charge`.
async fn collect<B>(body: B, limit: usize, declared: Option<usize>, charge: &mut Charge) -> BodyRead
where
    B: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    // A body that comes in one frame (the usual case) is kept as it came; from the second
    // frame on, the data is copied into one buffer, so that the server's read buffers are not
    // held by the chunks.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return BodyRead::Incomplete;
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
                continue;
            }
        };
        let len = first.as_ref().map_or(0, Bytes::len) + joined.len() + data.len();
        if len > limit {
            return BodyRead::OverLimit(limit);
        }
        if first.is_none() && joined.is_empty() {
            if !charge.cover(len) {
                return BodyRead::OverBudget(charge.budget.limit());
            }
            first = Some(data);
            continue;
        }
        if let Some(first) = first.take() {
            // Room for what is here and as much again, up to the declared length: the buffer
            // (and its charge) grows with what arrives, never ahead of it by more than double.
            let room = declared.map_or(len * 2, |declared| declared.clamp(len, len * 2));
            joined.reserve(room);
            joined.extend_from_slice(&first);
        }
        if !charge.cover(joined.capacity().max(len)) {
            return BodyRead::OverBudget(charge.budget.limit());
        }
        joined.extend_from_slice(&data);
        if !charge.cover(joined.capacity()) {
            return BodyRead::OverBudget(charge.budget.limit());
        }
    }
    let data = first.unwrap_or_else(|| joined.freeze());
    BodyRead::Complete(data, trailers)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::{Full, StreamBody};

    use super::*;

    fn bounds(budget: &Arc<BodyBudget>, declared: Option<usize>) -> Bounds {
        Bounds {
            limit: 1024,
            declared,
            timeout: Duration::from_secs(10),
            budget: Arc::clone(budget),
        }
    }

    type Chunks =
        StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

    fn chunks() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
        Chunks,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (
            tx,
            StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
    }

    #[tokio::test]
    async fn a_whole_body_is_read_and_its_charge_returned() {
        let budget = Arc::new(BodyBudget::new(100));
        let body = Full::new(Bytes::from_static(b"{\"a\":1}"));
        let BodyRead::Complete(data, None) = read_ahead(body, bounds(&budget, Some(7))).await
        else {
            panic!("a complete body");
        };
        assert_eq!(&data[..], b"{\"a\":1}");
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn chunks_are_joined_and_trailers_kept() {
        let budget = Arc::new(BodyBudget::new(1024));
        let (tx, body) = chunks();
        let read = tokio::spawn(read_ahead(body, bounds(&budget, None)));
        tx.send(Ok(Frame::data(Bytes::from_static(b"ab"))))
            .await
            .ok();
        tx.send(Ok(Frame::data(Bytes::from_static(b"cd"))))
            .await
            .ok();
        let mut t = HeaderMap::new();
        t.insert("x-sum", http::HeaderValue::from_static("1"));
        tx.send(Ok(Frame::trailers(t))).await.ok();
        drop(tx);
        let BodyRead::Complete(data, Some(trailers)) = read.await.expect("no panic") else {
            panic!("a complete body with trailers");
        };
        assert_eq!(&data[..], b"abcd");
        assert_eq!(trailers["x-sum"], "1");
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_declared_length_is_not_charged_before_its_bytes_arrive() {
        let budget = Arc::new(BodyBudget::new(1000));
        // Bodies that declare 1,000 bytes and send nothing hold nothing of the budget.
        let mut stalled = Vec::new();
        for _ in 0..5 {
            let (tx, body) = chunks();
            stalled.push((
                tx,
                tokio::spawn(read_ahead(body, bounds(&budget, Some(1000)))),
            ));
        }
        tokio::task::yield_now().await;
        assert_eq!(budget.held(), 0);
        let body = Full::new(Bytes::from_static(b"{}"));
        let outcome = read_ahead(body, bounds(&budget, Some(2))).await;
        assert!(
            matches!(outcome, BodyRead::Complete(..)),
            "a real body is read"
        );
        // What does arrive is charged: 600 bytes held, another 600 do not fit.
        let (held_tx, held) = chunks();
        let holding = tokio::spawn(read_ahead(held, bounds(&budget, Some(1000))));
        held_tx
            .send(Ok(Frame::data(Bytes::from(vec![b'x'; 600]))))
            .await
            .ok();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(budget.held(), 600);
        let second = Full::new(Bytes::from(vec![b'y'; 600]));
        let outcome = read_ahead(second, bounds(&budget, Some(600))).await;
        assert!(matches!(outcome, BodyRead::OverBudget(1000)));
        assert_eq!(budget.held(), 600, "the refused body's charge is returned");
        drop(held_tx);
        let _ = holding.await;
        drop(stalled);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn an_undeclared_body_is_charged_as_it_grows() {
        let budget = Arc::new(BodyBudget::new(64));
        let (tx, body) = chunks();
        let read = tokio::spawn(read_ahead(body, bounds(&budget, None)));
        for _ in 0..3 {
            tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 30]))))
                .await
                .ok();
        }
        let outcome = read.await.expect("no panic");
        assert!(matches!(outcome, BodyRead::OverBudget(64)));
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_is_timed_out() {
        let budget = Arc::new(BodyBudget::new(1024));
        let (tx, body) = chunks();
        tx.send(Ok(Frame::data(Bytes::from_static(b"{"))))
            .await
            .ok();
        let mut bounds = bounds(&budget, Some(10));
        bounds.timeout = Duration::from_millis(500);
        let outcome = read_ahead(body, bounds).await;
        assert!(matches!(outcome, BodyRead::TimedOut(t) if t == Duration::from_millis(500)));
        assert_eq!(budget.held(), 0);
        drop(tx);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_stopped() {
        let budget = Arc::new(BodyBudget::new(1 << 20));
        let body = Full::new(Bytes::from(vec![b'x'; 2000]));
        let outcome = read_ahead(body, bounds(&budget, None)).await;
        assert!(matches!(outcome, BodyRead::OverLimit(1024)));
        assert_eq!(budget.held(), 0);
    }
}

//! Reading what a client still sends after we stopped wanting it.
//!
//! When a request is refused before its body was read (too large, or no
//! access), dropping the body makes hyper reset the stream: HTTP/2 sends
//! RST_STREAM before our answer, and HTTP/1.1 closes while the client is
//! still sending, so the kernel answers its data with a reset. Either way the
//! client sees a broken connection instead of our 413 or 403. nginx avoids
//! this with its lingering close; we do the same per request: a body dropped
//! before its end is handed to a task that reads and discards the rest, for
//! a bounded time and amount, while the answer goes out.

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long a dropped body is read in all, and at most between two frames.
const DRAIN_FOR: Duration = Duration::from_secs(10);
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// How much a dropped body may still deliver before we stop reading it.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;

/// A request body that is read to its end (bounded) when dropped early.
pub struct DrainOnDrop<B>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
{
    inner: Option<Pin<Box<B>>>,
    ended: bool,
}

impl<B> DrainOnDrop<B>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
{
    pub fn new(body: B) -> Self {
        let ended = body.is_end_stream();
        DrainOnDrop {
            inner: Some(Box::pin(body)),
            ended,
        }
    }
}

impl<B> HttpBody for DrainOnDrop<B>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = inner.as_mut().poll_frame(cx);
        match &polled {
            // An error ends the body too: nothing more will come.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.ended = true,
            Poll::Ready(Some(Ok(_))) => this.ended = inner.is_end_stream(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl<B> Drop for DrainOnDrop<B>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
{
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if self.ended || body.is_end_stream() {
            return;
        }
        // Dropped outside a runtime (a test, a shutdown): nothing to drain with.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(drain(body));
    }
}

async fn drain<B>(mut body: Pin<Box<B>>)
where
    B: HttpBody<Data = Bytes> + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + DRAIN_FOR;
    let mut read = 0u64;
    while read < DRAIN_BYTES {
        let next = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx));
        let until = deadline.min(tokio::time::Instant::now() + DRAIN_IDLE);
        match tokio::time::timeout_at(until, next).await {
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            // The end, a broken connection, or out of time: stop reading.
            Ok(None) | Ok(Some(Err(_))) | Err(_) => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Chunk = Result<Frame<Bytes>, std::convert::Infallible>;

    #[tokio::test]
    async fn a_body_dropped_early_is_read_to_its_end() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(1);
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        let body = DrainOnDrop::new(StreamBody::new(stream));
        drop(body);
        // The sender can deliver everything: someone is still reading.
        for _ in 0..10 {
            tx.send(Ok(Frame::data(Bytes::from_static(b"0123456789"))))
                .await
                .expect("the drain still reads");
        }
    }

    #[tokio::test]
    async fn a_body_read_whole_is_not_drained() {
        let body = DrainOnDrop::new(http_body_util::Full::new(Bytes::from_static(b"abc")));
        let bytes = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(bytes.ok().as_deref(), Some(&b"abc"[..]));
    }
}

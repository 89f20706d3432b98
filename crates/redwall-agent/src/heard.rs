//! When the hub was last heard from, byte by byte.
//!
//! The agent takes the link for dead when nothing came from the hub for
//! three heartbeat intervals. A large frame (a snapshot, an agent build of
//! tens of megabytes over a slow site uplink) can take longer than that
//! to arrive whole, while its bytes keep coming: judged by whole frames,
//! the agent would hang up in the middle of every large download and never
//! get it. So the socket itself records when it last read anything.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The last time bytes arrived, shared with the connection's loop.
#[derive(Clone)]
pub(crate) struct LastHeard {
    start: Instant,
    /// Milliseconds after `start`.
    at_ms: Arc<AtomicU64>,
}

impl LastHeard {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            at_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Something arrived now (also: a frame was just handled, however long
    /// that took).
    pub(crate) fn mark(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms, Ordering::Relaxed);
    }

    /// When bytes last arrived.
    pub(crate) fn at(&self) -> Instant {
        self.start + std::time::Duration::from_millis(self.at_ms.load(Ordering::Relaxed))
    }
}

/// A stream that marks [`LastHeard`] whenever a read brings bytes.
pub(crate) struct Heard<S> {
    inner: S,
    heard: LastHeard,
}

impl<S> Heard<S> {
    pub(crate) fn new(inner: S, heard: LastHeard) -> Self {
        heard.mark();
        Self { inner, heard }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Heard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.mark();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Heard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn bytes_arriving_are_marked_as_they_come() {
        let (mut far, near) = tokio::io::duplex(64);
        let heard = LastHeard::new();
        let mut stream = Heard::new(near, heard.clone());
        let opened = heard.at();
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert_eq!(heard.at(), opened, "nothing read yet");
        far.write_all(b"x").await.unwrap_or_default();
        let mut b = [0u8; 1];
        let _ = stream.read(&mut b).await;
        assert!(heard.at() >= opened + std::time::Duration::from_millis(30));
    }
}

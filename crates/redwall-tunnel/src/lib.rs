//! The tunnel of a remote agent's connection.
//!
//! An agent keeps one WebSocket open to the hub. Its text frames are the
//! protocol's messages; its binary frames, in order, are the bytes of one
//! yamux session (libp2p's `yamux`: streams, per-stream flow control and
//! windows), in which the hub opens a stream per HTTP connection its proxy
//! makes to the agent's Node-RED and the agent accepts them. A slow stream
//! holds at most its window, so it never stalls the others or the
//! messages.
//!
//! This crate knows nothing of WebSockets or HTTP: the connection's loop
//! moves bytes between its frames and a [`Carrier`]; the hub asks an
//! [`Opener`] for streams; the agent gets each stream the hub opened. When
//! the connection ends the carrier is dropped, and with it the session and
//! every stream in it.

use std::future::poll_fn;
use std::task::Poll;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt as _, TokioAsyncReadCompatExt as _};

/// A stream of the tunnel: one HTTP/1.1 connection's bytes, as tokio I/O.
pub type TunnelStream = Compat<yamux::Stream>;

/// Bytes buffered between the connection's loop and the session.
const PIPE_BYTES: usize = 256 * 1024;
/// Largest binary frame the carrier hands the connection's loop.
pub const MAX_TUNNEL_FRAME: usize = 16 * 1024;
/// Streams open at once in one agent's tunnel.
pub const MAX_STREAMS: usize = 256;

/// The tunnel is gone (the connection ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the agent's tunnel is closed")
    }
}

impl std::error::Error for Closed {}

/// What the connection's loop moves bytes with: frames for the peer out,
/// the peer's frames in.
pub struct Carrier {
    from_session: ReadHalf<DuplexStream>,
    to_session: WriteHalf<DuplexStream>,
    buffer: Vec<u8>,
}

impl Carrier {
    /// The next binary frame to send to the peer; `None` once the session
    /// ended. Cancel-safe: a frame is taken only when this returns.
    pub async fn next_frame(&mut self) -> Option<Vec<u8>> {
        match self.from_session.read(&mut self.buffer).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(self.buffer[..n].to_vec()),
        }
    }

    /// A binary frame the peer sent. Waits while the session has
    /// [`PIPE_BYTES`] unread (yamux's windows keep that short).
    pub async fn deliver(&mut self, frame: &[u8]) -> Result<(), Closed> {
        self.to_session.write_all(frame).await.map_err(|_| Closed)
    }
}

/// Asks the hub's end of a tunnel for new streams.
#[derive(Clone)]
pub struct Opener {
    requests: mpsc::Sender<oneshot::Sender<Result<TunnelStream, Closed>>>,
}

impl Opener {
    /// A new stream to the agent. Opening costs no round trip: what is
    /// written goes right behind the stream's first frame.
    pub async fn open(&self) -> Result<TunnelStream, Closed> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).await.map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)?
    }

    /// Whether the tunnel has ended.
    pub fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }
}

fn config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(MAX_STREAMS);
    config
}

fn pipe() -> (Carrier, Compat<DuplexStream>) {
    let (loop_end, session_end) = tokio::io::duplex(PIPE_BYTES);
    let (from_session, to_session) = tokio::io::split(loop_end);
    let carrier = Carrier {
        from_session,
        to_session,
        buffer: vec![0; MAX_TUNNEL_FRAME],
    };
    (carrier, session_end.compat())
}

/// The hub's end: it opens streams, and refuses any the agent opens.
/// Spawns the session's task on the current tokio runtime.
pub fn hub_end() -> (Opener, Carrier) {
    let (carrier, io) = pipe();
    let mut session = yamux::Connection::new(io, config(), yamux::Mode::Client);
    let (requests, mut asked) = mpsc::channel::<oneshot::Sender<Result<TunnelStream, Closed>>>(64);
    tokio::spawn(async move {
        let mut waiting: Option<oneshot::Sender<Result<TunnelStream, Closed>>> = None;
        let mut askers_left = true;
        poll_fn(|cx| loop {
            if waiting.is_none() && askers_left {
                match asked.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => waiting = Some(reply),
                    // Nobody can ask any more; the session still runs
                    // until its connection ends (the carrier is dropped).
                    Poll::Ready(None) => askers_left = false,
                    Poll::Pending => {}
                }
            }
            if let Some(reply) = waiting.take() {
                match session.poll_new_outbound(cx) {
                    Poll::Ready(opened) => {
                        let _ = reply.send(opened.map(|s| s.compat()).map_err(|_| Closed));
                        continue;
                    }
                    Poll::Pending => waiting = Some(reply),
                }
            }
            // Drives the whole session: reads frames, moves data, windows.
            match session.poll_next_inbound(cx) {
                // The agent may not open streams; dropping one resets it.
                Poll::Ready(Some(Ok(_refused))) => continue,
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
    });
    (Opener { requests }, carrier)
}

/// The agent's end: every stream the hub opens goes to `on_stream`.
/// Spawns the session's task on the current tokio runtime.
pub fn agent_end<F>(mut on_stream: F) -> Carrier
where
    F: FnMut(TunnelStream) + Send + 'static,
{
    let (carrier, io) = pipe();
    let mut session = yamux::Connection::new(io, config(), yamux::Mode::Server);
    tokio::spawn(async move {
        poll_fn(|cx| loop {
            match session.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => on_stream(stream.compat()),
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!("the tunnel ended: {e}");
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
    });
    carrier
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Moves frames between the two carriers, as the WebSocket would.
    fn link(mut hub: Carrier, mut agent: Carrier) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    frame = hub.next_frame() => match frame {
                        Some(f) => { if agent.deliver(&f).await.is_err() { return } }
                        None => return,
                    },
                    frame = agent.next_frame() => match frame {
                        Some(f) => { if hub.deliver(&f).await.is_err() { return } }
                        None => return,
                    },
                }
            }
        })
    }

    /// An agent that echoes every stream back.
    fn echo_agent() -> Carrier {
        agent_end(|mut stream| {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            let _ = stream.flush().await;
                        }
                    }
                }
                let _ = stream.shutdown().await;
            });
        })
    }

    #[tokio::test]
    async fn streams_carry_bytes_both_ways_and_apart() {
        let (opener, hub) = hub_end();
        let _link = link(hub, echo_agent());
        let mut tasks = Vec::new();
        for i in 0..20u8 {
            let opener = opener.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = opener.open().await.unwrap();
                // More than one window, so flow control is exercised.
                let sent: Vec<u8> = (0..600_000u32).map(|n| (n as u8) ^ i).collect();
                let (mut r, mut w) = tokio::io::split(&mut s);
                let write = async {
                    w.write_all(&sent).await.unwrap();
                    w.flush().await.unwrap();
                };
                let mut got = vec![0u8; sent.len()];
                let read = r.read_exact(&mut got);
                let ((), read) = tokio::join!(write, read);
                read.unwrap();
                assert!(got == sent, "stream {i} came back different");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_dropped_connection_closes_its_streams_and_refuses_new_ones() {
        let (opener, hub) = hub_end();
        let link = link(hub, echo_agent());
        let mut s = opener.open().await.unwrap();
        s.write_all(b"ping").await.unwrap();
        s.flush().await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        // The WebSocket drops: both carriers go.
        link.abort();
        let _ = link.await;
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest))
                .await
                .expect("an open stream must end when its tunnel ends");
        assert!(read.is_err() || rest.is_empty());
        let open = tokio::time::timeout(std::time::Duration::from_secs(5), opener.open())
            .await
            .expect("opening on a closed tunnel must not hang");
        assert_eq!(open.err(), Some(Closed));
    }
}

//! Keep-alive connections to the instances on loopback.
//!
//! A small pool of hyper HTTP/1.1 connections per instance port. A
//! connection goes back to the pool only once its answer was read whole, so
//! a request never waits behind another one's stream (an endless one, such
//! as server-sent events, keeps its connection; so does an upgraded
//! socket). Node.js closes a keep-alive connection after
//! five idle seconds, so one idle for four is not used again: a request is
//! never written into a socket the instance is closing.
//!
//! The task serving the client also moves the instance connection's bytes
//! while it waits for the answer (see [`Driver`]): at one request at a time
//! that spares two task hand-overs per request, often across threads. Only
//! a streamed answer or an upgraded socket gets a task of its own.

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

type Request = axum::http::Request<Body>;
type Answer = axum::http::Response<Incoming>;

/// Node.js's default `keepAliveTimeout` is 5 s; stay clear of it.
const IDLE_FOR_AT_MOST: Duration = Duration::from_secs(4);
const IDLE_PER_PORT: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a pooled connection may take to be ready for the next request.
const READY_WITHIN: Duration = Duration::from_millis(100);

/// Why an instance could not be asked.
#[derive(Debug)]
pub struct Unreachable;

/// How long opening a connection (TCP, TLS, a tunnel's stream) may take.
pub(super) const CONNECT_WITHIN: Duration = CONNECT_TIMEOUT;

/// Where an instance's Node-RED is reached.
pub enum Via {
    /// A port of this host (its loopback, or its link address when isolated).
    Port(u16),
    /// The tunnel of the agent that runs it; `None` when that agent's
    /// connection is not held by this process.
    Agent(Option<redwall_tunnel::Opener>),
    /// The agent's tunnel held by another replica (`redwall_hub::relay`).
    Relay {
        agent_id: String,
        target: redwall_hub::relay::RelayTarget,
    },
}

/// What reads and writes a connection's socket: hyper's connection future.
pub(super) enum Driver {
    /// Polled by whoever holds the connection, while they wait on it.
    InHand(Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>),
    /// Running as a task of its own.
    Spawned,
    /// The connection is over.
    Ended,
}

impl Driver {
    /// Awaits `work` (a request, an answer's body) while moving the
    /// connection's bytes in this task when the driver is in hand.
    pub(super) async fn drive<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if let Driver::InHand(connection) = self {
                if connection.as_mut().poll(cx).is_ready() {
                    // Its end settles what waited on it (as an error).
                    *self = Driver::Ended;
                }
                // What the driver just read (an answer, the end of a body)
                // is taken now, not on another wake-up of the whole task.
                return work.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    }

    /// Hands the connection to a task of its own, for a stream or an
    /// upgrade that outlives the request's handler.
    pub(super) fn spawn(&mut self) {
        if let Driver::InHand(connection) = std::mem::replace(self, Driver::Spawned) {
            tokio::spawn(async move {
                // Ends when the instance closes the connection or every
                // sender is gone; either way there is nothing to report.
                let _ = connection.await;
            });
        }
    }
}

pub(super) struct Connection {
    pub(super) sender: SendRequest<Body>,
    pub(super) driver: Driver,
}

type Idle = Mutex<HashMap<u16, Vec<(Instant, Connection)>>>;

#[derive(Default)]
pub struct Upstream {
    idle: Arc<Idle>,
    /// Open connections per instance and client (`super::limits`).
    pub open: super::limits::OpenSockets,
    /// Instances run in their own network namespaces, reached at their link
    /// address (`redwall_runtime::instance_address`) instead of loopback.
    isolated: bool,
}

/// A connection in use, until its answer was read whole.
pub struct Lease {
    /// The pool it goes back to; `None` for a tunnel's stream, used once
    /// (opening another costs no round trip).
    port: Option<u16>,
    connection: Connection,
    pool: Arc<Idle>,
}

impl Lease {
    /// Returns the connection to the pool; only once its answer was read whole.
    fn give_back(self) {
        if self.connection.sender.is_closed() || matches!(self.connection.driver, Driver::Ended) {
            return;
        }
        let Some(port) = self.port else {
            return;
        };
        if let Ok(mut idle) = self.pool.lock() {
            let list = idle.entry(port).or_default();
            if list.len() < IDLE_PER_PORT {
                list.push((Instant::now(), self.connection));
            }
        }
    }
}

/// An answer's body that returns its connection to the pool at its end.
struct ReturnsLease {
    body: Incoming,
    lease: Option<Lease>,
}

impl hyper::body::Body for ReturnsLease {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            if let Some(lease) = self.lease.take() {
                lease.give_back();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The answer's body for the client, and the connection back to the pool
/// when that body is over: at once when it is empty, after reading it when
/// it is at most `buffer_up_to` bytes long (so it leaves in one write), or
/// at the end of the stream. `None` when the instance broke off.
pub async fn relay_body(body: Incoming, mut lease: Lease, buffer_up_to: u64) -> Option<Body> {
    if body.is_end_stream() {
        lease.give_back();
        return Some(Body::empty());
    }
    if body.size_hint().exact().is_some_and(|n| n <= buffer_up_to) {
        let bytes = lease.connection.driver.drive(body.collect()).await.ok()?;
        lease.give_back();
        return Some(Body::from(bytes.to_bytes()));
    }
    // The client reads this at its own pace, after the handler returned.
    lease.connection.driver.spawn();
    Some(Body::new(ReturnsLease {
        body,
        lease: Some(lease),
    }))
}

impl Upstream {
    /// A pool for instances that run isolated (see the field) or on loopback.
    pub fn new(isolated: bool) -> Self {
        Self {
            idle: Arc::default(),
            open: super::limits::OpenSockets::default(),
            isolated,
        }
    }

    /// Sends `request` to the instance, on this host or through its
    /// agent's tunnel.
    pub async fn send(&self, via: &Via, request: Request) -> Result<(Answer, Lease), Unreachable> {
        match via {
            Via::Port(port) => self.send_to_port(*port, request).await,
            Via::Agent(Some(tunnel)) => self.send_through(tunnel, request).await,
            Via::Agent(None) => Err(Unreachable),
            Via::Relay { agent_id, target } => {
                let stream = super::relay::open(agent_id, target).await?;
                self.send_on(stream, request).await
            }
        }
    }

    /// Sends `request` on a new stream of an agent's tunnel.
    async fn send_through(
        &self,
        tunnel: &redwall_tunnel::Opener,
        request: Request,
    ) -> Result<(Answer, Lease), Unreachable> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tunnel.open())
            .await
            .map_err(|_| Unreachable)?
            .map_err(|_| Unreachable)?;
        self.send_on(stream, request).await
    }

    /// Sends `request` on a connection of its own over `io`, never pooled
    /// (a tunnel's stream, or one relayed by another replica).
    async fn send_on<T>(&self, io: T, request: Request) -> Result<(Answer, Lease), Unreachable>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let mut connection = handshake(io).await?;
        if request.headers().contains_key(axum::http::header::UPGRADE) {
            connection.driver.spawn();
        }
        let Connection { sender, driver } = &mut connection;
        let answer = driver
            .drive(sender.send_request(request))
            .await
            .map_err(|_| Unreachable)?;
        Ok((
            answer,
            Lease {
                port: None,
                connection,
                pool: self.idle.clone(),
            },
        ))
    }

    /// Sends `request` to the instance on `port`. A request refused by a
    /// pooled connection before it was written (the connection had just
    /// closed) is sent again on a new one.
    async fn send_to_port(
        &self,
        port: u16,
        request: Request,
    ) -> Result<(Answer, Lease), Unreachable> {
        let upgrade = request.headers().contains_key(axum::http::header::UPGRADE);
        let mut request = request;
        while let Some(mut connection) = self.take_idle(port) {
            // Ready once its driver has seen the last answer end; one still
            // sending an earlier request's body (the instance answered
            // before reading it all) is left to close.
            let Connection { sender, driver } = &mut connection;
            if !matches!(
                tokio::time::timeout(READY_WITHIN, driver.drive(sender.ready())).await,
                Ok(Ok(()))
            ) {
                continue;
            }
            if upgrade {
                driver.spawn();
            }
            match driver.drive(sender.try_send_request(request)).await {
                Ok(answer) => return Ok((answer, self.lease(port, connection))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(Unreachable),
                },
            }
        }
        let addr = redwall_runtime::instance_address(port, self.isolated);
        let mut connection = connect(addr).await?;
        if upgrade {
            connection.driver.spawn();
        }
        let Connection { sender, driver } = &mut connection;
        let answer = driver
            .drive(sender.send_request(request))
            .await
            .map_err(|_| Unreachable)?;
        Ok((answer, self.lease(port, connection)))
    }

    fn lease(&self, port: u16, connection: Connection) -> Lease {
        Lease {
            port: Some(port),
            connection,
            pool: self.idle.clone(),
        }
    }

    /// The most recently used open connection, dropping stale ones.
    fn take_idle(&self, port: u16) -> Option<Connection> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&port)?;
        while let Some((since, connection)) = list.pop() {
            if since.elapsed() >= IDLE_FOR_AT_MOST {
                // The rest of the list is older still.
                list.clear();
                return None;
            }
            if !connection.sender.is_closed() {
                return Some(connection);
            }
        }
        None
    }
}

async fn connect(addr: std::net::SocketAddr) -> Result<Connection, Unreachable> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| Unreachable)?
        .map_err(|_| Unreachable)?;
    let _ = stream.set_nodelay(true);
    handshake(stream).await
}

/// An HTTP/1.1 client connection over `io` (a TCP socket, a tunnel's stream).
pub(super) async fn handshake<T>(io: T) -> Result<Connection, Unreachable>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|_| Unreachable)?;
    Ok(Connection {
        sender,
        driver: Driver::InHand(Box::pin(connection.with_upgrades())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A loopback server handing each connection it accepts to `serve`; it
    /// counts the connections.
    async fn counting_server<F, Fut>(serve: F) -> (u16, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        let port = listener.local_addr().map_or(0, |a| a.port());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        (port, accepted)
    }

    /// An instance answering every request with `size` bytes (and
    /// `Connection: close` when `close` is set).
    async fn instance(size: usize, close: bool) -> (u16, Arc<AtomicUsize>) {
        counting_server(move |stream| async move {
            let service = service_fn(move |_req| async move {
                let mut answer =
                    axum::http::Response::new(http_body_util::Full::new(Bytes::from(vec![
                        b'x';
                        size
                    ])));
                if close {
                    answer.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(answer)
            });
            let _ = server::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        })
        .await
    }

    fn get() -> Request {
        axum::http::Request::builder()
            .uri("/bench")
            .header(axum::http::header::HOST, "instance")
            .body(Body::empty())
            .unwrap_or_default()
    }

    /// One request through the pool; the answer's body as the client gets it.
    async fn ask(upstream: &Upstream, port: u16) -> Body {
        let (answer, lease) = upstream
            .send(&Via::Port(port), get())
            .await
            .unwrap_or_else(|_| unreachable!("the instance did not answer"));
        assert_eq!(answer.status(), 200);
        relay_body(answer.into_body(), lease, 64 * 1024)
            .await
            .unwrap_or_else(|| unreachable!("the answer broke off"))
    }

    async fn read(body: Body) -> usize {
        body.collect().await.map_or(0, |b| b.to_bytes().len())
    }

    #[tokio::test]
    async fn small_answers_reuse_one_connection() {
        let (port, accepted) = instance(2, false).await;
        let upstream = Upstream::default();
        for _ in 0..5 {
            assert_eq!(read(ask(&upstream, port).await).await, 2);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_streamed_answer_keeps_its_connection_until_it_was_read() {
        let (port, accepted) = instance(200 * 1024, false).await;
        let upstream = Upstream::default();
        let streaming = ask(&upstream, port).await;
        // The first answer is still being read: the next request must not
        // wait behind it on the same connection.
        assert_eq!(read(ask(&upstream, port).await).await, 200 * 1024);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(read(streaming).await, 200 * 1024);
        assert_eq!(read(ask(&upstream, port).await).await, 200 * 1024);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_instance_closed_is_not_used_again() {
        let (port, accepted) = instance(2, true).await;
        let upstream = Upstream::default();
        for _ in 0..3 {
            // At once: the pool sees the close when it takes the
            // connection, without waiting for anything to notice it first.
            assert_eq!(read(ask(&upstream, port).await).await, 2);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// An instance that answers each connection's first request as soon as
    /// its head arrived, then keeps the connection open without reading
    /// more: one answering before it read the body.
    async fn early_answerer() -> (u16, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        counting_server(|mut stream| async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            std::future::pending::<()>().await;
        })
        .await
    }

    #[tokio::test]
    async fn a_connection_still_sending_a_body_is_not_waited_for() {
        let (port, accepted) = early_answerer().await;
        let upstream = Upstream::default();
        // The request's body never ends, so its connection stays busy
        // sending it after the answer came.
        let endless =
            Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let upload = axum::http::Request::builder()
            .method("POST")
            .uri("/upload")
            .header(axum::http::header::HOST, "instance")
            .body(endless)
            .unwrap_or_default();
        let (answer, lease) = upstream
            .send(&Via::Port(port), upload)
            .await
            .unwrap_or_else(|_| unreachable!("the instance did not answer"));
        let body = relay_body(answer.into_body(), lease, 64 * 1024).await;
        assert_eq!(read(body.unwrap_or_default()).await, 2);
        let next = tokio::time::timeout(Duration::from_secs(5), ask(&upstream, port)).await;
        assert_eq!(read(next.unwrap_or_default()).await, 2);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_not_a_hang() {
        let port = {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0))
                .unwrap_or_else(|e| unreachable!("{e}"));
            l.local_addr().map_or(0, |a| a.port())
        };
        assert!(Upstream::default()
            .send(&Via::Port(port), get())
            .await
            .is_err());
    }
}

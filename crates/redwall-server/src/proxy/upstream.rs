//! Keep-alive connections to the instances on loopback.
//!
//! A small pool of hyper HTTP/1.1 connections per instance port. A
//! connection goes back to the pool only once its answer was read whole, so
//! a request never waits behind another one's stream (an endless one, such
//! as server-sent events, keeps its connection; so does an upgraded
//! socket). Node.js closes a keep-alive connection after
//! five idle seconds, so one idle for four is not used again: a request is
//! never written into a socket the instance is closing.

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

type Request = axum::http::Request<Body>;
type Answer = axum::http::Response<Incoming>;

/// Node.js's default `keepAliveTimeout` is 5 s; stay clear of it.
const IDLE_FOR_AT_MOST: Duration = Duration::from_secs(4);
const IDLE_PER_PORT: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an instance could not be asked.
#[derive(Debug)]
pub struct Unreachable;

type Idle = Mutex<HashMap<u16, Vec<(Instant, SendRequest<Body>)>>>;

#[derive(Default)]
pub struct Upstream {
    idle: Arc<Idle>,
}

/// A connection in use, until its answer was read whole.
pub struct Lease {
    port: u16,
    sender: SendRequest<Body>,
    pool: Arc<Idle>,
}

impl Lease {
    /// Returns the connection to the pool; only once its answer was read whole.
    fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.pool.lock() {
            let list = idle.entry(self.port).or_default();
            if list.len() < IDLE_PER_PORT {
                list.push((Instant::now(), self.sender));
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
pub async fn relay_body(body: Incoming, lease: Lease, buffer_up_to: u64) -> Option<Body> {
    if body.is_end_stream() {
        lease.give_back();
        return Some(Body::empty());
    }
    if body.size_hint().exact().is_some_and(|n| n <= buffer_up_to) {
        let bytes = body.collect().await.ok()?.to_bytes();
        lease.give_back();
        return Some(Body::from(bytes));
    }
    Some(Body::new(ReturnsLease {
        body,
        lease: Some(lease),
    }))
}

impl Upstream {
    /// Sends `request` to the instance on `port`. A request refused by a
    /// pooled connection before it was written (the connection had just
    /// closed) is sent again on a new one.
    pub async fn send(&self, port: u16, request: Request) -> Result<(Answer, Lease), Unreachable> {
        let mut request = request;
        while let Some(mut sender) = self.take_idle(port) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(answer) => return Ok((answer, self.lease(port, sender))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(Unreachable),
                },
            }
        }
        let mut sender = connect(port).await?;
        let answer = sender
            .send_request(request)
            .await
            .map_err(|_| Unreachable)?;
        Ok((answer, self.lease(port, sender)))
    }

    fn lease(&self, port: u16, sender: SendRequest<Body>) -> Lease {
        Lease {
            port,
            sender,
            pool: self.idle.clone(),
        }
    }

    /// The most recently used open connection, dropping stale ones.
    fn take_idle(&self, port: u16) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&port)?;
        while let Some((since, sender)) = list.pop() {
            if since.elapsed() >= IDLE_FOR_AT_MOST {
                // The rest of the list is older still.
                list.clear();
                return None;
            }
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }
}

async fn connect(port: u16) -> Result<SendRequest<Body>, Unreachable> {
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .map_err(|_| Unreachable)?
    .map_err(|_| Unreachable)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Unreachable)?;
    tokio::spawn(async move {
        // Ends when the instance closes the connection or every sender is
        // gone; either way there is nothing to report.
        let _ = connection.with_upgrades().await;
    });
    Ok(sender)
}

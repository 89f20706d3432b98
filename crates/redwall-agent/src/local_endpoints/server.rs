//! The listener: TCP, TLS (unless plain HTTP on loopback), hyper's
//! HTTP/1.1 and HTTP/2 server, then per request the decision and the
//! forwarding.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::config::LocalEndpointsConfig;
use super::decision;
use super::forward::{self, Body};
use super::{tls, AccessWatch, Error};

/// How long a client may take over the TLS handshake.
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's head (HTTP/1.1).
const HEAD_WITHIN: Duration = Duration::from_secs(30);
/// How long open connections may finish after a shutdown.
const FINISH_WITHIN: Duration = Duration::from_secs(10);

/// What every connection's requests share.
pub(crate) struct Shared {
    pub(crate) node_red: SocketAddr,
    pub(crate) access: AccessWatch,
    pub(crate) max_body: u64,
    pub(crate) upgrade_within: Duration,
    /// The listener speaks TLS (what `X-Forwarded-Proto` says).
    pub(crate) https: bool,
    /// Turns true at shutdown: connections finish, sockets close.
    pub(crate) closing: watch::Receiver<bool>,
}

/// The local endpoints, bound and ready to [`run`](Self::run).
pub struct LocalEndpoints {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    cert_sha256: Option<String>,
    shared: Arc<Shared>,
    max_connections: usize,
    closing: watch::Sender<bool>,
}

impl LocalEndpoints {
    /// Checks `config`, sets up TLS (reading or making the certificate)
    /// and binds the listener; nothing is served before [`run`](Self::run).
    pub async fn bind(
        config: &LocalEndpointsConfig,
        state_dir: &Path,
        node_red: SocketAddr,
        access: AccessWatch,
    ) -> Result<Self, Error> {
        config.check()?;
        let (tls, cert_sha256) = if config.plain_http {
            (None, None)
        } else {
            let (server, pin) = tls::server_config(config, state_dir)?;
            (Some(TlsAcceptor::from(server)), Some(pin))
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let (closing, closing_rx) = watch::channel(false);
        Ok(Self {
            listener,
            shared: Arc::new(Shared {
                node_red,
                access,
                max_body: config.max_body_bytes,
                upgrade_within: Duration::from_secs(config.upgrade_answer_secs),
                https: tls.is_some(),
                closing: closing_rx,
            }),
            tls,
            cert_sha256,
            max_connections: config.max_connections,
            closing,
        })
    }

    /// The address actually bound (with port 0 in the configuration, the
    /// one the system chose).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(|source| Error::Io {
            what: "cannot read the address of",
            path: "the listener".to_owned(),
            source,
        })
    }

    /// SHA-256 of the served certificate (lowercase hex), for clients that
    /// pin it; `None` for plain HTTP.
    pub fn cert_sha256(&self) -> Option<&str> {
        self.cert_sha256.as_deref()
    }

    /// Serves until `shutdown` completes, then lets open connections
    /// finish for a while and closes WebSockets.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let slots = Arc::new(Semaphore::new(self.max_connections));
        if let Ok(addr) = self.listener.local_addr() {
            info!(
                listen = %addr,
                tls = self.tls.is_some(),
                cert_sha256 = self.cert_sha256.as_deref().unwrap_or("-"),
                "local endpoints listening"
            );
        }
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, usually: wait rather than spin.
                        warn!("local endpoints: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                info!(peer = %peer, reason = "too_many_connections", "local endpoint connection refused");
                continue;
            };
            let shared = self.shared.clone();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                connection(tcp, peer, tls, shared).await;
                drop(slot);
            });
        }
        let _ = self.closing.send(true);
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(FINISH_WITHIN, slots.acquire_many(all)).await;
        info!("local endpoints stopped");
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => serve_http(TokioIo::new(tcp), peer, shared).await,
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_WITHIN, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve_http(TokioIo::new(stream), peer, shared).await,
                Ok(Err(e)) => debug!(peer = %peer, "local endpoints: TLS handshake failed: {e}"),
                Err(_) => debug!(peer = %peer, "local endpoints: TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<I>(io: I, peer: SocketAddr, shared: Arc<Shared>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_WITHIN);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100);
    let mut closing = shared.closing.clone();
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, peer, request).await) }
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(e) = served {
                debug!(peer = %peer, "local endpoints: connection ended: {e}");
            }
        }
        () = closed(&mut closing) => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(FINISH_WITHIN, connection).await;
        }
    }
}

/// Completes once the endpoints shut down.
pub(crate) async fn closed(closing: &mut watch::Receiver<bool>) {
    // An error: the sender is gone, which is a shutdown too.
    let _ = closing.wait_for(|c| *c).await;
}

/// One request: the decision, then our refusal or Node-RED's answer.
async fn handle(shared: &Shared, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let access = shared.access.borrow().clone();
    let verdict = decision::judge(
        access.as_deref(),
        request.method().as_str(),
        request.uri().path(),
        request.headers(),
        peer.ip(),
        forward::unix_now(),
    );
    match (verdict, access) {
        (Ok(admitted), Some(access)) => {
            forward::forward(shared, access, admitted, peer, request).await
        }
        (verdict, _) => {
            // `judge` admits nothing without access; say so if it did.
            let refusal = verdict.err().unwrap_or(decision::NOT_HOSTED);
            forward::log_refusal(request.method(), request.uri().path(), peer, refusal.code);
            forward::drain(request.into_body(), shared.max_body);
            forward::error_response(refusal)
        }
    }
}

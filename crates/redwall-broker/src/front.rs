//! The broker's own front, before every client: plain MQTT, TLS terminated
//! with the hub's certificate, and the streams the hub accepted itself
//! (`/mqtt` WebSockets). Each client becomes one TCP connection to the
//! engine's internal listener, opened by a PROXY protocol v2 header that
//! names the client's real address.
//!
//! The front also holds a client to a deadline the engine does not: its
//! first packet must show itself as an MQTT CONNECT within the handshake
//! timeout (the engine waits for that without a limit, so a client sending
//! nothing or half a packet would hold its connection for ever). Whether it
//! does is decided by the engine's own codec (`VersionCodec`); the engine
//! then bounds the rest of the CONNECT itself.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use proxy_protocol::version2::{ProxyAddresses, ProxyCommand, ProxyTransportProtocol};
use proxy_protocol::ProxyHeader;
use rmqtt::codec::version::VersionCodec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::Decoder;

use crate::Limits;

#[derive(Clone)]
pub struct Front {
    engine: SocketAddr,
    handshakes: Arc<Semaphore>,
    handshake_timeout: std::time::Duration,
}

fn header(peer: SocketAddr, local: SocketAddr) -> io::Result<Vec<u8>> {
    let addresses = match (peer, local) {
        (SocketAddr::V4(source), SocketAddr::V4(destination)) => ProxyAddresses::Ipv4 {
            source,
            destination,
        },
        (SocketAddr::V6(source), SocketAddr::V6(destination)) => ProxyAddresses::Ipv6 {
            source,
            destination,
        },
        (source, destination) => ProxyAddresses::Ipv6 {
            source: v6(source),
            destination: v6(destination),
        },
    };
    let header = ProxyHeader::Version2 {
        command: ProxyCommand::Proxy,
        transport_protocol: ProxyTransportProtocol::Stream,
        addresses,
    };
    proxy_protocol::encode(header)
        .map(|b| b.to_vec())
        .map_err(|e| io::Error::other(e.to_string()))
}

fn v6(addr: SocketAddr) -> std::net::SocketAddrV6 {
    match addr {
        SocketAddr::V6(a) => a,
        SocketAddr::V4(a) => std::net::SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0),
    }
}

/// Whether `buf` starts as an MQTT CONNECT does (`Some(true)`), needs more
/// bytes (`Some(false)`), or is not MQTT (`None`). Asked of the engine's
/// own version codec, which reads without consuming.
pub fn connect_begins(buf: &mut bytes::BytesMut) -> Option<bool> {
    match VersionCodec.decode(buf) {
        Ok(Some(_)) => Some(true),
        Ok(None) => Some(false),
        Err(_) => None,
    }
}

/// The longest start of a CONNECT the front reads before deciding.
const MAX_FIRST_BYTES: usize = 4096;

/// Reads until the bytes show a CONNECT; they are returned to be passed on.
async fn first_bytes<S: AsyncRead + Unpin>(client: &mut S) -> io::Result<bytes::BytesMut> {
    let mut buf = bytes::BytesMut::with_capacity(256);
    loop {
        match connect_begins(&mut buf) {
            Some(true) => return Ok(buf),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not an MQTT CONNECT",
                ))
            }
            Some(false) if buf.len() >= MAX_FIRST_BYTES => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "CONNECT too long",
                ))
            }
            Some(false) => {
                if client.read_buf(&mut buf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
}

impl Front {
    pub(crate) fn new(engine: SocketAddr, limits: &Limits) -> Front {
        Front {
            engine,
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes.max(1))),
            handshake_timeout: limits.handshake_timeout,
        }
    }

    /// A connection to the engine on behalf of `peer`, its PROXY header
    /// already sent.
    pub async fn open(&self, peer: SocketAddr) -> io::Result<TcpStream> {
        let mut engine = TcpStream::connect(self.engine).await?;
        engine.set_nodelay(true)?;
        engine.write_all(&header(peer, self.engine)?).await?;
        Ok(engine)
    }

    pub fn handshake_timeout(&self) -> std::time::Duration {
        self.handshake_timeout
    }

    /// The first bytes are written to the engine, then bytes go both ways
    /// until either side closes.
    async fn pass_on<S>(
        &self,
        mut client: S,
        first: bytes::BytesMut,
        peer: SocketAddr,
    ) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut engine = self.open(peer).await?;
        engine.write_all(&first).await?;
        tokio::io::copy_bidirectional(&mut client, &mut engine).await?;
        Ok(())
    }

    /// Binds a listener, plain or (with `tls`) MQTT over TLS, and serves
    /// it in the background; returns the bound address. A client holds one
    /// of the handshake places from its accept until its CONNECT shows
    /// (TLS included), so slow starters cannot crowd out the others.
    pub(crate) async fn listen(
        &self,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> anyhow::Result<SocketAddr> {
        let acceptor = tls.map(|config| {
            let mut config = (*config).clone();
            config.alpn_protocols.clear();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("the MQTT listener on {addr}"))?;
        let bound = listener.local_addr()?;
        let front = self.clone();
        tokio::spawn(async move {
            loop {
                let (socket, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an MQTT connection");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = front.handshakes.clone().try_acquire_owned() else {
                    continue; // too many handshakes at once: drop this one
                };
                let (front, acceptor) = (front.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let _ = socket.set_nodelay(true);
                    let ended = match acceptor {
                        None => front.start(socket, peer, permit).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                front.handshake_timeout,
                                acceptor.accept(socket),
                            );
                            match handshake.await {
                                Ok(Ok(stream)) => front.start(stream, peer, permit).await,
                                Ok(Err(e)) => Err(e),
                                Err(_) => Err(io::ErrorKind::TimedOut.into()),
                            }
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "MQTT connection ended");
                    }
                });
            }
        });
        Ok(bound)
    }

    /// The first bytes within the handshake time, holding `permit`; then
    /// the connection is passed on.
    async fn start<S>(
        &self,
        mut client: S,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let first = tokio::time::timeout(self.handshake_timeout, first_bytes(&mut client))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no CONNECT in time"))??;
        drop(permit);
        self.pass_on(client, first, peer).await
    }
}

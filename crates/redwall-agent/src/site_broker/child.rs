//! `redwall-agent site-broker`: the child process that is the site's
//! broker. It reads its whole configuration ([`ChildConfig`]) as one JSON
//! document on stdin, binds its listeners, gives up root (uid and gid
//! 65534, no supplementary groups, `PR_SET_NO_NEW_PRIVS`, and
//! `PR_SET_PDEATHSIG(SIGKILL)` set again, since a change of credentials
//! clears it), then writes one line on stdout, `{"ready":true,...}`, and
//! serves until killed.
//!
//! Clients reach the engine (rmqtt, on an internal listener on loopback)
//! through a front ([`front`]) that holds each one to a deadline for its
//! CONNECT (the engine waits for the first bytes without one) and names it
//! with a PROXY v2 header, as the hub's team broker does.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::types::{AuthResult, ConnectInfo, Id, LastWill, PublishAclResult, SubscribeAclResult};
use tracing::{error, info, warn};

use super::auth::{may_publish, may_subscribe, Users};
use super::config::{ChildConfig, MAX_CHILD_CONFIG_BYTES};

/// The uid and gid the child runs as when started as root (`nobody`).
pub const UNPRIVILEGED_ID: u32 = 65534;
/// Time from accept to a CONNECT's first bytes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The child's `main`: exit 0 never (it serves until killed), 1 when it
/// cannot start (the reason on stderr, which is the agent's log).
pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("site broker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_CHILD_CONFIG_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the configuration on stdin: {e}"))?;
    let config: ChildConfig = serde_json::from_str(&text)
        .map_err(|e| format!("the configuration on stdin is not valid: {e}"))?;
    drop(text);
    config.check().map_err(|e| e.to_string())?;
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("{addr}: {e}"))?;
        listeners.push(listener);
    }
    let tls = match &config.tls {
        Some(tls) => {
            let server = super::tls::server_config(tls).map_err(|e| e.to_string())?;
            let listener = std::net::TcpListener::bind(tls.listen)
                .map_err(|e| format!("cannot listen on {} (TLS): {e}", tls.listen))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("{}: {e}", tls.listen))?;
            Some((listener, tokio_rustls::TlsAcceptor::from(server)))
        }
        None => None,
    };
    drop_privileges(parent)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(serve(config, listeners, tls))
}

/// As root: uid and gid [`UNPRIVILEGED_ID`], no supplementary groups. In
/// every case: no new privileges, and SIGKILL when the agent's thread
/// that spawned this process ends (set again after the uid changed, which
/// clears it; then the parent is checked, in case it died meanwhile).
fn drop_privileges(parent: libc::pid_t) -> Result<(), String> {
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain system calls on this process, no pointers but a null
    // list of zero groups.
    unsafe {
        if libc::geteuid() == 0 {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(os("setgroups"));
            }
            if libc::setgid(UNPRIVILEGED_ID) != 0 {
                return Err(os("setgid"));
            }
            if libc::setuid(UNPRIVILEGED_ID) != 0 {
                return Err(os("setuid"));
            }
            if libc::getuid() != UNPRIVILEGED_ID
                || libc::geteuid() != UNPRIVILEGED_ID
                || libc::getegid() != UNPRIVILEGED_ID
                || libc::setuid(0) == 0
            {
                return Err("could not give up root".into());
            }
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(os("PR_SET_NO_NEW_PRIVS"));
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(os("PR_SET_PDEATHSIG"));
        }
        if libc::getppid() != parent {
            return Err("the agent is gone".into());
        }
    }
    Ok(())
}

async fn serve(
    config: ChildConfig,
    listeners: Vec<std::net::TcpListener>,
    tls: Option<(std::net::TcpListener, tokio_rustls::TlsAcceptor)>,
) -> Result<(), String> {
    let scx = ServerContext::new()
        .mqtt_max_sessions(config.max_connections as isize)
        // The site's host may be busy with its own work: the broker still
        // takes its few clients (rmqtt would refuse CONNECTs under load).
        .busy_check_enable(false)
        .build()
        .await;
    let gate = Gate {
        users: Arc::new(Users::new(&config.users)),
        scx: scx.clone(),
    };
    let register = scx.extends.hook_mgr().register();
    for typ in [
        Type::ClientAuthenticate,
        Type::ClientSubscribeCheckAcl,
        Type::MessagePublishCheckAcl,
    ] {
        register.add(typ, Box::new(gate.clone())).await;
    }
    register.start().await;

    // rmqtt's window bounds both ways: QoS 1 and 2 messages sent to a
    // client and unacknowledged, and QoS 2 messages received and not yet
    // released. A client beyond the second is disconnected after its
    // message was published (so its resend would repeat it); a flow may
    // burst thousands of QoS 2 messages, so the window is the packet id
    // space itself. What waits for a slow client is bounded by
    // `max_queue` and the send timeout.
    let max_inflight = std::num::NonZeroU16::MAX;
    let internal = Builder::new()
        .name("site")
        .laddr(([127, 0, 0, 1], 0).into())
        .allow_anonymous(false)
        .nodelay(true)
        .max_packet_size(config.max_packet_bytes)
        .max_inflight(max_inflight)
        .max_mqueue_len(config.max_queue)
        .max_subscriptions(1_000)
        .max_topic_levels(64)
        .max_connections(config.max_connections)
        .max_handshaking_limit(config.max_connections)
        .handshake_timeout(HANDSHAKE_TIMEOUT)
        .send_timeout(Duration::from_secs(10))
        .max_clientid_len(redwall_policy::mqtt_acl::MAX_CLIENT_ID_BYTES)
        // Messages kept for a client that is away (the bridge while the
        // agent restarts it) live as long as its session.
        .session_expiry_interval(Duration::from_secs(24 * 60 * 60))
        .message_expiry_interval(Duration::from_secs(24 * 60 * 60))
        .proxy_protocol(true)
        .bind()
        .and_then(|l| l.tcp())
        .map_err(|e| format!("the internal listener: {e}"))?;
    let engine = internal
        .local_addr()
        .map_err(|e| format!("the internal listener: {e}"))?;
    let server = MqttServer::new(scx.clone())
        .listener_by_id(internal, 0)
        .build();
    let front = front::Front::new(engine, config.max_connections);
    let mut bound = Vec::new();
    for listener in listeners {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        bound.push(listener.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(front.clone().serve(listener, None));
    }
    if let Some((listener, acceptor)) = tls {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        bound.push(listener.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(front.clone().serve(listener, Some(acceptor)));
    }
    let ready = serde_json::json!({"ready": true, "listen": bound, "pid": std::process::id()});
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ready}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot tell the agent it is ready: {e}"))?;
    drop(out);
    info!(listen = ?bound, "site broker listening");
    server
        .run()
        .await
        .map_err(|e| format!("the engine stopped: {e}"))
}

fn refuse(result: AuthResult) -> ReturnType {
    (false, Some(HookResult::AuthResult(result)))
}

fn will_topic<'a>(will: &'a LastWill<'_>) -> &'a str {
    match will {
        LastWill::V3(lw) => &lw.topic,
        LastWill::V5(lw) => &lw.topic,
    }
}

/// rmqtt's hooks, each a call of [`super::auth`].
#[derive(Clone)]
struct Gate {
    users: Arc<Users>,
    scx: ServerContext,
}

impl Gate {
    async fn authenticate(&self, info: &ConnectInfo) -> ReturnType {
        let id = info.id();
        let peer = id.remote_addr;
        let (Some(username), Some(password)) = (info.username(), info.password()) else {
            info!(?peer, "site broker: refused a CONNECT without credentials");
            return refuse(AuthResult::BadUsernameOrPassword);
        };
        if !self.users.check(username, password) {
            // The name may be a password typed in the wrong field: never logged.
            info!(
                ?peer,
                "site broker: refused a CONNECT: unknown user or wrong password"
            );
            return refuse(AuthResult::BadUsernameOrPassword);
        }
        if let Some(will) = info.last_will() {
            if !may_publish(will_topic(&will)) {
                info!(?peer, user = %username, "site broker: refused a will on a $ topic");
                return refuse(AuthResult::NotAuthorized);
            }
        }
        if self.held_by_another(id, username).await {
            warn!(?peer, user = %username, client_id = %info.client_id(),
                "site broker: refused a CONNECT for a client id another user's session holds");
            return refuse(AuthResult::NotAuthorized);
        }
        (
            false,
            Some(HookResult::AuthResult(AuthResult::Allow(false, None))),
        )
    }

    /// Whether a session (connected or kept) under this client id belongs
    /// to another user.
    async fn held_by_another(&self, id: &Id, username: &str) -> bool {
        let entry = self.scx.extends.shared().await.entry(id.clone());
        entry
            .session()
            .is_some_and(|s| s.id.username.as_deref() != Some(username))
    }

    fn logged_in(&self, id: &Id) -> bool {
        id.username.as_deref().is_some_and(|u| self.users.knows(u))
    }
}

#[async_trait]
impl Handler for Gate {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(info) => self.authenticate(info).await,
            Parameter::ClientSubscribeCheckAcl(session, sub) => {
                let result = if self.logged_in(&session.id) && may_subscribe(&sub.topic_filter) {
                    SubscribeAclResult::new_success(sub.opts.qos(), None)
                } else {
                    SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized)
                };
                (false, Some(HookResult::SubscribeAclResult(result)))
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                let result = if self.logged_in(&session.id) && may_publish(&publish.topic) {
                    PublishAclResult::allow()
                } else {
                    PublishAclResult::rejected(false, None)
                };
                (false, Some(HookResult::PublishAclResult(result)))
            }
            _ => (true, acc),
        }
    }
}

/// The listeners' side: each client within [`HANDSHAKE_TIMEOUT`] shows a
/// CONNECT, then becomes one connection to the engine, opened with a
/// PROXY v2 header naming the client.
pub(crate) mod front {
    use std::io;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use proxy_protocol::version2::{ProxyAddresses, ProxyCommand, ProxyTransportProtocol};
    use proxy_protocol::ProxyHeader;
    use rmqtt::codec::version::VersionCodec;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Semaphore;
    use tokio_util::codec::Decoder as _;

    use super::HANDSHAKE_TIMEOUT;

    /// The longest start of a CONNECT read before deciding.
    const MAX_FIRST_BYTES: usize = 4096;

    #[derive(Clone)]
    pub(crate) struct Front {
        engine: SocketAddr,
        handshakes: Arc<Semaphore>,
    }

    fn v6(addr: SocketAddr) -> std::net::SocketAddrV6 {
        match addr {
            SocketAddr::V6(a) => a,
            SocketAddr::V4(a) => {
                std::net::SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0)
            }
        }
    }

    fn header(peer: SocketAddr, local: SocketAddr) -> io::Result<Vec<u8>> {
        let addresses = match (peer, local) {
            (SocketAddr::V4(source), SocketAddr::V4(destination)) => ProxyAddresses::Ipv4 {
                source,
                destination,
            },
            (source, destination) => ProxyAddresses::Ipv6 {
                source: v6(source),
                destination: v6(destination),
            },
        };
        proxy_protocol::encode(ProxyHeader::Version2 {
            command: ProxyCommand::Proxy,
            transport_protocol: ProxyTransportProtocol::Stream,
            addresses,
        })
        .map(|b| b.to_vec())
        .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Reads until the bytes show an MQTT CONNECT (asked of the engine's
    /// own version codec); they are returned to be passed on.
    async fn first_bytes<S: AsyncRead + Unpin>(client: &mut S) -> io::Result<bytes::BytesMut> {
        let mut buf = bytes::BytesMut::with_capacity(256);
        loop {
            match VersionCodec.decode(&mut buf) {
                Ok(Some(_)) => return Ok(buf),
                Err(_) => return Err(io::Error::new(io::ErrorKind::InvalidData, "not MQTT")),
                Ok(None) if buf.len() >= MAX_FIRST_BYTES => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "CONNECT too long",
                    ))
                }
                Ok(None) => {
                    if client.read_buf(&mut buf).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        }
    }

    impl Front {
        pub(crate) fn new(engine: SocketAddr, max_handshakes: usize) -> Front {
            Front {
                engine,
                handshakes: Arc::new(Semaphore::new(max_handshakes.max(1))),
            }
        }

        /// Serves `listener`, plain or (with `tls`) MQTT over TLS; the
        /// TLS handshake counts against the same deadline as the CONNECT.
        pub(crate) async fn serve(
            self,
            listener: TcpListener,
            tls: Option<tokio_rustls::TlsAcceptor>,
        ) {
            loop {
                let (socket, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "site broker: accepting a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
                    continue; // too many handshakes at once: drop this one
                };
                let (front, tls) = (self.clone(), tls.clone());
                tokio::spawn(async move {
                    let _ = socket.set_nodelay(true);
                    let ended = match tls {
                        None => front.start(socket, peer, permit).await,
                        Some(acceptor) => {
                            let handshake =
                                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket));
                            match handshake.await {
                                Ok(Ok(stream)) => front.start(stream, peer, permit).await,
                                Ok(Err(e)) => Err(e),
                                Err(_) => Err(io::ErrorKind::TimedOut.into()),
                            }
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "site broker: connection ended");
                    }
                });
            }
        }

        async fn start<S>(
            &self,
            mut client: S,
            peer: SocketAddr,
            permit: tokio::sync::OwnedSemaphorePermit,
        ) -> io::Result<()>
        where
            S: AsyncRead + AsyncWrite + Unpin,
        {
            let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, first_bytes(&mut client))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no CONNECT in time"))??;
            drop(permit);
            let mut engine = TcpStream::connect(self.engine).await?;
            engine.set_nodelay(true)?;
            engine.write_all(&header(peer, self.engine)?).await?;
            engine.write_all(&first).await?;
            tokio::io::copy_bidirectional(&mut client, &mut engine).await?;
            Ok(())
        }
    }
}

/// What the child says on stdout once it listens.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Ready {
    pub ready: bool,
    pub listen: Vec<SocketAddr>,
}

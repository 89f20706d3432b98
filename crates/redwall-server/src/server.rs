//! Putting the server together and running it.

use crate::api;
use crate::clock::Clock;
use crate::config::{Config, Severity, TlsMode};
use crate::error::ApiError;
use crate::front_door::FrontDoors;
use crate::net::client::{attach_client_info, ClientResolver};
use crate::net::headers::{security_headers, HeaderPolicy};
use crate::state::{AppState, StateParts};
use anyhow::{anyhow, Context};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use axum_server::accept::NoDelayAcceptor;
use redwall_crypto::Secret;
use redwall_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

/// How often buffered session/token activity is written.
const ACTIVITY_FLUSH: Duration = Duration::from_secs(5);
const HOUSEKEEPING: Duration = Duration::from_secs(60);

pub struct StartOptions {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    /// `REDWALL_MASTER_KEY`, when set.
    pub master_key: Option<Secret>,
    /// Supervise Node-RED instances (and take the data directory's
    /// supervisor lock). Only one process per data directory may.
    pub run_instances: bool,
}

pub struct RunningServer {
    pub addr: SocketAddr,
    pub tls: bool,
    /// Printed once on first start; `None` when users exist.
    pub setup_token: Option<Secret>,
    pub state: AppState,
    handle: axum_server::Handle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, lets requests in flight finish, flushes activity.
    pub async fn shutdown(self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        let _ = self.task.await;
        if let Some(m) = self.state.hub.instance_manager() {
            m.shutdown().await;
        }
        let _ = self.state.hub.flush_activity().await;
        self.state.hub.flush_refusals(true).await;
        self.state.hub.forget_relay().await;
    }

    /// Runs until the server task ends (for `redwall serve`).
    pub async fn wait(self) -> anyhow::Result<()> {
        let handle = self.handle.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        self.task.await.context("server task")??;
        if let Some(m) = state.hub.instance_manager() {
            m.shutdown().await;
        }
        let _ = state.hub.flush_activity().await;
        state.hub.flush_refusals(true).await;
        state.hub.forget_relay().await;
        Ok(())
    }
}

/// Checks the configuration, opens the keys and the database (applying
/// migrations). Used by `serve` and by the offline admin commands.
pub async fn open_state(
    config: Config,
    clock: Arc<dyn Clock>,
    master_key: Option<Secret>,
) -> anyhow::Result<AppState> {
    let errors: Vec<String> = config
        .check()
        .into_iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(anyhow!(
            "the configuration is not safe to run:\n  {}",
            errors.join("\n  ")
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let keyring =
        crate::keys::load_or_create(&config.data_dir, master_key.as_ref().map(|s| s.expose()))?;
    let store = Store::connect(&config.database_url())
        .await
        .context("opening the database")?;
    let tls = config.tls.mode != TlsMode::Off;
    AppState::new(StateParts {
        config,
        store,
        keyring,
        clock,
        tls,
    })
}

/// Opens the store, the keys and the listener, and starts serving.
pub async fn start(options: StartOptions) -> anyhow::Result<RunningServer> {
    let StartOptions {
        config,
        clock,
        master_key,
        run_instances: options_run_instances,
    } = options;
    crate::net::tls::install_crypto_provider();
    for p in config.check() {
        if p.severity == Severity::Warning {
            tracing::warn!(setting = p.setting, "{}", p.message);
        }
    }
    let tls_mode = config.tls.mode;
    let listen = config.server.listen;
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    // Port 0 picks a free port: the rest of Redwall (instance addresses,
    // the console's own URL) must see the one actually bound.
    let mut config = config;
    config.server.listen = listener.local_addr()?;
    let state = open_state(config, clock, master_key).await?;
    let rustls_config = match tls_mode {
        TlsMode::Off => None,
        TlsMode::SelfSigned => {
            let (cert, key) = crate::net::tls::ensure_self_signed(&state.config.data_dir)?;
            let _ = state
                .tls_pin
                .set(crate::net::tls::certificate_sha256(&cert)?);
            Some(crate::net::tls::server_config(&cert, &key)?)
        }
        TlsMode::Files => {
            let cert = state.config.tls.cert_file.clone().unwrap_or_default();
            let key = state.config.tls.key_file.clone().unwrap_or_default();
            Some(crate::net::tls::server_config(&cert, &key)?)
        }
    };
    register_relay(&state, rustls_config.is_some()).await;
    let setup_token = state.hub.issue_setup_token_if_needed().await?;
    let rustls_config_is_some = rustls_config.is_some();
    let rustls_for_mqtt = rustls_config.clone();
    let front_doors = FrontDoors::new(state.clone(), app(state.clone()));
    // The other hubs' announcements are listened for before anyone is
    // accepted: an agent or an MQTT client accepted before could miss its
    // own revocation, announced meanwhile, and stay connected.
    let agent_events = state
        .hub
        .listen_for_agent_events()
        .await
        .context("listening for other hubs' agent events")?;
    let broker_revocations = if state.config.broker.enabled
        && state.config.broker.mode == crate::config::BrokerMode::Embedded
    {
        state
            .hub
            .listen_for_revocations()
            .await
            .context("listening for other hubs' broker revocations")?
    } else {
        None
    };

    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    // TCP_NODELAY on every accepted connection, as nginx does for keep-alive
    // connections: an answer written in more than one piece must not wait
    // for the client's delayed acknowledgement.
    let task = match rustls_config {
        Some(rc) => {
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
                axum_server::tls_rustls::RustlsConfig::from_config(rc),
            )
            .acceptor(NoDelayAcceptor::new());
            let mut server = axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle.clone());
            limit_slow_clients(server.http_builder());
            tokio::spawn(server.serve(front_doors))
        }
        None => {
            let mut server = axum_server::from_tcp(listener)
                .acceptor(NoDelayAcceptor::new())
                .handle(handle.clone());
            limit_slow_clients(server.http_builder());
            tokio::spawn(server.serve(front_doors))
        }
    };
    spawn_housekeeping(state.clone());
    if let Some(listener) = agent_events {
        let hub = state.hub.clone();
        tokio::spawn(async move { hub.relay_agent_events(listener).await });
    }
    let manager = if options_run_instances {
        Some(
            state
                .hub
                .run_instances(state.config.instances.clone(), &state.config.data_dir)?,
        )
    } else {
        None
    };
    if state.config.broker.enabled {
        match state.config.broker.mode {
            crate::config::BrokerMode::Embedded => {
                start_broker(
                    &state,
                    manager.as_deref(),
                    rustls_for_mqtt.clone(),
                    broker_revocations,
                )
                .await
            }
            crate::config::BrokerMode::Mosquitto => {
                manage_mosquitto(&state, manager.as_deref()).await?
            }
        }
    }
    if let Some(manager) = manager {
        let hub = state.hub.clone();
        tokio::spawn(async move { manager.start_desired(&hub).await });
    }
    // Every hub: agents' deploys and updates need no instance manager (the
    // instances' own deployments are skipped where there is none).
    spawn_deploy_scheduler(state.hub.clone(), state.config.agents.update_confirm_secs);
    let tls = rustls_config_is_some;
    tracing::info!(%addr, tls, "Redwall is listening");
    Ok(RunningServer {
        addr,
        tls,
        setup_token,
        state,
        handle,
        task,
    })
}

/// Starts the team MQTT broker: plain MQTT on loopback (and on the host's
/// end of the isolated instances' link, on the same port), MQTT over TLS
/// with the hub's certificate, and `/mqtt` on this port. A listener that
/// cannot be bound leaves the hub running without the broker, said loudly:
/// the rest of Redwall does not depend on it.
async fn start_broker(
    state: &AppState,
    manager: Option<&redwall_hub::instances::InstanceManager>,
    tls: Option<Arc<rustls::ServerConfig>>,
    revocations: Option<redwall_store::notify::Listener>,
) {
    let config = &state.config.broker;
    let loopback = config.plain_listen;
    let isolated_ip = manager.and_then(|m| m.isolated_broker_address());
    let tls = match (config.tls_listen, tls) {
        (Some(addr), Some(tls)) => Some((addr, tls)),
        _ => None,
    };
    let broker = match bind_broker(state, loopback, isolated_ip, tls).await {
        Ok(broker) => broker,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "the team MQTT broker could not start; see broker.* in the configuration"
            );
            return;
        }
    };
    if let Some(m) = manager {
        let plain = broker.plain_addrs();
        m.set_broker(redwall_hub::instances::BrokerEndpoint {
            loopback: plain[0],
            isolated: plain.get(1).copied(),
            topic_prefix: false,
        });
    }
    let _ = state.broker.set(broker);
    if let Some(listener) = revocations {
        let hub = state.hub.clone();
        tokio::spawn(async move { hub.relay_revocations(listener).await });
    }
}

/// Connects to the Mosquitto Redwall manages (reconciling it with the
/// database) and has every broker client change told to it. Unlike the
/// embedded broker this is required: a configured Mosquitto that cannot be
/// reached stops the start, with the reason.
async fn manage_mosquitto(
    state: &AppState,
    manager: Option<&redwall_hub::instances::InstanceManager>,
) -> anyhow::Result<()> {
    let m = &state.config.broker.mosquitto;
    let password = match std::env::var("REDWALL_MOSQUITTO_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let file = m.admin_password_file.as_ref().ok_or_else(|| {
                anyhow!(
                    "broker.mosquitto: set REDWALL_MOSQUITTO_ADMIN_PASSWORD or admin_password_file"
                )
            })?;
            std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?
                .trim()
                .to_string()
        }
    };
    let (host, port) = m
        .address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)))
        .ok_or_else(|| anyhow!("broker.mosquitto.address must be host:port"))?;
    let ca_pem = match &m.ca_file {
        Some(f) => Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?),
        None => None,
    };
    let mosquitto = redwall_broker::mosquitto::Mosquitto::connect(
        state.hub.clone(),
        redwall_broker::mosquitto::MosquittoOptions {
            host: host.clone(),
            port,
            admin_username: m.admin_username.clone(),
            admin_password: Secret::new(password),
            ca_pem,
        },
    )
    .await
    .with_context(|| format!("managing Mosquitto at {}", m.address))?;
    state.hub.manage_external_broker(mosquitto);
    if let Some(manager) = manager {
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .ok_or_else(|| anyhow!("{} has no address", m.address))?;
        let isolated = (!addr.ip().is_loopback()).then_some(addr);
        if isolated.is_none() && state.config.instances.network_isolation {
            tracing::warn!(address = %addr, "isolated instances cannot reach a Mosquitto on loopback; have it listen on an address of this host");
        }
        manager.set_broker(redwall_hub::instances::BrokerEndpoint {
            loopback: addr,
            isolated,
            topic_prefix: true,
        });
    }
    Ok(())
}

async fn bind_broker(
    state: &AppState,
    loopback: SocketAddr,
    isolated_ip: Option<std::net::IpAddr>,
    tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
) -> anyhow::Result<redwall_broker::Broker> {
    // Port 0 on the isolated link means the loopback listener's port.
    let mut plain = vec![loopback];
    if let Some(ip) = isolated_ip {
        plain.push(SocketAddr::new(ip, 0));
    }
    redwall_broker::Broker::start(
        state.hub.clone(),
        redwall_broker::BrokerOptions {
            plain,
            tls,
            limits: state.config.broker.limits(),
        },
    )
    .await
}

/// A client must send its request headers within 10 seconds.
fn limit_slow_clients(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
}

/// The API and the console: routes behind their guards, wrapped in the
/// layers every request passes. Instance traffic never reaches it: the
/// [`FrontDoors`] send that to the proxy first.
pub fn app(state: AppState) -> Router {
    let resolver = ClientResolver::for_state(&state);
    let headers = HeaderPolicy { hsts: state.tls };
    let max_body = state.config.server.max_body_bytes;
    let api = api::router(&state).with_state(state.clone());
    // The console's forms take the usual limit; the API's routes each have
    // theirs (imports more), under the largest as the outermost limit.
    let console = crate::console::router(state.clone(), api.clone())
        .layer(RequestBodyLimitLayer::new(max_body));
    api.merge(console)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(RequestBodyLimitLayer::new(api::largest_body_limit(
            max_body,
        )))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(middleware::from_fn_with_state(resolver, attach_client_info))
        .layer(middleware::from_fn_with_state(headers, security_headers))
        .layer(CatchPanicLayer::custom(
            |panic: Box<dyn std::any::Any + Send>| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                ApiError::internal(format!("a request handler panicked: {what}")).into_response()
            },
        ))
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed here",
    )
}

/// Counts every answer for /metrics and logs it at debug level: method,
/// path (never the query or headers, where credentials could be), status,
/// duration and client address.
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let client = request
        .extensions()
        .get::<crate::net::client::ClientInfo>()
        .map(|c| c.ip);
    let response = next.run(request).await;
    let status = response.status();
    state.hub.metrics.request_done(status.as_u16());
    tracing::debug!(
        %method,
        path,
        status = status.as_u16(),
        micros = started.elapsed().as_micros() as u64,
        client = ?client,
        "request"
    );
    // A body rejected by the size limit arrives here as a bare 413.
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is too large",
        )
        .into_response();
    }
    response
}

/// Carries out deployments held for their window once it opens (checked
/// every second: one indexed query while nothing waits).
fn spawn_deploy_scheduler(hub: redwall_hub::Hub, update_confirm_secs: u64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = hub.run_due_deployments().await {
                tracing::warn!(error = %e, "could not check the scheduled deployments");
            }
            if let Err(e) = hub.run_due_agent_deployments().await {
                tracing::warn!(error = %e, "could not check the agents' scheduled deployments");
            }
            // A rolled-back agent answers from its old build, which may
            // first wait for a restart: a minute beyond its own deadline.
            let answer_within = Duration::from_secs(update_confirm_secs.saturating_add(60));
            if let Err(e) = hub.run_agent_updates(answer_within).await {
                tracing::warn!(error = %e, "could not move the agents' updates on");
            }
        }
    });
}

fn spawn_housekeeping(state: AppState) {
    let flusher = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ACTIVITY_FLUSH);
        loop {
            tick.tick().await;
            if let Err(e) = flusher.hub.flush_activity().await {
                tracing::warn!(error = %e, "could not record session activity");
            }
            flusher.hub.flush_refusals(false).await;
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        loop {
            tick.tick().await;
            match state.hub.remove_expired_sessions().await {
                Ok(n) if n > 0 => tracing::info!(sessions = n, "removed expired sessions"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not remove expired sessions"),
            }
        }
    });
}

/// Records how the other replicas reach this one, to relay requests for
/// instances on agents connected here: `server.relay_url`, else `https://`
/// and the address bound (not when that is 0.0.0.0 or `::`, which names no
/// host). Over TLS only; without it this replica relays nothing.
async fn register_relay(state: &AppState, tls: bool) {
    if !tls {
        return;
    }
    let listen = state.config.server.listen;
    let url = match &state.config.server.relay_url {
        Some(u) => u.clone(),
        None if listen.ip().is_unspecified() => {
            tracing::info!(
                "server.relay_url is not set: other replicas cannot relay to agents connected here"
            );
            return;
        }
        None => format!("https://{listen}"),
    };
    let pin = match state.tls_pin.get() {
        Some(p) => Ok(p.clone()),
        None => crate::net::tls::certificate_sha256(
            state
                .config
                .tls
                .cert_file
                .as_deref()
                .unwrap_or(std::path::Path::new("")),
        ),
    };
    match pin {
        Ok(pin) => {
            if let Err(e) = state.hub.register_relay(&url, &pin).await {
                tracing::warn!(error = %e, "this replica's relay address could not be recorded");
            }
        }
        Err(e) => tracing::warn!(error = %e, "no certificate fingerprint to relay with"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

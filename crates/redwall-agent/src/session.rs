//! One connection to the hub, from dial to hang-up:
//!
//! 1. TCP, TLS (the agent's own trust, see [`crate::tls`]), then the
//!    WebSocket upgrade on [`CONNECT_PATH`].
//! 2. The hub speaks first with a challenge; the agent answers `hello`,
//!    signed with its key over [`hello_message`].
//! 3. After `welcome`: a heartbeat at once and every `heartbeat_secs`
//!    (with a WebSocket ping, so a quiet hub still answers something),
//!    carrying Node-RED's state, and the answers to the hub's commands.
//!    A `restart` runs on a task of its own (it takes as long as Node-RED
//!    needs to answer again); so does a `deploy` (see [`crate::apply`]).
//!    Their answers come through [`Local`]'s channel, on this connection
//!    or, if it dropped meanwhile, on the next one. Heartbeats name the
//!    snapshot that runs. The hello names the build that runs (the SHA-256
//!    of the agent's executable); right after the welcome comes the answer
//!    to an update, if one is owed (see [`crate::self_update`]), and an
//!    installed update ends the connection normally to switch builds.
//!
//! How it ends ([`SessionEnd`]) decides what the reconnect loop does: a
//! revoked or unknown agent stops for good, anything else dials again.
//!
//! [`CONNECT_PATH`]: redwall_policy::agent_protocol::CONNECT_PATH

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _};
use redwall_policy::agent_protocol::{
    close, hello_message, AgentCommand, AgentMessage, AgentStatus, HostedInstance, HubMessage,
    SiteReport, HEARTBEAT_SECS_RANGE, HELLO_CONTEXT, HELLO_TIMEOUT_SECS, MAX_DEPLOY_FRAME_BYTES,
    MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use crate::apply::Deployments;
use crate::error_chain;
use crate::heard::{Heard, LastHeard};
use crate::hosting::HostedIdentity;
use crate::hub_url::HubEndpoint;
use crate::launcher::Switch;
use crate::node_red::NodeRed;
use crate::self_update::Updates;
use crate::state::Agent;

/// TCP, TLS and the WebSocket upgrade together.
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// From the upgrade to `welcome`. The hub itself gives the agent
/// `HELLO_TIMEOUT_SECS` to answer; this only bounds a hub that says nothing.
const GREETING_TIMEOUT: Duration = Duration::from_secs(30);
/// The link is dead when nothing at all came from the hub for this many
/// heartbeat intervals.
const SILENT_INTERVALS: u32 = 3;
/// Shortest time a frame may take to leave before the link counts as dead.
const MIN_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// A refusal of the hello that comes at least this long after the
/// challenge is taken for the hub's hello timeout, not a verdict on the key.
const LATE_REFUSAL: Duration = Duration::from_secs(HELLO_TIMEOUT_SECS / 2);
/// How long a closing handshake may take before the socket is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// What heartbeats report when the agent runs no Node-RED.
const NODE_RED_NONE: &str = "none";
/// The answer to `restart` when the agent runs no Node-RED.
const NO_NODE_RED: &str = "this agent runs no Node-RED yet";
/// The answer to a `restart` that brought Node-RED back.
const RESTARTED: &str = "restarted";
/// The answer to a deploy sent as a command: the hub sends snapshots in a
/// message of their own, which carries the signed snapshot.
const DEPLOY_AS_MESSAGE: &str = "deploy arrives as a deploy message";
/// The same for an update: the build comes in an update message.
const UPDATE_AS_MESSAGE: &str = "an update arrives as an update message";

/// A command's answer, made off the connection's loop.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) id: String,
    pub(crate) ok: bool,
    pub(crate) message: String,
}

/// What outlives one connection: the Node-RED the agent runs (if any),
/// its snapshots, its updates, the answers of commands still running, and
/// a build to switch to once an update is installed.
pub(crate) struct Local {
    node_red: Option<Arc<NodeRed>>,
    deployments: Arc<Deployments>,
    pub(crate) updates: Arc<Updates>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    switch_tx: mpsc::UnboundedSender<Switch>,
    pub(crate) switch_rx: mpsc::UnboundedReceiver<Switch>,
    /// Marked on every turn of the loops, for systemd's watchdog.
    pub(crate) progress: crate::watchdog::Progress,
    /// What the site's own endpoints judge by, when the agent serves them.
    pub(crate) site_access: Option<SiteAccessSender>,
    /// The site's audit events and log lines kept for the hub.
    pub(crate) site_events: Option<Arc<crate::site_events::SiteEvents>>,
    /// The MQTT bridge's figures, when the agent bridges.
    pub(crate) bridge_stats: Option<crate::bridge::StatsReader>,
}

/// Where a new hosted instance's rules and keys go (`local_endpoints`).
pub(crate) type SiteAccessSender =
    tokio::sync::watch::Sender<Option<Arc<crate::local_endpoints::SiteAccess>>>;

impl Local {
    pub(crate) fn new(
        node_red: Option<Arc<NodeRed>>,
        deployments: Arc<Deployments>,
        updates: Arc<Updates>,
        progress: crate::watchdog::Progress,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (switch_tx, switch_rx) = mpsc::unbounded_channel();
        Self {
            node_red,
            deployments,
            updates,
            done_tx,
            done_rx,
            switch_tx,
            switch_rx,
            progress,
            site_access: None,
            site_events: None,
            bridge_stats: None,
        }
    }

    /// The site's figures for the heartbeat, if the agent keeps any.
    fn site_report(&self) -> Option<SiteReport> {
        if self.site_events.is_none() && self.bridge_stats.is_none() {
            return None;
        }
        Some(SiteReport {
            bridge: self.bridge_stats.as_ref().map(|b| b.report()),
            journal: self.site_events.as_ref().map(|s| s.report()),
        })
    }

    fn node_red_state(&self) -> &'static str {
        self.node_red.as_ref().map_or(NODE_RED_NONE, |n| n.state())
    }
}

type HubSocket = WebSocketStream<TlsStream<Heard<TcpStream>>>;

/// How one connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// The hub closed with [`close::REVOKED`]: never dial again.
    Revoked,
    /// The hub closed with [`close::UNAUTHENTICATED`]: the hub does not
    /// know this key (wrong key, agent deleted); dialling again cannot help.
    Unauthenticated,
    /// The caller asked the agent to stop; the hub was told (code 1000).
    Shutdown,
    /// Anything else; dial again. `welcomed` says whether the hub had
    /// accepted the agent on this connection (which resets the backoff).
    Lost { welcomed: bool, why: String },
    /// An update is installed: the hub was told (code 1000), and the agent
    /// switches to this build.
    Switch(Switch),
}

fn lost(welcomed: bool, why: impl Into<String>) -> SessionEnd {
    SessionEnd::Lost {
        welcomed,
        why: why.into(),
    }
}

/// Dials the hub; made once per run, used for every connection.
pub(crate) struct Dialer {
    hub: HubEndpoint,
    connector: TlsConnector,
}

impl Dialer {
    pub(crate) fn new(hub: HubEndpoint, tls: rustls::ClientConfig) -> Self {
        Self {
            hub,
            connector: TlsConnector::from(Arc::new(tls)),
        }
    }

    async fn dial(&self, heard: &LastHeard) -> Result<HubSocket, String> {
        let authority = self.hub.authority();
        let tcp = TcpStream::connect((self.hub.dial_host(), self.hub.port()))
            .await
            .map_err(|e| format!("cannot reach the hub at {authority}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tcp = Heard::new(tcp, heard.clone());
        let tls = self
            .connector
            .connect(self.hub.server_name(), tcp)
            .await
            .map_err(|e| {
                format!(
                    "TLS with the hub at {authority} failed: {}",
                    error_chain(&e)
                )
            })?;
        // A deploy carries a whole snapshot, so the hub's frames may be that
        // large; every other message is held to MAX_FRAME_BYTES in on_text.
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_DEPLOY_FRAME_BYTES))
            .max_frame_size(Some(MAX_DEPLOY_FRAME_BYTES))
            // Frames are small and rare; the 128 KiB default is for bulk.
            .read_buffer_size(16 * 1024);
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(self.hub.connect_url(), tls, Some(config))
                .await
                .map_err(|e| format!("the hub at {authority} refused the WebSocket: {e}"))?;
        Ok(ws)
    }
}

/// One connection: dial, answer the challenge, then heartbeats and
/// commands until it ends. `shutdown` is polled throughout; once it fires
/// the session closes with 1000 and returns [`SessionEnd::Shutdown`].
pub(crate) async fn session<F: Future<Output = ()>>(
    agent: &Agent,
    dialer: &Dialer,
    local: &mut Local,
    shutdown: &mut Pin<&mut F>,
) -> SessionEnd {
    let heard = LastHeard::new();
    let mut ws = tokio::select! {
        dialled = timeout(DIAL_TIMEOUT, dialer.dial(&heard)) => match dialled {
            Ok(Ok(ws)) => ws,
            Ok(Err(why)) => return lost(false, why),
            Err(_) => return lost(false, format!("dialling the hub at {} timed out", dialer.hub.authority())),
        },
        () = shutdown.as_mut() => return SessionEnd::Shutdown,
    };
    let greeted = tokio::select! {
        greeted = timeout(GREETING_TIMEOUT, greet(&mut ws, agent, local.updates.own_sha256())) => greeted,
        () = shutdown.as_mut() => {
            close_normally(&mut ws).await;
            return SessionEnd::Shutdown;
        }
    };
    let heartbeat_secs = match greeted {
        Ok(Ok(secs)) => secs,
        Ok(Err(end)) => return end,
        Err(_) => return lost(false, "the hub did not welcome the agent in time"),
    };
    info!(
        "connected to {} as {} (heartbeat every {heartbeat_secs} s)",
        agent.config.hub_url, agent.config.name
    );
    // Before anything else: a new build confirms its update now, and an
    // update's answer left by an earlier process (or this one) is owed.
    if let Some(answer) = local.updates.on_welcome() {
        let done = AgentMessage::CommandDone {
            id: answer.command_id.clone(),
            ok: answer.ok,
            message: answer.message,
        };
        if let Err(end) = send(&mut ws, &done, MIN_SEND_TIMEOUT, true).await {
            return end;
        }
        local.updates.answered(&answer.command_id);
    }
    connected(&mut ws, &heard, agent, heartbeat_secs, local, shutdown).await
}

/// The challenge, the signed hello, the welcome. Returns the heartbeat
/// interval the hub asked for.
async fn greet(
    ws: &mut HubSocket,
    agent: &Agent,
    build_sha256: Option<String>,
) -> Result<u64, SessionEnd> {
    let nonce = loop {
        match next_hub_message(ws, None).await? {
            HubMessage::Challenge { nonce } => break nonce,
            other => debug!("ignored {} before the challenge", kind(&other)),
        }
    };
    let challenged_at = Instant::now();
    let agent_id = &agent.config.agent_id;
    let signature = agent
        .key
        .sign(HELLO_CONTEXT, &hello_message(agent_id, &nonce));
    let hello = AgentMessage::Hello {
        agent_id: agent_id.clone(),
        signature: STANDARD.encode(signature),
        protocol: PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        build_sha256,
    };
    send(ws, &hello, MIN_SEND_TIMEOUT, false).await?;
    welcome(ws, agent_id, challenged_at).await
}

/// Waits for `welcome` after the hello; the heartbeat interval it sets.
async fn welcome(
    ws: &mut HubSocket,
    agent_id: &str,
    challenged_at: Instant,
) -> Result<u64, SessionEnd> {
    loop {
        match next_hub_message(ws, Some(challenged_at)).await? {
            HubMessage::Welcome {
                agent_id: welcomed_id,
                heartbeat_secs,
            } => {
                if welcomed_id != agent_id {
                    return Err(lost(
                        false,
                        format!(
                            "the hub welcomed agent {welcomed_id}, not this agent ({agent_id})"
                        ),
                    ));
                }
                // A zero would make a busy loop (and tokio's interval panics
                // on it); keep within what a hub may set.
                return Ok(heartbeat_secs
                    .clamp(*HEARTBEAT_SECS_RANGE.start(), *HEARTBEAT_SECS_RANGE.end()));
            }
            other => debug!("ignored {} before the welcome", kind(&other)),
        }
    }
}

/// The next frame from the hub that is a message we can read, during the
/// greeting (control frames and unreadable frames are skipped).
/// `challenged_at`: when the challenge came, once it has.
async fn next_hub_message(
    ws: &mut HubSocket,
    challenged_at: Option<Instant>,
) -> Result<HubMessage, SessionEnd> {
    loop {
        match ws.next().await {
            None => return Err(lost(false, "the hub hung up")),
            Some(Err(e)) => return Err(lost(false, format!("the connection failed: {e}"))),
            Some(Ok(Message::Close(frame))) => {
                // Judged on arrival: finishing the close takes time.
                let end = late_refusal_is_a_timeout(close_meaning(frame, false), challenged_at);
                finish_close(ws).await;
                return Err(end);
            }
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<HubMessage>(&text) {
                Ok(message) => return Ok(message),
                Err(e) => warn!("ignored a frame from the hub that is not a message: {e}"),
            },
            Some(Ok(_)) => {}
        }
    }
}

/// After the welcome: heartbeats, pings, commands, until the link ends.
async fn connected<F: Future<Output = ()>>(
    ws: &mut HubSocket,
    heard: &LastHeard,
    agent: &Agent,
    heartbeat_secs: u64,
    local: &mut Local,
    shutdown: &mut Pin<&mut F>,
) -> SessionEnd {
    let period = Duration::from_secs(heartbeat_secs);
    let silence_limit = period * SILENT_INTERVALS;
    let send_limit = silence_limit.max(MIN_SEND_TIMEOUT);
    // The first tick is immediate: the hub sees a heartbeat right away.
    let mut beat = tokio::time::interval(period);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // This connection's tunnel: its streams reach Node-RED; it ends with
    // the connection.
    let mut tunnel = crate::tunnel::site_end(local.node_red.as_ref().map(|n| n.address()));
    let mut watchdog_tick = tokio::time::interval(crate::watchdog::TICK);
    let site_events = local.site_events.clone();
    if let Some(site) = &site_events {
        site.new_connection();
    }
    loop {
        local.progress.mark();
        let outcome = tokio::select! {
            _ = watchdog_tick.tick() => Ok(()),
            batch = next_site_batch(site_events.as_deref()) => send(ws, &batch, send_limit, true).await,
            () = shutdown.as_mut() => {
                close_normally(ws).await;
                return SessionEnd::Shutdown;
            }
            // Any byte counts, not only whole frames: a large frame may
            // take longer than this to arrive on a slow link.
            () = sleep_until(heard.at() + silence_limit) => {
                if heard.at() + silence_limit > Instant::now() {
                    Ok(())
                } else {
                    return lost(true, format!(
                        "nothing heard from the hub for {} s, the link is dead",
                        silence_limit.as_secs()
                    ));
                }
            }
            _ = beat.tick() => {
                let status = AgentStatus {
                    node_red: local.node_red_state().to_owned(),
                    running_snapshot: local.deployments.running(),
                    site: local.site_report(),
                };
                heartbeat(ws, status, send_limit).await
            }
            Some(done) = local.done_rx.recv() => {
                let Done { id, ok, message } = done;
                send(ws, &AgentMessage::CommandDone { id, ok, message }, send_limit, true).await
            }
            frame = tunnel.next_frame() => match frame {
                Some(frame) => send_frame(ws, Message::Binary(frame.into()), send_limit, true).await,
                None => Err(lost(true, "the tunnel ended")),
            },
            Some(switch) = local.switch_rx.recv() => {
                close_with(ws, "agent switching to another build").await;
                return SessionEnd::Switch(switch);
            }
            frame = ws.next() => {
                match frame {
                    None => Err(lost(true, "the hub hung up")),
                    Some(Err(e)) => Err(lost(true, format!("the connection failed: {e}"))),
                    Some(Ok(Message::Close(frame))) => {
                        let end = close_meaning(frame, true);
                        finish_close(ws).await;
                        Err(end)
                    }
                    Some(Ok(Message::Text(text))) => {
                        let handled = on_text(ws, agent, &text, local, send_limit).await;
                        // Reading a large frame (a snapshot, a build) takes
                        // a while here; that is not silence of the hub.
                        heard.mark();
                        handled
                    }
                    Some(Ok(Message::Binary(bytes))) => tunnel
                        .deliver(&bytes)
                        .await
                        .map_err(|_| lost(true, "the tunnel ended")),
                    // Pongs (and the hub's pings, answered by tungstenite)
                    // only matter as signs of life.
                    Some(Ok(_)) => Ok(()),
                }
            }
        };
        if let Err(end) = outcome {
            return end;
        }
    }
}

async fn heartbeat(
    ws: &mut HubSocket,
    status: AgentStatus,
    limit: Duration,
) -> Result<(), SessionEnd> {
    let beat = AgentMessage::Heartbeat { status };
    send(ws, &beat, limit, true).await?;
    // The hub answers a ping with a pong even when it has nothing to say,
    // which is what keeps a healthy but quiet link from looking dead.
    send_frame(ws, Message::Ping(Default::default()), limit, true).await
}

/// A text frame after the welcome: a command gets its answer; anything
/// else is logged and ignored, so a newer hub cannot crash an older agent.
async fn on_text(
    ws: &mut HubSocket,
    agent: &Agent,
    text: &str,
    local: &Local,
    limit: Duration,
) -> Result<(), SessionEnd> {
    let (id, ok, message) = match serde_json::from_str::<HubMessage>(text) {
        Ok(HubMessage::Update {
            id,
            build,
            confirm_within_secs,
        }) => {
            // Large like a deploy (it carries the binary), and off the loop
            // like one: checking tens of megabytes takes a moment.
            info!("update {id}");
            local.updates.offer(
                id,
                *build,
                confirm_within_secs,
                local.done_tx.clone(),
                local.switch_tx.clone(),
            );
            return Ok(());
        }
        Ok(HubMessage::Host { instance }) => {
            host(agent, local, instance);
            return Ok(());
        }
        Ok(HubMessage::SiteEventsStored {
            stream,
            epoch,
            through,
        }) => {
            if let Some(site) = &local.site_events {
                site.stored(stream, &epoch, through).await;
            }
            return Ok(());
        }
        Ok(HubMessage::Deploy { id, snapshot }) => {
            info!("deploy {id}");
            // Off the loop, like a restart: loading and the health check
            // take seconds, during which heartbeats must go on. Deploys
            // queue up inside `Deployments`, one at a time.
            let deployments = local.deployments.clone();
            let done = local.done_tx.clone();
            tokio::spawn(async move {
                let (ok, message) = deployments.deploy(&snapshot).await;
                info!("deploy {id}: {message}");
                let _ = done.send(Done { id, ok, message });
            });
            return Ok(());
        }
        Ok(_) if text.len() > MAX_FRAME_BYTES => {
            warn!(
                "ignored a message of {} bytes from the hub: only a deploy may exceed {MAX_FRAME_BYTES}",
                text.len()
            );
            return Ok(());
        }
        Ok(HubMessage::Command { id, command }) => {
            info!("command {id}: {}", command.name());
            match run_command(&command, local.node_red.as_ref()) {
                Answer::Now(ok, message) => (id, ok, message.to_owned()),
                Answer::Later(work) => {
                    // Off the loop: heartbeats and other commands go on
                    // while Node-RED restarts.
                    let done = local.done_tx.clone();
                    tokio::spawn(async move {
                        let (ok, message) = match work.await {
                            Ok(()) => (true, RESTARTED.to_owned()),
                            Err(why) => (false, why),
                        };
                        info!("command {id}: {message}");
                        let _ = done.send(Done { id, ok, message });
                    });
                    return Ok(());
                }
            }
        }
        Ok(other) => {
            debug!("ignored {} after the welcome", kind(&other));
            return Ok(());
        }
        Err(e) => match unknown_command(text) {
            // A command of a kind this agent does not know still gets an
            // answer, so the hub does not wait for one in vain.
            Some((id, kind)) => {
                warn!("command {id}: unknown kind {kind:?}");
                (
                    id,
                    false,
                    format!(
                        "this agent (version {}) does not know the command {kind:?}",
                        env!("CARGO_PKG_VERSION")
                    ),
                )
            }
            None => {
                warn!("ignored a frame from the hub that is not a message: {e}");
                return Ok(());
            }
        },
    };
    send(
        ws,
        &AgentMessage::CommandDone { id, ok, message },
        limit,
        true,
    )
    .await
}

/// Makes Node-RED the hub's instance the message names (or the agent's
/// own), off the loop: it may restart Node-RED.
fn host(agent: &Agent, local: &Local, instance: Option<HostedInstance>) {
    let Some(node_red) = local.node_red.clone() else {
        if let Some(i) = instance {
            warn!(
                "the hub says this agent's Node-RED is the instance {}, but this agent runs no Node-RED",
                i.name
            );
        }
        return;
    };
    let identity = match (instance, agent.box_key.as_ref()) {
        (None, _) => None,
        (Some(i), Some(key)) => match HostedIdentity::open(&i, key) {
            Ok(identity) => Some(identity),
            Err(why) => {
                warn!("refused the hosted instance {}: {why}", i.name);
                return;
            }
        },
        (Some(i), None) => {
            warn!(
                "the instance {} cannot be hosted: this agent has no encryption key; enrol it again",
                i.name
            );
            return;
        }
    };
    if let Some(site) = &local.site_access {
        // The endpoints follow the hub's rules and keys at once, whether
        // or not Node-RED must restart for new token keys.
        site.send_replace(identity.as_ref().and_then(HostedIdentity::site_access));
    }
    tokio::spawn(async move {
        let control = node_red.control().await;
        match control.host(identity.as_ref()).await {
            Ok(true) => match &identity {
                Some(i) => info!("Node-RED is now the hub's instance {}", i.name),
                None => info!("Node-RED is no hub instance any more"),
            },
            Ok(false) => {}
            Err(why) => warn!("Node-RED could not become the hosted instance: {why}"),
        }
    });
}

/// How a command is answered: at once, or when its work is done.
enum Answer {
    Now(bool, &'static str),
    Later(Pin<Box<dyn Future<Output = Result<(), String>> + Send>>),
}

/// What a command does, and what the agent answers.
fn run_command(command: &AgentCommand, node_red: Option<&Arc<NodeRed>>) -> Answer {
    match command {
        AgentCommand::Ping => Answer::Now(true, "pong"),
        AgentCommand::Deploy { .. } => Answer::Now(false, DEPLOY_AS_MESSAGE),
        AgentCommand::Update { .. } => Answer::Now(false, UPDATE_AS_MESSAGE),
        AgentCommand::Restart => match node_red {
            None => Answer::Now(false, NO_NODE_RED),
            Some(node_red) => {
                let node_red = node_red.clone();
                Answer::Later(Box::pin(async move { node_red.restart().await }))
            }
        },
    }
}

/// `{"type":"command","id":...,"command":{"kind":...}}` whose kind (or
/// other detail) this agent cannot read: its id and kind.
fn unknown_command(text: &str) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    if value.get("type")?.as_str()? != "command" {
        return None;
    }
    let id = value.get("id")?.as_str()?.to_owned();
    let kind = value
        .get("command")
        .and_then(|c| c.get("kind"))
        .and_then(|k| k.as_str())
        .unwrap_or("?")
        .chars()
        .take(64)
        .collect();
    Some((id, kind))
}

/// The hub closed the connection: finish the closing handshake briefly.
async fn finish_close(ws: &mut HubSocket) {
    // tungstenite queued our reply to the close; reading on sends it and
    // then sees the hub hang up.
    let _ = timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// What the hub's close code means for the agent.
fn close_meaning(frame: Option<CloseFrame>, welcomed: bool) -> SessionEnd {
    let Some(frame) = frame else {
        return lost(welcomed, "the hub closed the connection without a code");
    };
    let reason: String = frame
        .reason
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    match u16::from(frame.code) {
        close::REVOKED => SessionEnd::Revoked,
        close::UNAUTHENTICATED => SessionEnd::Unauthenticated,
        close::REPLACED => lost(
            welcomed,
            format!("another connection of this agent took over (is it running twice?): {reason}"),
        ),
        code => lost(
            welcomed,
            format!("the hub closed the connection (code {code}): {reason}"),
        ),
    }
}

/// The hub also closes with UNAUTHENTICATED when the hello came too late
/// (after `HELLO_TIMEOUT_SECS`). A refusal of the key comes right after
/// the hello; one this long after the challenge is far more likely that
/// timeout, which says nothing about the key, so the agent must not give
/// up for good over a slow link: it dials again instead.
fn late_refusal_is_a_timeout(end: SessionEnd, challenged_at: Option<Instant>) -> SessionEnd {
    match (end, challenged_at) {
        (SessionEnd::Unauthenticated, Some(at)) if at.elapsed() >= LATE_REFUSAL => lost(
            false,
            format!(
                "the hub refused the agent {} s after its challenge, probably because the answer came too late",
                at.elapsed().as_secs()
            ),
        ),
        (end, _) => end,
    }
}

/// Tells the hub the agent is going away (1000), briefly waiting for its
/// answer.
async fn close_normally(ws: &mut HubSocket) {
    close_with(ws, "agent stopping").await;
}

/// Closes with 1000 and `reason`, briefly waiting for the hub's answer.
async fn close_with(ws: &mut HubSocket, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: reason.into(),
    };
    let _ = timeout(CLOSE_TIMEOUT, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

async fn send(
    ws: &mut HubSocket,
    message: &AgentMessage,
    limit: Duration,
    welcomed: bool,
) -> Result<(), SessionEnd> {
    let json = serde_json::to_string(message)
        .map_err(|e| lost(welcomed, format!("cannot encode a message: {e}")))?;
    send_frame(ws, Message::Text(json.into()), limit, welcomed).await
}

/// Sends one frame, giving up (the link is dead) if it cannot leave in
/// `limit`: a hub that stopped reading must not block the agent forever.
async fn send_frame(
    ws: &mut HubSocket,
    frame: Message,
    limit: Duration,
    welcomed: bool,
) -> Result<(), SessionEnd> {
    match timeout(limit, ws.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(lost(welcomed, format!("sending to the hub failed: {e}"))),
        Err(_) => Err(lost(
            welcomed,
            "sending to the hub timed out, the link is dead",
        )),
    }
}

fn kind(message: &HubMessage) -> &'static str {
    match message {
        HubMessage::Challenge { .. } => "a challenge",
        HubMessage::Welcome { .. } => "a welcome",
        HubMessage::Command { .. } => "a command",
        HubMessage::Deploy { .. } => "a deploy",
        HubMessage::Update { .. } => "an update",
        HubMessage::Host { .. } => "the hosted instance",
        HubMessage::SiteEventsStored { .. } => "an acknowledgement of site events",
    }
}

/// The next batch of site events to send; never, without journals.
async fn next_site_batch(site: Option<&crate::site_events::SiteEvents>) -> AgentMessage {
    match site {
        Some(site) => site.next_batch().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commands_get_their_answers() {
        assert!(matches!(
            run_command(&AgentCommand::Ping, None),
            Answer::Now(true, "pong")
        ));
        assert!(matches!(
            run_command(&AgentCommand::Restart, None),
            Answer::Now(false, NO_NODE_RED)
        ));
        let deploy = AgentCommand::Deploy {
            snapshot_id: "s1".into(),
        };
        assert!(matches!(
            run_command(&deploy, None),
            Answer::Now(false, DEPLOY_AS_MESSAGE)
        ));
    }

    #[test]
    fn close_codes_decide_whether_to_dial_again() {
        let frame = |code: u16| {
            Some(CloseFrame {
                code: code.into(),
                reason: "r".into(),
            })
        };
        assert_eq!(
            close_meaning(frame(close::REVOKED), true),
            SessionEnd::Revoked
        );
        assert_eq!(
            close_meaning(frame(close::UNAUTHENTICATED), false),
            SessionEnd::Unauthenticated
        );
        // The hub's "dial later" (its pace, or its database faltering) is
        // no verdict on the key: the agent dials again.
        assert!(matches!(
            close_meaning(frame(close::DIAL_LATER), false),
            SessionEnd::Lost {
                welcomed: false,
                ..
            }
        ));
        for code in [close::REPLACED, close::PROTOCOL, 1000, 1001, 1012] {
            assert!(
                matches!(
                    close_meaning(frame(code), true),
                    SessionEnd::Lost { welcomed: true, .. }
                ),
                "{code}"
            );
        }
        assert!(matches!(
            close_meaning(None, false),
            SessionEnd::Lost { .. }
        ));
    }

    #[test]
    fn only_a_prompt_refusal_is_a_verdict_on_the_key() {
        let now = Instant::now();
        assert_eq!(
            late_refusal_is_a_timeout(SessionEnd::Unauthenticated, Some(now)),
            SessionEnd::Unauthenticated
        );
        let Some(long_ago) = now.checked_sub(LATE_REFUSAL) else {
            return;
        };
        assert!(matches!(
            late_refusal_is_a_timeout(SessionEnd::Unauthenticated, Some(long_ago)),
            SessionEnd::Lost { .. }
        ));
        assert_eq!(
            late_refusal_is_a_timeout(SessionEnd::Revoked, Some(long_ago)),
            SessionEnd::Revoked
        );
    }

    #[test]
    fn a_command_of_an_unknown_kind_is_recognised() {
        assert_eq!(
            unknown_command(r#"{"type":"command","id":"c9","command":{"kind":"reboot","x":1}}"#),
            Some(("c9".into(), "reboot".into()))
        );
        assert_eq!(unknown_command(r#"{"type":"welcome","id":"c9"}"#), None);
        assert_eq!(unknown_command(r#"{"type":"command"}"#), None);
        assert_eq!(unknown_command("not json"), None);
    }
}

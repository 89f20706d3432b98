//! The agents' way in: one WebSocket per agent on the hub's HTTPS port.
//!
//! The route is public because the agent proves itself on the connection:
//! the hub speaks first with a fresh challenge and the agent answers with
//! its id and its key's signature over it (`redwall_policy::agent_protocol`).
//! Then heartbeats (each one recorded also re-checks that the agent is not
//! revoked), command answers, and the commands the hub hands it. The hub's own
//! announcements close the connection at once when the agent is revoked on
//! any replica, and hand it commands queued on any replica. Every decision
//! is a hub call; this module only carries frames, and paces the site
//! events an agent sends by the connection's budget
//! (`redwall_policy::site_events::SiteEventBudget`) and the heartbeats it
//! records by the connection's pace
//! (`redwall_policy::pace::Pace`).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use redwall_hub::agents::{new_challenge, AgentEvent};
use redwall_hub::{HubError, Origin};
use redwall_policy::agent_protocol::{
    close, AgentCommand, AgentMessage, AgentStatus, HubMessage, HELLO_TIMEOUT_SECS,
    MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use redwall_store::Agent;
use tokio::sync::broadcast::error::RecvError;

use super::agent_beat_pace::Beats;
use super::agent_site_pace::{Batch, Held, Offer};
use crate::error::ApiError;
use crate::net::client::ClientInfo;
use crate::state::AppState;

/// Bytes read from an agent's connection at a time.
const AGENT_READ_BUFFER: usize = 4 * 1024;

/// Missed heartbeats after which a silent connection is dropped.
const SILENT_HEARTBEATS: u64 = 3;

pub async fn connect(
    State(state): State<AppState>,
    client: ClientInfo,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return ApiError::bad_request(
            "websocket_required",
            "this is where remote agents connect, with a WebSocket",
        )
        .into_response();
    };
    let origin = client.origin();
    // Small buffers: a thousand idle agents each hold one connection, and
    // tungstenite's defaults (128 KiB to read, 128 KiB to write) made
    // about 150 KiB of hub memory per agent. Frames here are small
    // heartbeats and commands; a larger one still grows the buffer.
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(AGENT_READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session(state, origin, socket))
}

/// Why a connection ended, as the close frame says it.
struct Ending {
    code: u16,
    reason: &'static str,
}

impl Ending {
    const fn new(code: u16, reason: &'static str) -> Self {
        Ending { code, reason }
    }
}

/// Frames waiting for the writer.
const QUEUED_FRAMES: usize = 64;
/// How long the last frames and the close may take once the hub ends a
/// connection; then it is dropped (a revoked agent is cut off within a
/// second even while a large frame to it is still on its way).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// An agent's WebSocket, written by a task of its own, so the connection
/// is read while a large frame is still on its way: a deploy or a build of
/// megabytes takes minutes on a slow site's link, and meanwhile the
/// agent's heartbeats (its online state) must still be heard. Frames leave
/// in the order they were given; a full queue makes the sender wait.
struct Link {
    out: tokio::sync::mpsc::Sender<Message>,
    frames: futures::stream::SplitStream<WebSocket>,
    writer: tokio::task::JoinHandle<()>,
}

impl Link {
    fn new(socket: WebSocket) -> Link {
        let (mut sink, frames) = socket.split();
        let (out, mut queued) = tokio::sync::mpsc::channel::<Message>(QUEUED_FRAMES);
        let writer = tokio::spawn(async move {
            while let Some(frame) = queued.recv().await {
                if sink.send(frame).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        Link {
            out,
            frames,
            writer,
        }
    }

    /// Queues a frame; an error once the writer has stopped (the
    /// connection failed).
    async fn frame(&self, frame: Message) -> Result<(), ()> {
        self.out.send(frame).await.map_err(|_| ())
    }

    /// Sends the close frame (if any) after what is queued, and waits a
    /// while for the writer to finish.
    async fn close(self, ending: Option<Ending>) {
        if let Some(ending) = ending {
            let _ = self
                .out
                .send(Message::Close(Some(CloseFrame {
                    code: ending.code,
                    reason: ending.reason.into(),
                })))
                .await;
        }
        drop(self.out);
        let mut writer = self.writer;
        if tokio::time::timeout(CLOSE_WAIT, &mut writer).await.is_err() {
            writer.abort();
        }
    }
}

async fn send(link: &Link, message: &HubMessage) -> Result<(), ()> {
    let text = serde_json::to_string(message).map_err(|_| ())?;
    link.frame(Message::Text(text.into())).await
}

async fn close_with(link: Link, ending: Ending) {
    link.close(Some(ending)).await;
}

/// What an agent sent: a message, or bytes of the tunnel.
enum Frame {
    Message(AgentMessage),
    Tunnel(bytes::Bytes),
}

/// The next frame; `None` once the connection ended, an error for a text
/// frame that is no message.
async fn next_frame(link: &mut Link) -> Option<Result<Frame, ()>> {
    loop {
        match link.frames.next().await? {
            Ok(Message::Text(text)) => {
                return Some(
                    serde_json::from_str::<AgentMessage>(&text)
                        .map(Frame::Message)
                        .map_err(|_| ()),
                )
            }
            Ok(Message::Binary(bytes)) => return Some(Ok(Frame::Tunnel(bytes))),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(Message::Close(_)) | Err(_) => return None,
        }
    }
}

/// The next message, before the tunnel exists: tunnel bytes are refused.
async fn next_message(link: &mut Link) -> Option<Result<AgentMessage, ()>> {
    match next_frame(link).await? {
        Ok(Frame::Message(m)) => Some(Ok(m)),
        Ok(Frame::Tunnel(_)) | Err(()) => Some(Err(())),
    }
}

async fn session(state: AppState, origin: Origin, socket: WebSocket) {
    let mut link = Link::new(socket);
    let hub = &state.hub;
    let nonce = new_challenge();
    if send(
        &link,
        &HubMessage::Challenge {
            nonce: nonce.clone(),
        },
    )
    .await
    .is_err()
    {
        return link.close(None).await;
    }
    let hello = tokio::time::timeout(
        Duration::from_secs(HELLO_TIMEOUT_SECS),
        next_message(&mut link),
    )
    .await;
    let (agent_id, signature, version, build_sha256) = match hello {
        Ok(Some(Ok(AgentMessage::Hello {
            agent_id,
            signature,
            protocol,
            version,
            build_sha256,
        }))) if protocol == PROTOCOL_VERSION => (agent_id, signature, version, build_sha256),
        Ok(Some(_)) => {
            return close_with(link, Ending::new(close::PROTOCOL, "expected hello")).await
        }
        Ok(None) => return link.close(None).await,
        Err(_) => return close_with(link, Ending::new(close::TOO_SLOW, "too slow")).await,
    };
    // Listen before the last check, so a revocation right after it is
    // still heard.
    let mut events = hub.agent_events();
    let agent = match hub
        .authenticate_agent(&origin, &agent_id, &nonce, &signature)
        .await
    {
        Ok(agent) => agent,
        // Only a refusal of the key says so: the agent stops for good on
        // it. Anything else (its pace, a faltering database) tells it to
        // dial again, and its own backoff brings it back.
        Err(HubError::Refused { .. }) => {
            return close_with(link, Ending::new(close::UNAUTHENTICATED, "not recognised")).await
        }
        Err(HubError::Throttled { .. }) => {
            return close_with(link, Ending::new(close::DIAL_LATER, "dialing too often")).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "an agent's hello could not be checked: told to dial again");
            return close_with(link, Ending::new(close::DIAL_LATER, "try again later")).await;
        }
    };
    // What it runs, before anything it answers is read (an update counts
    // only if the agent came back with the build's digest).
    let agent = match hub
        .agent_build_reported(agent.clone(), &version, build_sha256.as_deref())
        .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(agent = %agent.name, error = %e, "an agent's build was not recorded");
            agent
        }
    };
    let heartbeat = state.config.agents.heartbeat_secs;
    let welcome = HubMessage::Welcome {
        agent_id: agent.id.clone(),
        heartbeat_secs: heartbeat,
    };
    if send(&link, &welcome).await.is_err() {
        return link.close(None).await;
    }
    tracing::info!(agent = %agent.name, team = %agent.team_id, ip = %origin.ip, "an agent connected");
    let connection = new_challenge();
    hub.agent_connected(&agent.id, &connection).await;
    // The tunnel lives as long as this connection: the proxy reaches the
    // agent's instance through it.
    let (opener, mut tunnel) = redwall_tunnel::hub_end();
    state.tunnels.add(&agent.id, &connection, opener);
    let this = This {
        agent: &agent,
        agent_id: &agent.id,
        connection: &connection,
        origin: &origin,
    };
    let ending = carry(&state, this, &mut link, &mut tunnel, &mut events, heartbeat).await;
    state.tunnels.remove(&agent.id, &connection);
    drop(tunnel);
    link.close(ending).await;
    hub.agent_disconnected(&agent.id).await;
    tracing::info!(agent = %agent.name, team = %agent.team_id, "an agent disconnected");
}

/// The connection being carried: whose, and which one.
#[derive(Clone, Copy)]
struct This<'a> {
    agent: &'a Agent,
    agent_id: &'a str,
    connection: &'a str,
    origin: &'a Origin,
}

/// Carries one authenticated connection until it ends; the close frame to
/// send, if the hub ends it.
async fn carry(
    state: &AppState,
    this: This<'_>,
    link: &mut Link,
    tunnel: &mut redwall_tunnel::Carrier,
    events: &mut tokio::sync::broadcast::Receiver<AgentEvent>,
    heartbeat_secs: u64,
) -> Option<Ending> {
    let hub = &state.hub;
    let agent_id = this.agent_id;
    if send_hosting(state, this, link).await.is_err() {
        return None;
    }
    if send_commands(state, this, link, true).await.is_err() {
        return None;
    }
    let silence = Duration::from_secs(heartbeat_secs.saturating_mul(SILENT_HEARTBEATS));
    let revoked = Some(Ending::new(close::REVOKED, "revoked"));
    let mut held = Held::new();
    let mut beats = Beats::new(heartbeat_secs);
    // When the first held batch or the kept heartbeat may go; a branch of
    // the loop, so holding them never stops the rest.
    let release = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(release);
    loop {
        // A held batch whose time has come goes before the next frame is
        // read (after a slow store, say), so an honest agent's next batch
        // never finds its last one still held.
        while held.is_due() {
            if let Some(batch) = held.release() {
                if let Err(ending) = store_site_events(state, this, link, batch).await {
                    return ending;
                }
            }
        }
        if let Some(status) = beats.take_due() {
            if let Err(ending) = record_heartbeat(state, agent_id, &status).await {
                return ending;
            }
        }
        let wake = [held.retry_at, beats.due_at].into_iter().flatten().min();
        if let Some(at) = wake {
            if release.deadline() != at {
                release.as_mut().reset(at);
            }
        }
        tokio::select! {
            // Only wakes the loop: its head does what is due.
            () = &mut release, if wake.is_some() => {}
            frame = tunnel.next_frame() => match frame {
                Some(bytes) => {
                    if link.frame(Message::Binary(bytes.into())).await.is_err() {
                        return None;
                    }
                }
                // The session ended on its own (a protocol error of the
                // agent's end): the agent dials again.
                None => return Some(Ending::new(close::PROTOCOL, "tunnel ended")),
            },
            frame = tokio::time::timeout(silence, next_frame(link)) => match frame {
                Err(_) => return Some(Ending::new(1001, "silent")),
                Ok(None) => return None,
                Ok(Some(Err(()))) => return Some(Ending::new(close::PROTOCOL, "unreadable frame")),
                Ok(Some(Ok(Frame::Tunnel(bytes)))) => {
                    if tunnel.deliver(&bytes).await.is_err() {
                        return Some(Ending::new(close::PROTOCOL, "tunnel ended"));
                    }
                }
                Ok(Some(Ok(Frame::Message(AgentMessage::Heartbeat { status })))) => {
                    if let Some(status) = beats.offer(status) {
                        if let Err(ending) = record_heartbeat(state, agent_id, &status).await {
                            return ending;
                        }
                    }
                    beats.warn_if_due(agent_id);
                }
                Ok(Some(Ok(Frame::Message(AgentMessage::CommandDone { id, ok, message })))) => {
                    if let Err(e) = hub.agent_command_done(this.origin, agent_id, &id, ok, &message).await {
                        tracing::warn!(agent = agent_id, error = %e, "an agent's answer was not recorded");
                    }
                }
                Ok(Some(Ok(Frame::Message(AgentMessage::SiteEvents { stream, epoch, events })))) => {
                    match held.offer(Batch { stream, epoch, events }) {
                        Offer::Now(batch) => {
                            if let Err(ending) = store_site_events(state, this, link, batch).await {
                                return ending;
                            }
                        }
                        Offer::Held => {}
                        Offer::Twice => {
                            tracing::warn!(
                                agent = agent_id,
                                stream = stream.name(),
                                "an agent sent more site events of a stream while the hub held some back for its budget (it does not wait for answers): disconnected"
                            );
                            return Some(Ending::new(close::PROTOCOL, "too many site events"));
                        }
                    }
                    held.warn_if_due(agent_id);
                }
                Ok(Some(Ok(Frame::Message(AgentMessage::Hello { .. })))) => {
                    return Some(Ending::new(close::PROTOCOL, "hello twice"))
                }
            },
            event = events.recv() => match event {
                Ok(AgentEvent::Revoked(id)) if id == agent_id => return revoked,
                Ok(AgentEvent::Hosting(id)) if id == agent_id => {
                    if send_hosting(state, this, link).await.is_err() {
                        return None;
                    }
                }
                Ok(event) if event.has_commands_for(agent_id) => {
                    if send_commands(state, this, link, false).await.is_err() {
                        return None;
                    }
                }
                Ok(AgentEvent::Connected { agent_id: id, connection })
                    if id == agent_id && connection != this.connection =>
                {
                    return Some(Ending::new(close::REPLACED, "replaced by a newer connection"));
                }
                Ok(AgentEvent::CloseAll) | Err(RecvError::Lagged(_)) => {
                    // Announcements may have been missed: the agent dials
                    // again and is checked afresh.
                    return Some(Ending::new(1012, "reconnect"));
                }
                Ok(_) => {}
                Err(RecvError::Closed) => return Some(Ending::new(1001, "going away")),
            },
        }
    }
}

/// Records a heartbeat; `Err` with how the connection ends when the agent
/// was revoked meanwhile.
async fn record_heartbeat(
    state: &AppState,
    agent_id: &str,
    status: &AgentStatus,
) -> Result<(), Option<Ending>> {
    match state.hub.agent_heartbeat(agent_id, status).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Some(Ending::new(close::REVOKED, "revoked"))),
        Err(e) => {
            tracing::warn!(agent = agent_id, error = %e, "an agent's heartbeat was not recorded");
            Ok(())
        }
    }
}

/// Stores a batch of site events and answers it; `Err` with how the
/// connection ends, when it must.
async fn store_site_events(
    state: &AppState,
    this: This<'_>,
    link: &Link,
    batch: Batch,
) -> Result<(), Option<Ending>> {
    let Batch {
        stream,
        epoch,
        events,
    } = batch;
    let agent_id = this.agent_id;
    match state
        .hub
        .agent_site_events(this.origin, agent_id, stream, &epoch, &events)
        .await
    {
        Ok(through) => {
            let stored = HubMessage::SiteEventsStored {
                stream,
                epoch,
                through,
            };
            send(link, &stored).await.map_err(|()| None)
        }
        // A batch that breaks the rules would be resent forever: the agent
        // is told, and its journal waits (its heartbeats show the
        // backlog).
        Err(redwall_hub::HubError::Refused { message, .. }) => {
            tracing::warn!(agent = agent_id, %message, "an agent's site events were refused");
            Err(Some(Ending::new(close::PROTOCOL, "invalid site events")))
        }
        // Not stored (the database faltered): no answer, so the agent
        // sends them again.
        Err(e) => {
            tracing::warn!(agent = agent_id, error = %e, "an agent's site events were not stored");
            Ok(())
        }
    }
}

/// Hands the agent the commands waiting for it (on a new connection, also
/// the deploys it never answered). A deploy goes as the signed snapshot
/// with credentials sealed for this agent; one that cannot be made ready
/// is answered as failed at once.
async fn send_commands(
    state: &AppState,
    this: This<'_>,
    link: &Link,
    new_connection: bool,
) -> Result<(), ()> {
    let hub = &state.hub;
    let agent_id = this.agent_id;
    let commands = match hub.claim_agent_commands(agent_id, new_connection).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(agent = agent_id, error = %e, "an agent's commands could not be read");
            return Ok(());
        }
    };
    for (id, command) in commands {
        let message = match command {
            AgentCommand::Deploy { snapshot_id } => {
                match hub.snapshot_for_agent(this.agent, &snapshot_id).await {
                    Ok(snapshot) => HubMessage::Deploy {
                        id,
                        snapshot: Box::new(snapshot),
                    },
                    Err(e) => {
                        fail_unsent(
                            state,
                            this,
                            &id,
                            &format!("the hub could not send the snapshot: {e}"),
                        )
                        .await;
                        continue;
                    }
                }
            }
            AgentCommand::Update { build_id } => {
                match hub.build_for_agent(this.agent, &build_id).await {
                    Ok(build) => HubMessage::Update {
                        id,
                        build: Box::new(build),
                        confirm_within_secs: state.config.agents.update_confirm_secs,
                    },
                    Err(e) => {
                        fail_unsent(
                            state,
                            this,
                            &id,
                            &format!("the hub could not send the build: {e}"),
                        )
                        .await;
                        continue;
                    }
                }
            }
            command => HubMessage::Command { id, command },
        };
        send(link, &message).await?;
    }
    Ok(())
}

/// Tells the agent which instance its Node-RED is, with that instance's
/// token keys sealed for it (or that it is none).
async fn send_hosting(state: &AppState, this: This<'_>, link: &Link) -> Result<(), ()> {
    let instance = match state.hub.hosted_instance(this.agent).await {
        Ok(i) => i,
        Err(e) => {
            // The agent keeps what it had; its instance's requests fail
            // their token check until the next connection.
            tracing::warn!(agent = this.agent_id, error = %e, "an agent's instance could not be told");
            return Ok(());
        }
    };
    send(link, &HubMessage::Host { instance }).await
}

/// Answers, for the agent, a command the hub could not make ready to send:
/// it fails, with its cause, as if the agent had refused it.
async fn fail_unsent(state: &AppState, this: This<'_>, id: &str, cause: &str) {
    if let Err(e) = state
        .hub
        .agent_command_done(this.origin, this.agent_id, id, false, cause)
        .await
    {
        tracing::warn!(agent = this.agent_id, error = %e, "a command that could not be sent was not recorded as failed");
    }
}

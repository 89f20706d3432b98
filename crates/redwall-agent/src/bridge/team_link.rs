//! The hop to the team broker: MQTT 3.1.1 over TLS (plain TCP to loopback
//! only), a persistent session under the bridge's stable client id, and
//! the outbox delivered one message at a time, each with QoS 2.
//!
//! # Why the bridge drives QoS 2 itself
//!
//! rumqttc 0.25's event loop was read for this (`state.rs`, `eventloop.rs`)
//! and does three things that break exactly-once across a crash:
//!
//! - it answers PUBREC with PUBREL inside its read loop, before the
//!   application sees the PUBREC, so "PUBREC received" cannot be made
//!   durable before PUBREL leaves; an agent killed between the two would
//!   resend the PUBLISH after restart, which a broker that already got the
//!   PUBREL takes as a new message (a duplicate);
//! - it resends pending publishes without the DUP flag;
//! - it silently discards them when the broker answers without a session.
//!
//! (It does honour a preset packet id, if it is at most its `inflight`.)
//! So this module speaks the protocol with rumqttc's own codec
//! (`rumqttc::Codec`, its packet types) and keeps the state in the outbox:
//!
//! 1. take the next message into flight with a packet id (durable), send
//!    PUBLISH (QoS 2);
//! 2. on PUBREC: mark it released (durable), then send PUBREL;
//! 3. on PUBCOMP: complete it and take the next one (one durable write).
//!
//! After a reconnect or a restart the message in flight is sent again as
//! its phase says: PUBLISH with the same packet id and DUP set, or PUBREL.
//! A broker that kept the session recognises the packet id (QoS 2's whole
//! point) and delivers the message once.
//!
//! # What is not exactly-once
//!
//! A broker that answers CONNACK without a session (it lost it: restarted
//! without persistence, session expired, another client took the id) has
//! forgotten which packet ids it received. Then the message in flight is
//! sent again as a new one (counted as `resent_after_session_loss`): if
//! the broker had already delivered it (it got our PUBREL, or it delivers
//! QoS 2 on PUBLISH), subscribers see it twice. Not resending would lose it
//! whenever the broker had not. At most that one message is affected.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use redwall_policy::agent_protocol::reconnect_delay_ms;
use rumqttc::{
    Codec, ConnectReturnCode, Login, Packet, PubAck, PubComp, PubRec, PubRel, Publish, QoS,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::codec::Framed;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::config::TeamEndpoint;
use super::Shared;
use crate::outbox::{InFlight, Phase};

/// Largest packet accepted from or sent to the team broker.
const MAX_PACKET: usize = 64 * 1024 * 1024;
/// Time allowed to set up TCP, TLS and the MQTT session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Link = Framed<Box<dyn Io>, Codec>;

/// Everything the team link needs, fixed at start.
pub(crate) struct TeamLink {
    pub endpoint: TeamEndpoint,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Zeroizing<String>>,
    pub topic_prefix: String,
    pub keep_alive: Duration,
    pub reconnect_base_ms: u64,
    pub reconnect_max_ms: u64,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("MQTT: {0}")]
    Mqtt(#[from] rumqttc::mqttbytes::Error),
    #[error("the team broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("{0}")]
    Protocol(String),
    #[error("outbox: {0}")]
    Outbox(#[from] crate::outbox::OutboxError),
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

/// Keeps the link up until `shutdown` turns true: connect, deliver,
/// reconnect after a jittered delay.
pub(crate) async fn run(link: TeamLink, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut attempt: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let outcome = tokio::select! {
            outcome = session(&link, &shared, &mut attempt) => outcome,
            _ = shutdown.changed() => return,
        };
        shared.team_connected.store(false, Ordering::Relaxed);
        if let Err(e) = outcome {
            shared.team_failures.fetch_add(1, Ordering::Relaxed);
            let delay = reconnect_delay_ms(
                attempt,
                link.reconnect_base_ms,
                link.reconnect_max_ms,
                rand::random::<f64>(),
            );
            attempt = attempt.saturating_add(1);
            warn!("bridge: team broker link: {e}; dialling again in {delay} ms");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(delay)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One connection: returns only with an error (the link is meant to stay).
async fn session(link: &TeamLink, shared: &Shared, attempt: &mut u32) -> Result<(), LinkError> {
    let (mut framed, session_present) = tokio::time::timeout(CONNECT_TIMEOUT, connect(link))
        .await
        .map_err(|_| LinkError::Timeout("connecting to the team broker"))??;
    shared.team_connected.store(true, Ordering::Relaxed);
    shared.team_sessions.fetch_add(1, Ordering::Relaxed);
    info!(
        "bridge: connected to the team broker {}:{} (session {})",
        link.endpoint.host,
        link.endpoint.port,
        if session_present { "resumed" } else { "new" }
    );

    // The message in flight before this connection, sent again as its
    // phase says.
    let mut in_flight = shared.outbox(|o| Ok(o.in_flight().cloned())).await?;
    if in_flight.is_some() && !session_present {
        warn!("bridge: the team broker has no session for this bridge; the message in flight is sent again as new and may arrive twice");
        in_flight = shared.outbox(|o| o.restart_in_flight()).await?;
    }
    if let Some(f) = &in_flight {
        resend(&mut framed, link, f).await?;
    }

    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + link.keep_alive,
        link.keep_alive,
    );
    // A tick missed while the loop waited on the disk must not fire twice
    // in a row: the second would find the first ping unanswered.
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    loop {
        if in_flight.is_none() {
            in_flight = shared.outbox(|o| o.take_next()).await?;
            if let Some(f) = &in_flight {
                send(&mut framed, publish(link, f, false)).await?;
            }
        }
        tokio::select! {
            packet = framed.next() => {
                let packet = match packet {
                    Some(p) => p?,
                    None => return Err(LinkError::Protocol("the team broker closed the connection".into())),
                };
                match packet {
                    Packet::PubRec(PubRec { pkid }) => match &mut in_flight {
                        Some(f) if f.pkid == pkid => {
                            if f.phase == Phase::Published {
                                shared.outbox(move |o| o.mark_released(pkid)).await?;
                                f.phase = Phase::Released;
                            }
                            send(&mut framed, Packet::PubRel(PubRel::new(pkid))).await?;
                        }
                        _ => warn!("bridge: PUBREC for packet {pkid}, which is not in flight; ignored"),
                    },
                    Packet::PubComp(PubComp { pkid }) => match &in_flight {
                        Some(f) if f.pkid == pkid && f.phase == Phase::Released => {
                            in_flight = shared.outbox(move |o| o.complete(pkid, true)).await?;
                            // A delivery held: the next failure starts from the shortest delay.
                            *attempt = 0;
                            if let Some(next) = &in_flight {
                                send(&mut framed, publish(link, next, false)).await?;
                            }
                        }
                        _ => warn!("bridge: PUBCOMP for packet {pkid}, which is not released; ignored"),
                    },
                    Packet::PingResp => awaiting_pong = false,
                    // Nothing is subscribed on this link, but a session kept
                    // from another configuration may still deliver: answer
                    // as the protocol wants, and drop the message.
                    Packet::Publish(p) => match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => send(&mut framed, Packet::PubAck(PubAck::new(p.pkid))).await?,
                        QoS::ExactlyOnce => send(&mut framed, Packet::PubRec(PubRec::new(p.pkid))).await?,
                    },
                    Packet::PubRel(PubRel { pkid }) => {
                        send(&mut framed, Packet::PubComp(PubComp::new(pkid))).await?;
                    }
                    Packet::PubAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) => {}
                    other => {
                        return Err(LinkError::Protocol(format!("unexpected packet from the team broker: {other:?}")));
                    }
                }
            }
            _ = ping.tick() => {
                if awaiting_pong {
                    return Err(LinkError::Timeout("the team broker did not answer a ping"));
                }
                send(&mut framed, Packet::PingReq).await?;
                awaiting_pong = true;
            }
            () = shared.appended.notified(), if in_flight.is_none() => {}
        }
    }
}

async fn connect(link: &TeamLink) -> Result<(Link, bool), LinkError> {
    let tcp =
        tokio::net::TcpStream::connect((link.endpoint.host.as_str(), link.endpoint.port)).await?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = match (&link.tls, &link.endpoint.tls) {
        (Some(config), Some(name)) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            Box::new(connector.connect(name.clone(), tcp).await?)
        }
        _ => Box::new(tcp),
    };
    let mut framed = Framed::new(
        io,
        Codec {
            max_incoming_size: MAX_PACKET,
            max_outgoing_size: MAX_PACKET,
        },
    );
    let mut connect = rumqttc::Connect::new(link.client_id.clone());
    connect.clean_session = false;
    connect.keep_alive = link.keep_alive.as_secs().min(u64::from(u16::MAX)) as u16;
    if let Some(username) = &link.username {
        let password = link
            .password
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        connect.login = Some(Login::new(username.clone(), password));
    }
    send(&mut framed, Packet::Connect(connect)).await?;
    match framed.next().await {
        Some(Ok(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
            Ok((framed, ack.session_present))
        }
        Some(Ok(Packet::ConnAck(ack))) => Err(LinkError::Refused(ack.code)),
        Some(Ok(other)) => Err(LinkError::Protocol(format!(
            "expected CONNACK, got {other:?}"
        ))),
        Some(Err(e)) => Err(e.into()),
        None => Err(LinkError::Protocol(
            "the team broker closed the connection before CONNACK".into(),
        )),
    }
}

/// The PUBLISH for a message in flight (QoS 2 whatever it came with).
fn publish(link: &TeamLink, f: &InFlight, dup: bool) -> Packet {
    let mut publish = Publish::new(
        format!("{}{}", link.topic_prefix, f.message.topic),
        QoS::ExactlyOnce,
        f.message.payload.clone(),
    );
    publish.pkid = f.pkid;
    publish.retain = f.message.retain;
    publish.dup = dup;
    Packet::Publish(publish)
}

/// Sends the message in flight again after a reconnect, as its phase says.
async fn resend(framed: &mut Link, link: &TeamLink, f: &InFlight) -> Result<(), LinkError> {
    match f.phase {
        Phase::Published => send(framed, publish(link, f, true)).await,
        Phase::Released => send(framed, Packet::PubRel(PubRel::new(f.pkid))).await,
    }
}

async fn send(framed: &mut Link, packet: Packet) -> Result<(), LinkError> {
    // A write that cannot finish within the connect timeout is a dead link.
    tokio::time::timeout(CONNECT_TIMEOUT, framed.send(packet))
        .await
        .map_err(|_| LinkError::Timeout("writing to the team broker"))??;
    Ok(())
}

//! The hop from the site's local broker: rumqttc subscribed to the
//! forwarded filters, every message stored in the outbox (durably) before
//! it is acknowledged, so a message the local broker handed over is never
//! lost when the agent dies.
//!
//! # QoS on this hop
//!
//! The bridge subscribes with QoS 1 and acknowledges by hand
//! (`manual_acks`): a PUBACK goes out only after the outbox synced the
//! message. QoS 2 deliveries from the local broker are downgraded to QoS 1
//! on purpose: rumqttc 0.25 forgets the QoS 2 packet ids it received when
//! a connection drops, and then treats the broker's PUBREL on the resumed
//! session as unsolicited and drops the connection again, every time. The
//! flows' own QoS 2 exchange with the local broker is unaffected.
//!
//! # Redeliveries
//!
//! If the agent stores a message but dies (or the link drops) before the
//! PUBACK reaches the local broker, the broker delivers it again on the
//! resumed session, with DUP set and the same packet id. The outbox
//! remembers the packet id and a digest of the content of its last 1024
//! stored messages; a DUP delivery matching one of them is acknowledged
//! and not stored again (`redeliveries_ignored`). A broker that
//! redelivers without DUP, or with another packet id, would cause a
//! duplicate: Mosquitto does neither (see the tests).
//!
//! The session is persistent (clean session off) so the local broker keeps
//! queueing for the bridge while the agent restarts. The broker must keep
//! queued messages for it (Mosquitto: `max_queued_messages`,
//! `queue_qos0_messages` for QoS 0).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redwall_policy::agent_protocol::reconnect_delay_ms;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter,
};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};
use zeroize::Zeroizing;

use super::Shared;
use crate::outbox::{Message, Qos};

/// Messages handed from the connection to the writer, at most.
const PENDING: usize = 1024;
/// Messages stored with one sync, at most.
const BATCH: usize = 256;
/// Largest packet accepted from the local broker.
const MAX_PACKET: usize = 16 * 1024 * 1024;

pub(crate) struct LocalLink {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Zeroizing<String>>,
    pub forward: Vec<String>,
    pub keep_alive: Duration,
    pub reconnect_base_ms: u64,
    pub reconnect_max_ms: u64,
}

/// Runs the connection and the writer until `shutdown` turns true.
pub(crate) async fn run(link: LocalLink, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let mut options = MqttOptions::new(link.client_id.clone(), link.host.clone(), link.port);
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_keep_alive(link.keep_alive);
    options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some(username) = &link.username {
        let password = link
            .password
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        options.set_credentials(username.clone(), password);
    }
    let (client, eventloop) = AsyncClient::new(options, 64);
    let (tx, rx) = mpsc::channel(PENDING);
    // Aborted with this task too (a bridge stopped as by a crash must not
    // leave a writer holding the outbox).
    let mut writer = AbortOnDrop(tokio::spawn(store_and_ack(
        rx,
        client.clone(),
        shared.clone(),
    )));
    if let Some(mut eventloop) = receive(eventloop, &client, &link, &shared, tx, shutdown).await {
        // Told to stop: the writer finishes what it holds (its sender is
        // gone) while the connection still carries its acknowledgements.
        loop {
            tokio::select! {
                _ = &mut writer.0 => break,
                event = eventloop.poll() => if event.is_err() { break },
            }
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    // Whatever is still stored but not acknowledged, the local broker
    // delivers again, and the outbox recognises it.
    writer.0.abort();
    shared.local_connected.store(false, Ordering::Relaxed);
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Receives until told to stop (then returns the connection, so what was
/// stored can still be acknowledged) or until the writer is gone.
async fn receive(
    mut eventloop: EventLoop,
    client: &AsyncClient,
    link: &LocalLink,
    shared: &Shared,
    tx: mpsc::Sender<Publish>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<EventLoop> {
    let mut attempt: u32 = 0;
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = shutdown.changed() => return Some(eventloop),
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                attempt = 0;
                shared.local_connected.store(true, Ordering::Relaxed);
                info!(
                    "bridge: connected to the local broker (session {})",
                    if ack.session_present {
                        "resumed"
                    } else {
                        "new"
                    }
                );
                // A resumed session keeps its subscriptions; subscribing
                // again would replay every retained message.
                if !ack.session_present {
                    let filters = link
                        .forward
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        warn!("bridge: cannot subscribe on the local broker: {e}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                use rumqttc::SubscribeReasonCode;
                for (code, filter) in ack.return_codes.iter().zip(&link.forward) {
                    if matches!(code, SubscribeReasonCode::Failure) {
                        error!("bridge: the local broker refused the subscription to {filter:?}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if tx.send(publish).await.is_err() {
                    return None;
                }
            }
            Ok(_) => {}
            Err(e) => {
                shared.local_connected.store(false, Ordering::Relaxed);
                let delay = reconnect_delay_ms(
                    attempt,
                    link.reconnect_base_ms,
                    link.reconnect_max_ms,
                    rand::random::<f64>(),
                );
                attempt = attempt.saturating_add(1);
                warn!("bridge: local broker link: {e}; dialling again in {delay} ms");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(delay)) => {}
                    _ = shutdown.changed() => return None,
                }
            }
        }
    }
}

/// Stores what arrives in batches (one sync each), then acknowledges it.
async fn store_and_ack(mut rx: mpsc::Receiver<Publish>, client: AsyncClient, shared: Arc<Shared>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let messages: Vec<(Message, u16, bool)> = batch
            .iter()
            .map(|p| (to_message(p), p.pkid, p.dup))
            .collect();
        // A disk that refuses the batch (full, read-only): keep trying and
        // acknowledge nothing meanwhile, so the local broker keeps it.
        loop {
            let attempt = messages.clone();
            let stored = shared
                .outbox(move |outbox| {
                    let mut fresh = Vec::with_capacity(attempt.len());
                    let mut ignored = 0u64;
                    for (message, pkid, dup) in attempt {
                        let redelivery = dup
                            && message.qos != Qos::AtMostOnce
                            && (outbox.recently_stored(pkid, &message)
                                || fresh.iter().any(|(m, p)| *p == pkid && *m == message));
                        if redelivery {
                            ignored += 1;
                        } else {
                            fresh.push((message, pkid));
                        }
                    }
                    outbox.append_batch(fresh)?;
                    Ok(ignored)
                })
                .await;
            match stored {
                Ok(ignored) => {
                    shared
                        .redeliveries_ignored
                        .fetch_add(ignored, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    error!("bridge: cannot store messages in the outbox: {e}; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        shared.appended.notify_one();
        for publish in &batch {
            if publish.qos != QoS::AtMostOnce {
                if let Err(e) = client.ack(publish).await {
                    warn!("bridge: cannot acknowledge to the local broker: {e}");
                }
            }
        }
    }
}

fn to_message(publish: &Publish) -> Message {
    Message {
        topic: publish.topic.clone(),
        payload: publish.payload.to_vec(),
        qos: match publish.qos {
            QoS::AtMostOnce => Qos::AtMostOnce,
            QoS::AtLeastOnce => Qos::AtLeastOnce,
            QoS::ExactlyOnce => Qos::ExactlyOnce,
        },
        retain: publish.retain,
    }
}

//! An MQTT client for the broker's tests (rumqttc): connects over TCP, TLS,
//! WebSocket or secure WebSocket, with MQTT 3.1.1 or 5, and reports what
//! arrives, including the moment the broker closes the connection. It never
//! reconnects on its own: a test sees every disconnect.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode, Transport};
use serde_json::json;
use tokio::sync::mpsc;

use crate::common::Client;

pub mod raw;

/// A broker client of `team` with `rules`, made through the API by
/// `owner`: (username, password).
pub async fn broker_client(
    owner: &Client,
    team: &str,
    name: &str,
    rules: serde_json::Value,
) -> (String, String) {
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/broker/clients"),
            json!({"name": name, "rules": rules}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    (
        r.body["username"].as_str().unwrap().to_string(),
        r.body["password"].as_str().unwrap().to_string(),
    )
}

pub fn allow(actions: &str, filter: &str) -> serde_json::Value {
    json!({"effect": "allow", "actions": actions, "filter": filter})
}

pub fn granted(code: SubscribeReasonCode) -> bool {
    matches!(code, SubscribeReasonCode::Success(_))
}

/// How to reach the broker.
#[derive(Clone)]
pub enum Via {
    Tcp(SocketAddr),
    /// MQTT over TLS to `localhost:port`, trusting `ca` (PEM).
    Tls {
        port: u16,
        ca: Vec<u8>,
    },
    /// `ws://127.0.0.1:port/mqtt`.
    Ws {
        port: u16,
    },
    /// `wss://localhost:port/mqtt`, trusting `ca`.
    Wss {
        port: u16,
        ca: Vec<u8>,
    },
}

impl Via {
    fn host_port(&self) -> (String, u16) {
        match self {
            Via::Tcp(a) => (a.ip().to_string(), a.port()),
            Via::Tls { port, .. } => ("localhost".into(), *port),
            Via::Ws { port } => (format!("ws://127.0.0.1:{port}/mqtt"), *port),
            Via::Wss { port, .. } => (format!("wss://localhost:{port}/mqtt"), *port),
        }
    }

    fn transport(&self) -> Transport {
        let tls = |ca: &Vec<u8>| rumqttc::TlsConfiguration::Simple {
            ca: ca.clone(),
            alpn: None,
            client_auth: None,
        };
        match self {
            Via::Tcp(_) => Transport::tcp(),
            Via::Tls { ca, .. } => Transport::Tls(tls(ca)),
            Via::Ws { .. } => Transport::Ws,
            Via::Wss { ca, .. } => Transport::Wss(tls(ca)),
        }
    }
}

#[derive(Debug)]
pub enum Incoming {
    Publish { topic: String, payload: Vec<u8> },
    SubAck(Vec<SubscribeReasonCode>),
    Other(String),
    Closed(String),
}

pub struct Conn {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Incoming>,
}

/// Connects with MQTT 3.1.1; `Err` carries the refusal (or the failure).
pub async fn connect(via: &Via, client_id: &str, user: &str, pass: &str) -> Result<Conn, String> {
    let (host, port) = via.host_port();
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_credentials(user, pass);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_transport(via.transport());
    options.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    let (client, mut events) = AsyncClient::new(options, 64);
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no CONNACK within 10 s".to_string())?;
    connected?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(packet)) => {
                    let incoming = match packet {
                        Packet::Publish(p) => Incoming::Publish {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                        },
                        Packet::SubAck(s) => Incoming::SubAck(s.return_codes),
                        other => Incoming::Other(format!("{other:?}")),
                    };
                    if tx.send(incoming).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    let _ = tx.send(Incoming::Closed(e.to_string()));
                    return;
                }
            }
        }
    });
    Ok(Conn { client, rx })
}

impl Conn {
    pub async fn next(&mut self, within: Duration) -> Option<Incoming> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Subscribes and returns the broker's answer for the filter.
    pub async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            match self.next(Duration::from_secs(10)).await {
                Some(Incoming::SubAck(codes)) => return codes[0],
                Some(Incoming::Closed(why)) => panic!("closed while subscribing: {why}"),
                Some(_) => {}
                None => panic!("no SUBACK for {filter}"),
            }
        }
    }

    pub async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
    }

    /// The next message, skipping acknowledgements; `None` when none comes
    /// within `within` or the connection closed.
    pub async fn message(&mut self, within: Duration) -> Option<(String, String)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Incoming::Publish { topic, payload } => {
                    return Some((topic, String::from_utf8_lossy(&payload).into_owned()))
                }
                Incoming::Closed(_) => return None,
                _ => {}
            }
        }
    }

    /// Waits until the broker closes the connection; how long that took,
    /// or `None` if it stayed open for `within`.
    pub async fn closed(&mut self, within: Duration) -> Option<Duration> {
        let start = tokio::time::Instant::now();
        let deadline = start + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Incoming::Closed(_)) => return Some(start.elapsed()),
                Some(_) => {}
                None if tokio::time::Instant::now() >= deadline => return None,
                None => return Some(start.elapsed()), // the reader ended
            }
        }
    }
}

/// MQTT 5: connects, subscribes to `topic`, publishes to it and receives
/// the message back.
pub async fn v5_round_trip(
    via: &Via,
    client_id: &str,
    user: &str,
    pass: &str,
    topic: &str,
) -> Result<(), String> {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as C5, Event as E5, MqttOptions as O5};
    let (host, port) = via.host_port();
    let mut options = O5::new(client_id, host, port);
    options.set_credentials(user, pass);
    options.set_transport(via.transport());
    let (client, mut events) = C5::new(options, 16);
    tokio::time::timeout(Duration::from_secs(10), async move {
        let mut subscribed = false;
        loop {
            match events.poll().await.map_err(|e| e.to_string())? {
                E5::Incoming(P5::ConnAck(_)) if !subscribed => {
                    subscribed = true;
                    client
                        .subscribe(topic, Q5::AtLeastOnce)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                E5::Incoming(P5::SubAck(ack)) => {
                    let granted = ack.return_codes.iter().all(|c| {
                        matches!(
                            c,
                            rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                        )
                    });
                    if !granted {
                        return Err(format!("subscription refused: {:?}", ack.return_codes));
                    }
                    client
                        .publish(topic, Q5::AtLeastOnce, false, b"v5".to_vec())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                E5::Incoming(P5::Publish(p)) => {
                    let got = String::from_utf8_lossy(&p.topic).into_owned();
                    return if got == topic && p.payload.as_ref() == b"v5" {
                        Ok(())
                    } else {
                        Err(format!("unexpected message on {got}"))
                    };
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| "MQTT 5 round trip took over 10 s".to_string())?
}

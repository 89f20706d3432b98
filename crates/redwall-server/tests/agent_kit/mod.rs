//! A protocol-speaking agent for the server's tests (the real agent binary
//! is tested in the `redwall` crate): provisioning tokens and enrolment
//! through the API, and the agents' WebSocket with a key made in the test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{Client, Resp, TestServer};
use futures::{SinkExt, StreamExt};
use redwall_crypto::agent_box::AgentBoxKey;
use redwall_crypto::signing::AgentKey;
use redwall_policy::agent_protocol::{hello_message, HELLO_CONTEXT};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `POST .../agent-tokens` with `body`, as `owner`.
pub async fn new_token(owner: &Client, team: &str, body: Value) -> Resp {
    owner
        .post(&format!("/api/v1/teams/{team}/agent-tokens"), body)
        .await
}

/// A provisioning token made through the API; the token.
pub async fn token(owner: &Client, team: &str) -> String {
    let r = new_token(
        owner,
        team,
        json!({ "hub_url": "https://hub.example:8443" }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["token"].as_str().unwrap().to_string()
}

/// The agent's encryption key, made from its signing key so a test can
/// make it again (the real agent draws both at random).
pub fn box_key(key: &AgentKey) -> AgentBoxKey {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"test agent box key");
    h.update(key.seed().as_slice());
    AgentBoxKey::from_bytes(&h.finalize()).unwrap()
}

/// The enrolment an agent sends.
pub fn enrolment(token: &str, name: &str, key: &AgentKey, version: &str) -> Value {
    json!({
        "provisioning_token": token,
        "name": name,
        "public_key": key.public_key().to_base64(),
        "encryption_key": box_key(key).public_base64(),
        "platform": "linux-x86_64",
        "version": version,
    })
}

/// Enrols as an agent of version 0.1.0.
pub async fn enrol(s: &TestServer, token: &str, name: &str, key: &AgentKey) -> Resp {
    enrol_as(s, token, name, key, "0.1.0").await
}

pub async fn enrol_as(
    s: &TestServer,
    token: &str,
    name: &str,
    key: &AgentKey,
    version: &str,
) -> Resp {
    s.anonymous()
        .post("/api/v1/agent/enrol", enrolment(token, name, key, version))
        .await
}

/// The team's agent, through the API.
pub async fn agent(owner: &Client, team: &str, name: &str) -> Value {
    let r = owner
        .get(&format!("/api/v1/teams/{team}/agents/{name}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The next text frame, as JSON; `None` when the connection ends. The
/// hub's `host` message (which instance the agent's Node-RED is, sent on
/// every connection) and the tunnel's binary frames are skipped:
/// `agent_instances.rs` reads them.
pub async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .ok()??
        {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "host" {
                    return Some(v);
                }
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_)) => {}
            _ => return None,
        }
    }
}

/// The close code the hub ends the connection with.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .ok()??
        {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The answer to a challenge, signed with `key`.
pub fn hello(agent_id: &str, nonce: &str, key: &AgentKey) -> Value {
    use base64::Engine as _;
    let sig = key.sign(HELLO_CONTEXT, &hello_message(agent_id, nonce));
    json!({
        "type": "hello",
        "agent_id": agent_id,
        "signature": base64::engine::general_purpose::STANDARD.encode(sig),
        "protocol": 1,
        "version": "0.1.0",
    })
}

/// Connects as the agent running the build with this SHA-256.
pub async fn connect_with_build(
    s: &TestServer,
    agent_id: &str,
    key: &AgentKey,
    sha256: &str,
) -> Ws {
    let (mut ws, nonce) = open(s).await;
    let mut h = hello(agent_id, &nonce, key);
    h["build_sha256"] = json!(sha256);
    send(&mut ws, h).await;
    let welcome = next_json(&mut ws).await.expect("a welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    ws
}

/// Opens the agents' WebSocket and reads the challenge: (socket, nonce).
pub async fn open(s: &TestServer) -> (Ws, String) {
    let url = s.url("/api/v1/agent/connect").replace("http://", "ws://");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let first = next_json(&mut ws).await.expect("a challenge");
    assert_eq!(first["type"], "challenge", "{first}");
    let nonce = first["nonce"].as_str().unwrap().to_string();
    (ws, nonce)
}

/// Connects as the agent: challenge, signed hello, welcome.
pub async fn connect(s: &TestServer, agent_id: &str, key: &AgentKey) -> Ws {
    let (mut ws, nonce) = open(s).await;
    send(&mut ws, hello(agent_id, &nonce, key)).await;
    let welcome = next_json(&mut ws).await.expect("a welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["agent_id"], agent_id);
    ws
}

//! A fake hub: axum over tokio-rustls with a self-signed certificate on
//! 127.0.0.1, serving the two agent endpoints. Enrolments are answered
//! here and reported to the test; WebSockets are handed to the test, which
//! plays the hub's side of the protocol itself.

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use redwall_agent::state::{self, AgentConfig};
use redwall_agent::Agent;
use redwall_crypto::agent_box::{check_public_key, seal_for, AgentBoxKey};
use redwall_crypto::signing::{AgentKey, HubSigningKey, PublicKey};
use redwall_policy::agent_protocol::{
    hello_message, AgentMessage, EnrolAnswer, EnrolRequest, ProvisioningBundle, CONNECT_PATH,
    ENROL_PATH, HELLO_CONTEXT, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use redwall_policy::agent_protocol::{BuildStatement, SignedBuild, SignedSnapshot, BUILD_CONTEXT};
use redwall_policy::snapshot_format::{
    content_sha256, flows_sha256, Content, Statement, STATEMENT_CONTEXT,
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::certs::self_signed;
use crate::within;

/// The token the fake hub accepts.
pub const TOKEN: &str = "rwe_fake-hub-token-7f3a9c";
pub const AGENT_ID: &str = "agt_0123456789";
pub const TEAM_ID: &str = "team_42";

pub struct FakeHub {
    pub url: String,
    pub cert_sha256: String,
    pub signing_key: String,
    /// The key the hub signs snapshots with (its public half is
    /// `signing_key`, announced at enrolment).
    pub signer: HubSigningKey,
    sockets: mpsc::UnboundedReceiver<WebSocket>,
    enrolments: mpsc::UnboundedReceiver<EnrolRequest>,
    refused_handshakes: mpsc::UnboundedReceiver<()>,
}

#[derive(Clone)]
struct Shared {
    sockets: mpsc::UnboundedSender<WebSocket>,
    enrolments: mpsc::UnboundedSender<EnrolRequest>,
    signing_key: String,
}

/// Accepts TCP, then TLS; connections that fail the handshake (an agent
/// with the wrong pin) are dropped here.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    refused_handshakes: mpsc::UnboundedSender<()>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    let _ = self.refused_handshakes.send(());
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

impl FakeHub {
    pub async fn start() -> Self {
        redwall_agent::tls::install_crypto_provider();
        let cert = self_signed();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let (sockets_tx, sockets) = mpsc::unbounded_channel();
        let (enrolments_tx, enrolments) = mpsc::unbounded_channel();
        let (refused_tx, refused_handshakes) = mpsc::unbounded_channel();
        let signer = HubSigningKey::generate();
        let signing_key = signer.public_key().to_base64();
        let shared = Shared {
            sockets: sockets_tx,
            enrolments: enrolments_tx,
            signing_key: signing_key.clone(),
        };
        let app = Router::new()
            .route(ENROL_PATH, post(enrol))
            .route(CONNECT_PATH, get(connect))
            .with_state(shared);
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(cert.server_config()),
            refused_handshakes: refused_tx,
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("https://127.0.0.1:{port}"),
            cert_sha256: cert.sha256,
            signing_key,
            signer,
            sockets,
            enrolments,
            refused_handshakes,
        }
    }

    /// A bundle for this hub, pinned to its certificate.
    pub fn bundle(&self, token: &str) -> ProvisioningBundle {
        ProvisioningBundle {
            hub_url: self.url.clone(),
            cert_sha256: Some(self.cert_sha256.clone()),
            ca_pem: None,
            provisioning_token: token.to_owned(),
        }
    }

    /// An agent enrolled with this hub (files written as `enrol` would),
    /// and its state directory.
    pub fn enrolled_agent(&self) -> (Agent, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let key = AgentKey::generate();
        state::write_new_key(dir.path(), &key).unwrap().keep();
        state::write_new_box_key(dir.path(), &AgentBoxKey::generate())
            .unwrap()
            .keep();
        state::write_config(
            dir.path(),
            &AgentConfig {
                hub_url: self.url.clone(),
                cert_sha256: Some(self.cert_sha256.clone()),
                ca_pem: None,
                agent_id: AGENT_ID.into(),
                team_id: TEAM_ID.into(),
                name: "plant-7".into(),
                hub_signing_key: self.signing_key.clone(),
                node_red: None,
            },
        )
        .unwrap();
        (Agent::load(dir.path()).unwrap(), dir)
    }

    /// The next agent WebSocket.
    pub async fn next_socket(&mut self) -> AgentSocket {
        AgentSocket(
            within("an agent to connect", self.sockets.recv())
                .await
                .unwrap(),
        )
    }

    /// Whether another agent WebSocket is waiting.
    pub fn has_socket(&mut self) -> bool {
        self.sockets.try_recv().is_ok()
    }

    /// The agent WebSocket waiting, if any.
    pub fn try_socket(&mut self) -> Option<AgentSocket> {
        self.sockets.try_recv().ok().map(AgentSocket)
    }

    pub async fn next_enrolment(&mut self) -> EnrolRequest {
        within("an enrolment", self.enrolments.recv())
            .await
            .unwrap()
    }

    /// Waits for a TLS handshake that failed (a client that refused the
    /// hub's certificate).
    pub async fn next_refused_handshake(&mut self) {
        within("a refused TLS handshake", self.refused_handshakes.recv())
            .await
            .unwrap();
    }

    pub fn has_enrolment(&mut self) -> bool {
        self.enrolments.try_recv().is_ok()
    }

    /// What the hub sends to run `content` with `credentials` on the agent
    /// whose public box key is `agent_box`: the statement signed with this
    /// hub's key, the credentials sealed for that agent.
    pub fn snapshot(
        &self,
        id: &str,
        content: &Content,
        credentials: &Value,
        agent_box: &str,
    ) -> SignedSnapshot {
        sign_snapshot(&self.signer, id, TEAM_ID, content, credentials, agent_box)
    }
}

/// An agent build for `platform` as a hub holding `signer` offers it:
/// the statement (version 0.2.0) signed, the binary attached.
pub fn sign_build(signer: &HubSigningKey, binary: &[u8], platform: &str) -> SignedBuild {
    let statement = serde_json::to_string(&BuildStatement {
        v: 1,
        id: "bld_test".into(),
        version: "0.2.0".into(),
        platform: platform.into(),
        sha256: hex::encode(Sha256::digest(binary)),
        size: binary.len() as u64,
        created_at: 1_700_000_000,
    })
    .unwrap();
    let signature = signer.sign(BUILD_CONTEXT, statement.as_bytes());
    SignedBuild {
        statement,
        signature: STANDARD.encode(signature),
        binary: STANDARD.encode(binary),
    }
}

/// A snapshot as a hub holding `signer` sends it, for `team_id`.
pub fn sign_snapshot(
    signer: &HubSigningKey,
    id: &str,
    team_id: &str,
    content: &Content,
    credentials: &Value,
    agent_box: &str,
) -> SignedSnapshot {
    let creds = credentials.as_object().unwrap();
    let statement = Statement {
        v: 1,
        id: id.into(),
        team_id: team_id.into(),
        instance_id: None,
        kind: "manual".into(),
        note: String::new(),
        created_by: None,
        created_at: 1_700_000_000_000_000,
        content_sha256: content_sha256(content, creds).unwrap(),
        flows_sha256: flows_sha256(&content.flows),
    }
    .to_canonical()
    .unwrap();
    let signature = signer.sign(STATEMENT_CONTEXT, statement.as_bytes());
    SignedSnapshot {
        statement,
        signature: STANDARD.encode(signature),
        content: content.to_canonical().unwrap(),
        credentials: STANDARD
            .encode(seal_for(agent_box, credentials.to_string().as_bytes()).unwrap()),
    }
}

async fn enrol(State(shared): State<Shared>, Json(request): Json<EnrolRequest>) -> Response {
    let token_ok = request.provisioning_token == TOKEN;
    let key_ok = PublicKey::from_base64(&request.public_key).is_ok()
        && check_public_key(&request.encryption_key).is_ok();
    let name = request.name.clone();
    let _ = shared.enrolments.send(request);
    if !token_ok {
        let body = json!({"error": {"code": "invalid_token", "message": "the provisioning token is unknown, spent or expired"}});
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    if !key_ok {
        let body = json!({"error": {"code": "invalid_key", "message": "bad public key"}});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    let answer = EnrolAnswer {
        agent_id: AGENT_ID.into(),
        team_id: TEAM_ID.into(),
        name,
        hub_signing_key: shared.signing_key,
    };
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn connect(ws: WebSocketUpgrade, State(shared): State<Shared>) -> Response {
    ws.max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            let _ = shared.sockets.send(socket);
        })
}

/// The hub's end of one agent connection.
pub struct AgentSocket(pub WebSocket);

impl AgentSocket {
    /// Sends `snapshot` to run, as deploy `id`.
    pub async fn deploy(&mut self, id: &str, snapshot: &SignedSnapshot) {
        self.send_json(json!({"type": "deploy", "id": id, "snapshot": snapshot}))
            .await;
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.0.send(Message::Text(text.into())).await.unwrap();
    }

    /// Closes with `code` and waits for the agent's side of the closing
    /// handshake.
    pub async fn close(&mut self, code: u16, reason: &str) {
        self.0
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await
            .unwrap();
        self.drain().await;
    }

    /// Reads until the agent has closed (or hung up). After the agent's
    /// close, reads on until the end, which sends the hub's reply to it:
    /// an agent waits for that reply before it goes on.
    pub async fn drain(&mut self) {
        within("the agent to close", async {
            while let Some(Ok(_)) = self.0.recv().await {}
        })
        .await;
    }

    /// The next frame that is not a ping or pong (those are answered by
    /// the WebSocket library while reading) nor the tunnel's bytes (this
    /// hub opens no stream; the agent's end of the session speaks first).
    pub async fn next_frame(&mut self) -> Message {
        loop {
            let frame = within("a frame from the agent", self.0.recv())
                .await
                .expect("the agent hung up")
                .expect("the connection failed");
            if !matches!(
                frame,
                Message::Ping(_) | Message::Pong(_) | Message::Binary(_)
            ) {
                return frame;
            }
        }
    }

    /// The next message from the agent, as JSON. The site's journal
    /// batches are answered as the hub does (stored), and skipped.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let v: Value = match self.next_frame().await {
                Message::Text(text) => {
                    // Every frame must also be a message of the protocol.
                    serde_json::from_str::<AgentMessage>(&text)
                        .unwrap_or_else(|e| panic!("not an agent message ({e}): {text}"));
                    serde_json::from_str(&text).unwrap()
                }
                other => panic!("expected a text frame, got {other:?}"),
            };
            if v["type"] != "site_events" {
                return v;
            }
            let through = v["events"].as_array().unwrap().last().unwrap()["seq"].clone();
            self.send_json(json!({"type": "site_events_stored", "stream": v["stream"],
                                  "epoch": v["epoch"], "through": through}))
                .await;
        }
    }

    /// The next message that is not a heartbeat.
    pub async fn next_non_heartbeat(&mut self) -> Value {
        loop {
            let v = self.next_json().await;
            if v["type"] != "heartbeat" {
                return v;
            }
        }
    }

    /// Challenge, check the signed hello, welcome. Returns the hello.
    pub async fn greet(&mut self, agent_id: &str, key: &PublicKey, heartbeat_secs: u64) -> Value {
        let hello = self.challenge(agent_id, key).await;
        self.welcome(agent_id, heartbeat_secs).await;
        hello
    }

    /// The welcome that follows a good hello.
    pub async fn welcome(&mut self, agent_id: &str, heartbeat_secs: u64) {
        self.send_json(
            json!({"type": "welcome", "agent_id": agent_id, "heartbeat_secs": heartbeat_secs}),
        )
        .await;
    }

    /// Challenge, and check the signed hello (no welcome yet). Returns
    /// the hello.
    pub async fn challenge(&mut self, agent_id: &str, key: &PublicKey) -> Value {
        let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        self.send_json(json!({"type": "challenge", "nonce": nonce}))
            .await;
        let hello = self.next_json().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["agent_id"], agent_id);
        assert_eq!(hello["protocol"], PROTOCOL_VERSION);
        assert_eq!(hello["version"], env!("CARGO_PKG_VERSION"));
        let signature = STANDARD
            .decode(hello["signature"].as_str().unwrap())
            .unwrap();
        key.verify(HELLO_CONTEXT, &hello_message(agent_id, &nonce), &signature)
            .expect("the hello signature verifies with the agent's key");
        // The signature binds this nonce: another would not verify.
        assert!(key
            .verify(
                HELLO_CONTEXT,
                &hello_message(agent_id, "other-nonce"),
                &signature
            )
            .is_err());
        hello
    }

    /// Offers `build` to the agent as update `id`.
    pub async fn update(&mut self, id: &str, build: &SignedBuild, confirm_within_secs: u64) {
        self.send_json(json!({
            "type": "update",
            "id": id,
            "build": build,
            "confirm_within_secs": confirm_within_secs,
        }))
        .await;
    }
}

//! `run` against the fake hub: the greeting, heartbeats, commands, and how
//! each way a connection ends is handled.

use axum::extract::ws::Message;
use redwall_agent::{run_with, Agent, RunError, RunOptions, RunOutcome, SnapshotRunner};
use std::sync::Arc;
use std::time::Duration;

use redwall_policy::agent_protocol::{close, HELLO_TIMEOUT_SECS};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::fake_hub::{FakeHub, AGENT_ID};
use crate::within;

/// The agent running in the background, and the switch that stops it (as
/// SIGTERM would).
pub(crate) struct RunningAgent {
    handle: JoinHandle<Result<RunOutcome, RunError>>,
    stop: Option<oneshot::Sender<()>>,
}

impl RunningAgent {
    pub(crate) fn start(agent: Agent) -> Self {
        Self::start_with(agent, quick(), None)
    }

    /// With these options, and `runner` in place of the agent's own.
    pub(crate) fn start_with(
        agent: Agent,
        options: RunOptions,
        runner: Option<Arc<dyn SnapshotRunner>>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let shutdown = async move {
                if stopped.await.is_err() {
                    // The test dropped the switch without using it.
                    std::future::pending::<()>().await;
                }
            };
            run_with(&agent, &options, runner, shutdown).await
        });
        Self {
            handle,
            stop: Some(stop),
        }
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }

    pub(crate) async fn outcome(self) -> RunOutcome {
        within("the agent to return", self.handle)
            .await
            .unwrap()
            .unwrap()
    }
}

/// Quick redials keep the tests short; the delays themselves are tested
/// with the contract.
pub(crate) fn quick() -> RunOptions {
    RunOptions {
        reconnect_base_ms: 50,
        reconnect_max_ms: 500,
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn the_agent_greets_beats_answers_commands_and_stops_when_revoked() {
    let mut hub = FakeHub::start().await;
    let (agent, _dir) = hub.enrolled_agent();
    let public = agent.key.public_key();
    let running = RunningAgent::start(agent);

    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;

    // A heartbeat at once, then one per interval, with what the site's
    // journals hold (nothing: this agent runs no Node-RED, and only the
    // binary keeps its own lines).
    let journal =
        json!({"audit_pending": 0, "log_pending": 0, "audit_dropped": 0, "log_dropped": 0});
    let expected = json!({"type": "heartbeat", "status": {"node_red": "none",
        "running_snapshot": null, "site": {"journal": journal}}});
    assert_eq!(ws.next_json().await, expected);
    assert_eq!(ws.next_json().await, expected);

    ws.send_json(json!({"type": "command", "id": "c1", "command": {"kind": "ping"}}))
        .await;
    assert_eq!(
        ws.next_non_heartbeat().await,
        json!({"type": "command_done", "id": "c1", "ok": true, "message": "pong"})
    );
    ws.send_json(json!({"type": "command", "id": "c2", "command": {"kind": "restart"}}))
        .await;
    assert_eq!(
        ws.next_non_heartbeat().await,
        json!({"type": "command_done", "id": "c2", "ok": false, "message": "this agent runs no Node-RED yet"})
    );

    // What the agent cannot read is ignored, not fatal; a command of a
    // kind it does not know still gets an answer.
    ws.send_text("not json at all").await;
    ws.send_json(json!({"type": "surprise", "id": "x"})).await;
    ws.0.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    ws.send_json(json!({"type": "command", "id": "c3", "command": {"kind": "self_destruct"}}))
        .await;
    let answer = ws.next_non_heartbeat().await;
    assert_eq!(answer["id"], "c3");
    assert_eq!(answer["ok"], false);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("self_destruct"),
        "{answer}"
    );
    ws.send_json(json!({"type": "command", "id": "c4", "command": {"kind": "ping"}}))
        .await;
    assert_eq!(ws.next_non_heartbeat().await["id"], "c4");

    ws.close(close::REVOKED, "revoked").await;
    drop(ws);
    assert_eq!(running.outcome().await, RunOutcome::Revoked);
    assert_eq!(RunOutcome::Revoked.exit_code(), 3);
    assert!(!hub.has_socket(), "a revoked agent does not dial again");
}

#[tokio::test]
async fn the_agent_dials_again_after_a_drop_and_stops_when_its_key_is_refused() {
    let mut hub = FakeHub::start().await;
    let (agent, _dir) = hub.enrolled_agent();
    let public = agent.key.public_key();
    let running = RunningAgent::start(agent);

    // First connection: welcomed, then the hub just goes away.
    let mut first = hub.next_socket().await;
    first.greet(AGENT_ID, &public, 1).await;
    first.next_json().await;
    drop(first);

    // The agent comes back and signs the new challenge.
    let mut second = hub.next_socket().await;
    second.greet(AGENT_ID, &public, 1).await;
    // Replaced by another connection: also not final.
    second.close(close::REPLACED, "replaced").await;
    drop(second);

    // A hub that does not take the key: final.
    let mut third = hub.next_socket().await;
    third
        .send_json(json!({"type": "challenge", "nonce": "n"}))
        .await;
    assert_eq!(third.next_json().await["type"], "hello");
    third.close(close::UNAUTHENTICATED, "bad signature").await;
    drop(third);
    assert_eq!(running.outcome().await, RunOutcome::Unauthenticated);
    assert_eq!(RunOutcome::Unauthenticated.exit_code(), 4);
}

#[tokio::test]
async fn a_refusal_for_answering_too_late_is_not_final() {
    let mut hub = FakeHub::start().await;
    let (agent, _dir) = hub.enrolled_agent();
    let public = agent.key.public_key();
    let mut running = RunningAgent::start(agent);

    // The real hub closes with UNAUTHENTICATED ("too slow") when the hello
    // is not in within HELLO_TIMEOUT_SECS: play a hello that arrived late.
    let mut first = hub.next_socket().await;
    first
        .send_json(json!({"type": "challenge", "nonce": "n"}))
        .await;
    assert_eq!(first.next_json().await["type"], "hello");
    tokio::time::sleep(Duration::from_secs(HELLO_TIMEOUT_SECS / 2 + 1)).await;
    first.close(close::UNAUTHENTICATED, "too slow").await;
    drop(first);

    let mut second = hub.next_socket().await;
    second.greet(AGENT_ID, &public, 1).await;
    running.stop();
    second.drain().await;
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);
}

#[tokio::test]
async fn a_silent_hub_is_given_up_on_and_dialled_again() {
    let mut hub = FakeHub::start().await;
    let (agent, _dir) = hub.enrolled_agent();
    let public = agent.key.public_key();
    let mut running = RunningAgent::start(agent);

    let mut first = hub.next_socket().await;
    first.greet(AGENT_ID, &public, 1).await;
    // From here the hub reads nothing (so answers no ping) but keeps the
    // connection open: only the agent's silence check can end it.
    let mut second = hub.next_socket().await;
    second.greet(AGENT_ID, &public, 1).await;
    second.next_json().await;
    drop(first);

    running.stop();
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);
}

#[tokio::test]
async fn stopping_closes_the_connection_normally() {
    let mut hub = FakeHub::start().await;
    let (agent, _dir) = hub.enrolled_agent();
    let public = agent.key.public_key();
    let mut running = RunningAgent::start(agent);

    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;
    ws.next_json().await;
    running.stop();
    loop {
        match ws.next_frame().await {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, 1000);
                // Reading on sends our side of the closing handshake.
                ws.drain().await;
                break;
            }
            Message::Text(_) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);
    assert_eq!(RunOutcome::Shutdown.exit_code(), 0);
}

#[tokio::test]
async fn a_hub_with_another_certificate_is_never_greeted() {
    let mut hub = FakeHub::start().await;
    let (mut agent, _dir) = hub.enrolled_agent();
    agent.config.cert_sha256 = Some("0f".repeat(32));
    let mut running = RunningAgent::start(agent);
    // It tries, fails the handshake, and tries again; the hub never sees
    // a WebSocket. Then it still stops when told.
    hub.next_refused_handshake().await;
    hub.next_refused_handshake().await;
    assert!(!hub.has_socket(), "no connection past a wrong pin");
    running.stop();
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);
}

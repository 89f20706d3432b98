//! Agent builds and their rollouts, with protocol-speaking agents in the
//! test (the real agent's switch to a new build and its rollback are
//! tested in its own crate and end to end in the `redwall` crate): only
//! platform admins add builds, and only executables for the platform they
//! name; what reaches an agent is the hub's signed statement of the
//! build's digest with the bytes; batches wait for the batch before; an
//! "ok" counts only from an agent that came back with the build's digest,
//! and the first failure stops the rollout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_kit;
mod common;

use agent_kit::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use redwall_crypto::signing::{AgentKey, PublicKey};
use redwall_policy::agent_protocol::{BuildStatement, BUILD_CONTEXT};
use serde_json::{json, Value};
use sha2::Digest as _;
use std::time::Duration;

/// A stand-in executable: an x86-64 ELF header and some bytes.
fn fake_build(tag: u8) -> Vec<u8> {
    let mut b = vec![tag; 4096];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[18..20].copy_from_slice(&62u16.to_le_bytes());
    b
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

struct TestAgent {
    id: String,
    key: AgentKey,
    hub_key: PublicKey,
}

async fn enrol_agent(s: &TestServer, owner: &Client, team: &str, name: &str) -> TestAgent {
    let r = new_token(
        owner,
        team,
        json!({ "hub_url": "https://hub.example:8443", "group": "plants" }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let key = AgentKey::generate();
    let r = enrol(s, r.body["token"].as_str().unwrap(), name, &key).await;
    assert_eq!(r.status, 201, "{}", r.body);
    TestAgent {
        id: r.body["agent_id"].as_str().unwrap().to_string(),
        hub_key: PublicKey::from_base64(r.body["hub_signing_key"].as_str().unwrap()).unwrap(),
        key,
    }
}

/// The next update frame: (command id, build, confirm_within_secs).
async fn next_update(ws: &mut Ws) -> (String, Value, u64) {
    loop {
        let frame = next_json(ws).await.expect("an update frame");
        if frame["type"] == "update" {
            return (
                frame["id"].as_str().unwrap().to_string(),
                frame["build"].clone(),
                frame["confirm_within_secs"].as_u64().unwrap(),
            );
        }
    }
}

/// What an agent checks before it runs a build; the statement.
fn verify(agent: &TestAgent, build: &Value) -> BuildStatement {
    let text = build["statement"].as_str().unwrap();
    let sig = STANDARD
        .decode(build["signature"].as_str().unwrap())
        .unwrap();
    agent
        .hub_key
        .verify(BUILD_CONTEXT, text.as_bytes(), &sig)
        .expect("signed by the hub");
    let statement: BuildStatement = serde_json::from_str(text).unwrap();
    let bytes = STANDARD.decode(build["binary"].as_str().unwrap()).unwrap();
    assert_eq!(sha256_hex(&bytes), statement.sha256);
    assert_eq!(bytes.len() as u64, statement.size);
    assert_eq!(statement.platform, "linux-x86_64");
    statement
}

async fn no_update_within(ws: &mut Ws, wait: Duration) {
    use futures::StreamExt as _;
    let end = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            assert!(!t.contains("\"update\""), "an update arrived: {t}");
        }
    }
}

async fn rollout(owner: &Client, team: &str, id: &str) -> Value {
    let r = owner
        .get(&format!("/api/v1/teams/{team}/agent-updates/{id}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

async fn wait_rollout(
    owner: &Client,
    team: &str,
    id: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..100 {
        let v = rollout(owner, team, id).await;
        if pred(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the rollout never got there: {}",
        rollout(owner, team, id).await
    );
}

async fn builds_and_batched_rollouts(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let member = s.user(&admin, "martin").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &member, &team, "martin", "member").await;

    // Builds: platform admins only, executables for the platform named.
    let body = |bytes: &[u8], platform: &str| json!({"version": "0.2.0", "platform": platform, "binary": STANDARD.encode(bytes)});
    let build = fake_build(7);
    let r = owner
        .post("/api/v1/agent-builds", body(&build, "linux-x86_64"))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    for (bytes, platform, code) in [
        (build.clone(), "linux-aarch64", "invalid_build"),
        (
            b"#!/bin/sh\nexit 0\n".to_vec(),
            "linux-x86_64",
            "invalid_build",
        ),
        (Vec::new(), "linux-x86_64", "invalid_build"),
        (build.clone(), "windows", "invalid_platform"),
    ] {
        let r = admin
            .post("/api/v1/agent-builds", body(&bytes, platform))
            .await;
        assert_eq!((r.status, r.code()), (422, code), "{platform}: {}", r.body);
    }
    let r = admin
        .post("/api/v1/agent-builds", body(&build, "linux-x86_64"))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let build_id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["sha256"], sha256_hex(&build));
    let r = admin
        .post("/api/v1/agent-builds", body(&build, "linux-x86_64"))
        .await;
    assert_eq!((r.status, r.code()), (409, "build_exists"), "{}", r.body);
    let r = member.get("/api/v1/agent-builds").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    assert!(!r.text.contains(&STANDARD.encode(&build)[..100]));

    let one = enrol_agent(s, &owner, &team, "plant-1").await;
    let two = enrol_agent(s, &owner, &team, "plant-2").await;
    let mut ws1 = connect(s, &one.id, &one.key).await;
    let mut ws2 = connect(s, &two.id, &two.key).await;

    // Only Owners roll builds out, only through rollouts.
    let start = json!({"build": build_id, "target": {"kind": "agent_group", "name": "plants"},
                       "batch_size": 1});
    let path = format!("/api/v1/teams/{team}/agent-updates");
    let r = member.post(&path, start.clone()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/agents/plant-1/commands"),
            json!({"kind": "update", "build_id": build_id}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "invalid_command"), "{}", r.body);
    let r = owner
        .post(&path, json!({"build": build_id, "target": {"kind": "agent_group", "name": "plants"}, "batch_size": 0}))
        .await;
    assert_eq!((r.status, r.code()), (422, "invalid_batch"), "{}", r.body);

    let r = owner.post(&path, start).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["status"].as_str(), r.body["sent"].as_u64()),
        (Some("rolling"), Some(1))
    );
    let update = r.body["id"].as_str().unwrap().to_string();
    // One agent at a time: the first gets the build, the second waits.
    let (first, (command, sent, confirm)) = tokio::select! {
        a = next_update(&mut ws1) => (1, a),
        b = next_update(&mut ws2) => (2, b),
    };
    assert_eq!(confirm, 60);
    let statement = verify(if first == 1 { &one } else { &two }, &sent);
    assert_eq!(statement.id, build_id);
    let (mut this_ws, mut other_ws, this, other) = if first == 1 {
        (ws1, ws2, &one, &two)
    } else {
        (ws2, ws1, &two, &one)
    };
    no_update_within(&mut other_ws, Duration::from_millis(600)).await;
    // The new build connects (its hello names the build) and answers.
    drop(this_ws);
    this_ws = connect_with_build(s, &this.id, &this.key, &statement.sha256).await;
    send(
        &mut this_ws,
        json!({"type": "command_done", "id": command, "ok": true, "message": "runs build 0.2.0"}),
    )
    .await;
    // Then the next batch: the other agent, which claims success but came
    // back with no build digest: it does not count, and the rollout stops.
    let (command2, sent2, _) = next_update(&mut other_ws).await;
    verify(other, &sent2);
    send(
        &mut other_ws,
        json!({"type": "command_done", "id": command2, "ok": true, "message": "runs build 0.2.0"}),
    )
    .await;
    let v = wait_rollout(&owner, &team, &update, |v| v["status"] != "rolling").await;
    assert_eq!(v["status"], "stopped", "{v}");
    assert_eq!(
        (v["updated"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("another one"), "{v}");
    assert_eq!(audit_events(&admin, "agent.updated").await.len(), 1);
    assert_eq!(audit_events(&admin, "agent.update_failed").await.len(), 1);
    let ended = audit_events(&admin, "agent.update_ended").await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["outcome"], "failure");
    assert_eq!(audit_events(&admin, "agent.build_added").await.len(), 1);
    let a = agent(
        &owner,
        &team,
        if first == 1 { "plant-1" } else { "plant-2" },
    )
    .await;
    assert_eq!(a["build_sha256"], statement.sha256.as_str());
}

/// An update whose answer never came (the link dropped while the build
/// was on its way, or before the agent answered) is handed over again, the
/// same command, on the agent's next connection; once answered, never.
async fn an_unanswered_update_is_handed_over_again(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Plant").await;
    let build = fake_build(9);
    let r = admin
        .post(
            "/api/v1/agent-builds",
            json!({"version": "0.3.0", "platform": "linux-x86_64", "binary": STANDARD.encode(&build)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let build_id = r.body["id"].as_str().unwrap().to_string();
    let agent = enrol_agent(s, &owner, &team, "plant-1").await;
    let mut ws = connect(s, &agent.id, &agent.key).await;
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/agent-updates"),
            json!({"build": build_id, "target": {"kind": "agent_group", "name": "plants"}, "batch_size": 1}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let update = r.body["id"].as_str().unwrap().to_string();
    let (command, _, _) = next_update(&mut ws).await;

    // The link drops before any answer: the next connection gets the same
    // command, the build as signed before.
    drop(ws);
    let mut ws = connect(s, &agent.id, &agent.key).await;
    let (again, sent, _) = next_update(&mut ws).await;
    assert_eq!(again, command);
    assert_eq!(verify(&agent, &sent).id, build_id);
    assert_eq!(
        rollout(&owner, &team, &update).await["status"],
        "rolling",
        "still waiting for the answer"
    );

    // Answered (here: refused): that ends it, and it never comes again.
    send(
        &mut ws,
        json!({"type": "command_done", "id": command, "ok": false, "message": "refused the build: test"}),
    )
    .await;
    let v = wait_rollout(&owner, &team, &update, |v| v["status"] != "rolling").await;
    assert_eq!(v["status"], "stopped", "{v}");
    drop(ws);
    let mut ws = connect(s, &agent.id, &agent.key).await;
    no_update_within(&mut ws, Duration::from_millis(800)).await;
    assert_eq!(audit_events(&admin, "agent.update_failed").await.len(), 1);
}

on_both_backends!(
    builds_and_batched_rollouts,
    an_unanswered_update_is_handed_over_again
);

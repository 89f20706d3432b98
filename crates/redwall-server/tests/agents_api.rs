//! Remote agents through the API and the agents' WebSocket, with a
//! protocol-speaking client in the test (the real agent binary has its
//! own tests in the `redwall` crate): provisioning tokens that work once
//! and expire, enrolment that spends nothing on a refused request,
//! answers that tell a stranger nothing, who may do what, the challenge,
//! heartbeats and online state, commands and revocation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_kit;
mod common;

use agent_kit::*;
use common::*;
use redwall_crypto::signing::AgentKey;
use serde_json::json;
use std::time::{Duration, Instant};

async fn heartbeat(ws: &mut Ws) {
    send(
        ws,
        json!({"type": "heartbeat", "status": {"node_red": "running"}}),
    )
    .await;
}

/// A token works once, for one team, until it expires; a refused
/// enrolment spends nothing; a stranger learns nothing from the answers.
async fn provisioning_tokens_work_once_and_tell_strangers_nothing(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let member = s.user(&admin, "martin").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &member, &team, "martin", "member").await;

    // Only Owners provision; Members see the list.
    let r = new_token(&member, &team, json!({"hub_url": "https://hub.example"})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        member
            .get(&format!("/api/v1/teams/{team}/agents"))
            .await
            .status,
        200
    );
    // Bad requests are refused before anything is made.
    for (body, code) in [
        (json!({"hub_url": "http://hub.example"}), "invalid_hub_url"),
        (
            json!({"hub_url": "https://user@hub.example"}),
            "invalid_hub_url",
        ),
        (
            json!({"hub_url": "https://hub.example/x"}),
            "invalid_hub_url",
        ),
        (
            json!({"hub_url": "https://hub.example", "hours": 0}),
            "invalid_expiry",
        ),
        (
            json!({"hub_url": "https://hub.example", "group": "Bad Group"}),
            "invalid_agent_group",
        ),
        (
            json!({"hub_url": "https://hub.example", "ca_pem": "not a cert"}),
            "invalid_ca",
        ),
    ] {
        let r = new_token(&owner, &team, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(r.code(), code, "{body}");
    }
    let r = new_token(
        &owner,
        &team,
        json!({"hub_url": "https://hub.example:8443/", "group": "line-one"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let bundle = redwall_policy::agent_protocol::ProvisioningBundle::decode(
        r.body["bundle"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(bundle.hub_url, "https://hub.example:8443");
    let t = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(bundle.provisioning_token, t);
    assert!(t.starts_with("rwe_"));
    // Listed without the token.
    let r = owner
        .get(&format!("/api/v1/teams/{team}/agent-tokens"))
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains(&t), "{}", r.text);

    let key = AgentKey::generate();
    // Refused for what it asks: the token stays usable.
    let box_public = box_key(&key).public_base64();
    let bad_key = json!({"provisioning_token": t, "name": "press-1", "public_key": "AAAA",
        "encryption_key": box_public, "platform": "linux-x86_64", "version": "0.1.0"});
    let r = s.anonymous().post("/api/v1/agent/enrol", bad_key).await;
    assert_eq!(
        (r.status, r.code()),
        (422, "invalid_public_key"),
        "{}",
        r.body
    );
    let r = enrol(s, &t, "Press 1", &key).await;
    assert_eq!((r.status, r.code()), (422, "invalid_agent_name"));
    use base64::Engine as _;
    let all_zero = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
    for bad in ["", "AAAA", all_zero.as_str()] {
        let mut body = enrolment(&t, "press-1", &key, "0.1.0");
        body["encryption_key"] = json!(bad);
        let r = s.anonymous().post("/api/v1/agent/enrol", body).await;
        assert_eq!(
            (r.status, r.code()),
            (422, "invalid_encryption_key"),
            "{bad}: {}",
            r.body
        );
    }
    let r = s
        .anonymous()
        .post(
            "/api/v1/agent/enrol",
            json!({"provisioning_token": t, "name": "press-1", "public_key": key.public_key().to_base64(),
                "encryption_key": box_public, "platform": "windows", "version": "0.1.0"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "invalid_platform"));
    let r = enrol(s, &t, "press-1", &key).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["team_id"], team);
    assert!(r.body["hub_signing_key"].as_str().unwrap().len() >= 43);
    let v = agent(&owner, &team, "press-1").await;
    assert_eq!(v["group"], "line-one");
    assert_eq!(v["online"], false);
    assert_eq!(v["key_fingerprint"], key.public_key().fingerprint());

    // Used, unknown, malformed and expired tokens: one answer.
    let unknown = format!("rwe_{}", "A".repeat(43));
    let expired = token(&owner, &team).await;
    s.clock.advance_secs(25 * 3600);
    let mut answers = Vec::new();
    for t in [t.as_str(), unknown.as_str(), "rwe_short", expired.as_str()] {
        let r = enrol(s, t, "press-2", &AgentKey::generate()).await;
        assert_eq!(r.status, 401, "{}", r.body);
        answers.push(r.text);
    }
    answers.dedup();
    assert_eq!(answers.len(), 1, "{answers:?}");
    // (A day later, the Owner's session has ended too.)
    let owner = s.login("olivia", USER_PASSWORD).await;
    let admin = s.login(ADMIN, ADMIN_PASSWORD).await;
    // Another team's name is free; this team's is taken (and the token kept).
    let fresh = token(&owner, &team).await;
    let r = enrol(s, &fresh, "press-1", &AgentKey::generate()).await;
    assert_eq!((r.status, r.code()), (409, "name_taken"));
    let r = enrol(s, &fresh, "press-2", &AgentKey::generate()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // A stranger team's Owner sees none of it.
    let other = s.user(&admin, "eve").await;
    let other_team = create_team(&other, "Elsewhere").await;
    let r = other.get(&format!("/api/v1/teams/{team}/agents")).await;
    assert!(matches!(r.status, 403 | 404), "{}", r.body);
    let r = other
        .get(&format!("/api/v1/teams/{other_team}/agents/press-1"))
        .await;
    assert_eq!(r.status, 404);
    let refusals = audit_events(&admin, "agent.enrol_refused").await;
    assert!(!refusals.is_empty());
    assert!(!serde_json::to_string(&refusals).unwrap().contains(&t));
}

/// One token, many enrolments at once: exactly one wins.
async fn a_token_races_to_one_agent(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let t = token(&admin, &team).await;
    let tries = (0..8).map(|i| {
        let t = t.clone();
        async move {
            enrol(s, &t, &format!("racer-{i}"), &AgentKey::generate())
                .await
                .status
        }
    });
    let statuses = futures::future::join_all(tries).await;
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 401).count(),
        7,
        "{statuses:?}"
    );
}

/// Many agents enrolling at once, each with its own token made just
/// before (as a fleet's installer does): every one succeeds. (A swarm of
/// 1,000 once got "internal" answers here.)
async fn many_agents_enrol_at_once(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let tries = (0..50).map(|i| {
        let (admin, team) = (&admin, &team);
        async move {
            let t = token(admin, team).await;
            let r = enrol(s, &t, &format!("fleet-{i}"), &AgentKey::generate()).await;
            (r.status, r.text)
        }
    });
    let answers = futures::future::join_all(tries).await;
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 201)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    let r = admin.get(&format!("/api/v1/teams/{team}/agents")).await;
    assert_eq!(r.body.as_array().unwrap().len(), 50);
}

/// The connection: challenge, signed hello, heartbeats, commands; wrong
/// keys and replays are refused; a revocation cuts it at once.
async fn an_agent_proves_itself_and_is_cut_off_when_revoked(s: &TestServer) {
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let key = AgentKey::generate();
    let r = enrol(s, &token(&admin, &team).await, "press-1", &key).await;
    let id = r.body["agent_id"].as_str().unwrap().to_string();

    // A plain GET is told what this is.
    let r = s.anonymous().get("/api/v1/agent/connect").await;
    assert_eq!((r.status, r.code()), (400, "websocket_required"));
    // Another key, an unknown agent, a replayed answer: refused alike.
    let (mut ws, nonce) = open(s).await;
    send(&mut ws, hello(&id, &nonce, &AgentKey::generate())).await;
    assert_eq!(close_code(&mut ws).await, Some(4003));
    let (mut ws, nonce) = open(s).await;
    send(&mut ws, hello(&"0".repeat(32), &nonce, &key)).await;
    assert_eq!(close_code(&mut ws).await, Some(4003));
    let (mut ws, old_nonce) = open(s).await;
    drop(ws.close(None).await);
    let (mut ws, _) = open(s).await;
    send(&mut ws, hello(&id, &old_nonce, &key)).await;
    assert_eq!(close_code(&mut ws).await, Some(4003));
    // Not JSON, or not a hello first.
    let (mut ws, _) = open(s).await;
    send(
        &mut ws,
        json!({"type": "heartbeat", "status": {"node_red": "none"}}),
    )
    .await;
    assert_eq!(close_code(&mut ws).await, Some(4004));
    let refused = audit_events(&admin, "agent.connect_refused").await;
    assert!(!refused.is_empty());

    // The agent itself: online with its first heartbeat.
    let mut ws = connect(s, &id, &key).await;
    heartbeat(&mut ws).await;
    let start = Instant::now();
    loop {
        let v = agent(&admin, &team, "press-1").await;
        if v["online"] == true {
            assert_eq!(v["node_red"], "running");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two heartbeat intervals (15 s by default) without one: offline.
    s.clock.advance_secs(31);
    assert_eq!(agent(&admin, &team, "press-1").await["online"], false);
    heartbeat(&mut ws).await;

    // The same key connecting again takes over: the older connection closes.
    let newer = connect(s, &id, &key).await;
    assert_eq!(close_code(&mut ws).await, Some(4002));
    let mut ws = newer;

    // A command reaches it, and its answer is kept.
    let r = admin
        .post(
            &format!("/api/v1/teams/{team}/agents/press-1/commands"),
            json!({"kind": "ping"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let command = r.body["id"].as_str().unwrap().to_string();
    let got = next_json(&mut ws).await.unwrap();
    assert_eq!(
        got,
        json!({"type": "command", "id": command, "command": {"kind": "ping"}})
    );
    send(
        &mut ws,
        json!({"type": "command_done", "id": command, "ok": true, "message": "pong"}),
    )
    .await;
    let start = Instant::now();
    loop {
        let r = admin
            .get(&format!("/api/v1/teams/{team}/agent-commands/{command}"))
            .await;
        assert_eq!(r.status, 200);
        if r.body["ok"] == true {
            assert_eq!(r.body["message"], "pong");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{}", r.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An unknown command kind is refused before anything is queued.
    let r = admin
        .post(
            &format!("/api/v1/teams/{team}/agents/press-1/commands"),
            json!({"kind": "rm -rf"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);

    // Revoked: the connection closes within a second.
    let started = Instant::now();
    let r = admin
        .post(
            &format!("/api/v1/teams/{team}/agents/press-1/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(close_code(&mut ws).await, Some(4001));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let v = agent(&admin, &team, "press-1").await;
    assert_eq!(
        (v["revoked"].clone(), v["online"].clone()),
        (json!(true), json!(false))
    );
    // And it does not get back in.
    let (mut ws, nonce) = open(s).await;
    send(&mut ws, hello(&id, &nonce, &key)).await;
    assert_eq!(close_code(&mut ws).await, Some(4003));
    let r = admin
        .post(
            &format!("/api/v1/teams/{team}/agents/press-1/commands"),
            json!({"kind": "ping"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "agent_revoked"));
    let revoked = audit_events(&admin, "agent.revoked").await;
    assert_eq!(revoked.len(), 1);
}

/// Olivia's team "Plant" with its enrolled agent "press-1": Olivia's
/// client, the team's id, the agent's id and key.
async fn press_agent(s: &TestServer) -> (Client, String, String, AgentKey) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Plant").await;
    let token = token(&owner, &team).await;
    let key = AgentKey::generate();
    let r = enrol(s, &token, "press-1", &key).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["agent_id"].as_str().unwrap().to_string();
    (owner, team, id, key)
}

/// A heartbeat whose site report carries `n` (as the bridge's queue).
fn numbered_heartbeat(n: u64) -> serde_json::Value {
    json!({"type": "heartbeat", "status": {"node_red": "running", "site": {
        "bridge": {"local_connected": true, "team_connected": true, "queued": n,
                   "queued_bytes": 0, "max_bytes": 67108864, "in_flight": false,
                   "delivered": 0, "dropped": 0, "refused": 0, "resent_after_session_loss": 0}}}})
}

/// A client with an agent's key (stolen, or an agent gone wrong) that
/// sends heartbeats as fast as its link allows has them recorded at the
/// heartbeat's pace, not each one: each used to be a write to the agents
/// table, so one agent could keep the database busy at will. Only the
/// newest status counts, and it is recorded in the end.
async fn a_heartbeat_flood_is_recorded_at_the_heartbeats_pace(backend: Backend) {
    const FLOOD: Duration = Duration::from_secs(3);
    const MOST_SENT: u64 = 5_000;
    let Some(s) = TestServer::start_with(backend, |c| c.agents.heartbeat_secs = 1).await else {
        return;
    };
    let (owner, team, id, key) = press_agent(&s).await;
    let store = &s.running.state.hub.store;
    let mut ws = connect(&s, &id, &key).await;
    redwall_store::testing::count_updates(store, "agents")
        .await
        .unwrap();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < FLOOD && sent < MOST_SENT {
        sent += 1;
        send(&mut ws, numbered_heartbeat(sent)).await;
    }
    let elapsed = started.elapsed();
    // The newest status is recorded (so every heartbeat before it was read).
    let waited = Instant::now();
    loop {
        let v = agent(&owner, &team, "press-1").await;
        if v["site"]["bridge"]["queued"] == sent {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(60), "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writes = redwall_store::testing::updates_counted(store, "agents")
        .await
        .unwrap();
    // The pace: a few at once, then one each half interval (500 ms here);
    // the margin covers the last one and a slow machine.
    let most = 3 + (elapsed + waited.elapsed()).as_millis() as u64 / 500 + 2;
    eprintln!("{sent} heartbeats in {elapsed:?}: {writes} writes (at most {most})");
    assert!(
        writes <= most,
        "{sent} heartbeats sent in {elapsed:?} made {writes} writes; the pace allows {most}"
    );
    assert!(sent >= 10 * most, "not a flood: {sent} heartbeats");
    drop(ws);
    s.assert_audit_intact().await;
    s.stop().await;
}

/// The hub's answer to a hello: its first text frame, or the close code
/// it hung up with.
async fn hello_answer(ws: &mut Ws) -> Result<serde_json::Value, Option<u16>> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => return Err(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            _ => return Err(None),
        }
    }
}

/// A client with an agent's key that hangs up and dials again as fast as
/// it can: each connection costs the hub writes (the agent's build, its
/// first heartbeats, its disconnection), and unpaced it made hundreds a
/// second. An agent's connections are paced (`Pace::agent_dials`): ten at
/// once, then one each two seconds; a hello beyond is refused with 1013
/// ("try again later") before anything is written.
async fn an_agent_dialing_as_fast_as_it_can_is_paced(s: &TestServer) {
    use redwall_policy::pace::{DIALS_AT_ONCE, DIAL_GAP_MS};
    let (_, _, id, key) = press_agent(s).await;
    let store = &s.running.state.hub.store;
    redwall_store::testing::count_updates(store, "agents")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut welcomed, mut told_to_wait) = (0u64, 0u64);
    while started.elapsed() < Duration::from_secs(3) {
        let (mut ws, nonce) = open(s).await;
        send(&mut ws, hello(&id, &nonce, &key)).await;
        match hello_answer(&mut ws).await {
            Ok(welcome) => {
                assert_eq!(welcome["type"], "welcome", "{welcome}");
                welcomed += 1;
                heartbeat(&mut ws).await;
            }
            Err(code) => {
                assert_eq!(code, Some(1013));
                told_to_wait += 1;
            }
        }
        drop(ws);
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writes = redwall_store::testing::updates_counted(store, "agents")
        .await
        .unwrap();
    eprintln!(
        "{welcomed} connections welcomed and {told_to_wait} told to wait in {elapsed:?}: {writes} writes"
    );
    let most = DIALS_AT_ONCE + elapsed.as_millis() as u64 / DIAL_GAP_MS + 1;
    assert!(
        welcomed <= most,
        "{welcomed} connections in {elapsed:?}; the pace allows {most}"
    );
    assert!(told_to_wait > 0);
    assert!(
        writes <= 6 * most,
        "{writes} writes for {welcomed} connections"
    );
}

/// A hub whose database falters while an agent says hello must not tell
/// the agent its key was refused: the agent then stops for good (its
/// systemd unit does not restart it after 4003), and a site would be cut
/// off by a blip of the hub's database. It is told to dial again later,
/// and once the database is back it gets in. The fault is real: the
/// agents' table is away while the hello is checked.
async fn a_database_fault_during_a_hello_is_not_a_refusal(s: &TestServer) {
    use redwall_store::testing::execute_raw;
    let (_, _, id, key) = press_agent(s).await;
    let store = &s.running.state.hub.store;
    let (mut ws, nonce) = open(s).await;
    execute_raw(store, "ALTER TABLE agents RENAME TO agents_away")
        .await
        .unwrap();
    send(&mut ws, hello(&id, &nonce, &key)).await;
    let answer = hello_answer(&mut ws).await;
    execute_raw(store, "ALTER TABLE agents_away RENAME TO agents")
        .await
        .unwrap();
    assert_eq!(answer, Err(Some(1013)), "told to dial again later");
    connect(s, &id, &key).await;
}

mod a_heartbeat_flood_is_recorded_at_the_heartbeats_pace {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_heartbeat_flood_is_recorded_at_the_heartbeats_pace(Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_heartbeat_flood_is_recorded_at_the_heartbeats_pace(Backend::Postgres).await
    }
}

on_both_backends!(
    provisioning_tokens_work_once_and_tell_strangers_nothing,
    a_token_races_to_one_agent,
    many_agents_enrol_at_once,
    an_agent_proves_itself_and_is_cut_off_when_revoked,
    an_agent_dialing_as_fast_as_it_can_is_paced,
    a_database_fault_during_a_hello_is_not_a_refusal,
);

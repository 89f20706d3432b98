//! Snapshots deployed to remote agents, with a protocol-speaking agent in
//! the test (the real agent, which verifies and runs them in Node-RED, is
//! tested in its own crate and end to end in the `redwall` crate): what
//! reaches the agent is the hub's signed statement with credentials only
//! that agent can open; deployments end with the agent's answer and their
//! audit entry; an offline agent gets its deploy when it connects, and a
//! deploy never answered is handed over again on the next connection;
//! windows hold agent deploys back; a bare command cannot deploy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_kit;
mod common;
mod snapshot_kit;

use agent_kit::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use redwall_crypto::signing::{AgentKey, PublicKey};
use redwall_policy::snapshot_format::{content_sha256, flows_sha256, Content, Statement};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// An enrolled agent of the test: its id, its key, the hub's key.
struct TestAgent {
    id: String,
    key: AgentKey,
    hub_key: PublicKey,
}

async fn enrol_agent(
    s: &TestServer,
    owner: &Client,
    team: &str,
    name: &str,
    group: Option<&str>,
) -> TestAgent {
    let r = new_token(
        owner,
        team,
        json!({ "hub_url": "https://hub.example:8443", "group": group }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_string();
    let key = AgentKey::generate();
    let r = enrol(s, &token, name, &key).await;
    assert_eq!(r.status, 201, "{}", r.body);
    TestAgent {
        id: r.body["agent_id"].as_str().unwrap().to_string(),
        hub_key: PublicKey::from_base64(r.body["hub_signing_key"].as_str().unwrap()).unwrap(),
        key,
    }
}

/// A team of `owner`'s with a snapshot imported from a flows file with a
/// credential in it (`pw-{greeting}`): (team, snapshot).
async fn team_with_snapshot(owner: &Client, greeting: &str) -> (String, String) {
    let team = create_team(owner, "Plant").await;
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": "src"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let file = serde_json::to_vec(&snapshot_kit::flows(greeting)).unwrap();
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances/src/snapshots/import"),
            json!({"file": STANDARD.encode(file), "accept_plaintext_credentials": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    (team, r.body["snapshot"]["id"].as_str().unwrap().to_string())
}

/// The next deploy frame on the connection: (command id, snapshot).
async fn next_deploy(ws: &mut Ws) -> (String, Value) {
    loop {
        let frame = next_json(ws).await.expect("a deploy frame");
        if frame["type"] == "deploy" {
            return (
                frame["id"].as_str().unwrap().to_string(),
                frame["snapshot"].clone(),
            );
        }
    }
}

/// Everything the agent checks before it runs a snapshot; the opened
/// credentials.
fn verify(agent: &TestAgent, team: &str, snapshot: &Value) -> (Statement, Map<String, Value>) {
    let statement_text = snapshot["statement"].as_str().unwrap();
    let signature = STANDARD
        .decode(snapshot["signature"].as_str().unwrap())
        .unwrap();
    agent
        .hub_key
        .verify(
            redwall_policy::snapshot_format::STATEMENT_CONTEXT,
            statement_text.as_bytes(),
            &signature,
        )
        .expect("signed by the hub the agent enrolled with");
    let statement: Statement = serde_json::from_str(statement_text).unwrap();
    assert_eq!(statement.team_id, team);
    let content: Content = serde_json::from_str(snapshot["content"].as_str().unwrap()).unwrap();
    assert_eq!(flows_sha256(&content.flows), statement.flows_sha256);
    let sealed = STANDARD
        .decode(snapshot["credentials"].as_str().unwrap())
        .unwrap();
    let opened = box_key(&agent.key)
        .open(&sealed)
        .expect("sealed for this agent");
    let credentials: Map<String, Value> = serde_json::from_slice(&opened).unwrap();
    assert_eq!(
        content_sha256(&content, &credentials).unwrap(),
        statement.content_sha256
    );
    (statement, credentials)
}

async fn agent_deployments(owner: &Client, team: &str, agent: &str) -> Vec<Value> {
    let r = owner
        .get(&format!("/api/v1/teams/{team}/agents/{agent}/deployments"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.as_array().unwrap().clone()
}

/// Waits until the agent's deployment `id` (its only one in progress when
/// `None`) has this status. The test clock stands still, so the list's
/// order by time says nothing.
async fn wait_status(owner: &Client, team: &str, agent: &str, status: &str) -> Value {
    wait_for(owner, team, agent, None, status).await
}

async fn wait_for(
    owner: &Client,
    team: &str,
    agent: &str,
    id: Option<&str>,
    status: &str,
) -> Value {
    for _ in 0..100 {
        let list = agent_deployments(owner, team, agent).await;
        let found = match id {
            Some(id) => list.iter().find(|d| d["id"] == id),
            None => list.first().filter(|_| list.len() == 1),
        };
        if let Some(d) = found.filter(|d| d["status"] == status) {
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "agent {agent} never reached {status}: {:?}",
        agent_deployments(owner, team, agent).await
    );
}

async fn answer(ws: &mut Ws, id: &str, ok: bool, message: &str) {
    send(
        ws,
        json!({"type": "command_done", "id": id, "ok": ok, "message": message}),
    )
    .await;
}

/// No deploy frame arrives within `wait`.
async fn no_deploy_within(ws: &mut Ws, wait: Duration) {
    use futures::StreamExt as _;
    let end = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            assert!(!t.contains("\"deploy\""), "a deploy arrived: {t}");
        }
    }
}

#[tokio::test]
async fn agents_get_signed_snapshots_sealed_for_them_and_their_answers_end_the_deployments() {
    let s = snapshot_kit::instance_server().await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let member = s.user(&admin, "martin").await;
    let (team, snapshot) = team_with_snapshot(&owner, "plant").await;
    join_team(&owner, &member, &team, "martin", "member").await;

    let one = enrol_agent(&s, &owner, &team, "plant-1", Some("plants")).await;
    let two = enrol_agent(&s, &owner, &team, "plant-2", Some("plants")).await;
    let _three = enrol_agent(&s, &owner, &team, "office", None).await;
    let mut ws1 = connect(&s, &one.id, &one.key).await;

    // A bare command cannot deploy: deploys have their own permission,
    // row and audit entry.
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/agents/plant-1/commands"),
            json!({"kind": "deploy", "snapshot_id": snapshot}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "invalid_command"), "{}", r.body);
    // Who may deploy, and to what.
    let deploy = |who: &Client, target: Value, only: Value| {
        let who = who.clone();
        let team = team.clone();
        let snapshot = snapshot.clone();
        async move {
            who.post(
                &format!("/api/v1/teams/{team}/deploys"),
                json!({"snapshot": snapshot, "target": target, "only": only}),
            )
            .await
        }
    };
    let plants = json!({"kind": "agent_group", "name": "plants"});
    let r = deploy(&member, plants.clone(), json!([])).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = deploy(
        &owner,
        json!({"kind": "agent", "name": "nowhere"}),
        json!([]),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = deploy(
        &owner,
        json!({"kind": "agent_group", "name": "empty"}),
        json!([]),
    )
    .await;
    assert_eq!((r.status, r.code()), (422, "invalid_target"), "{}", r.body);
    let r = deploy(&owner, plants.clone(), json!(["office"])).await;
    assert_eq!((r.status, r.code()), (422, "invalid_target"), "{}", r.body);

    // The group: both agents, one online, one not.
    let r = deploy(&owner, plants.clone(), json!([])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = r.body.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{}", r.body);
    for row in rows {
        assert_eq!(row["status"], "deploying", "{row}");
        assert_eq!(row["instance_id"], Value::Null);
    }
    let (command, sent) = next_deploy(&mut ws1).await;
    let (statement, credentials) = verify(&one, &team, &sent);
    assert_eq!(statement.id, snapshot);
    assert_eq!(credentials["b1"]["password"], "pw-plant");
    // Sealed for plant-1 only: plant-2's key cannot open it.
    let sealed = STANDARD
        .decode(sent["credentials"].as_str().unwrap())
        .unwrap();
    assert!(box_key(&two.key).open(&sealed).is_err());
    assert!(!sent.to_string().contains("pw-plant"));
    answer(&mut ws1, &command, true, "runs it").await;
    let done = wait_status(&owner, &team, "plant-1", "done").await;
    assert_eq!(done["snapshot_id"], snapshot);
    assert_eq!(
        agent(&owner, &team, "plant-1").await["running_snapshot"],
        snapshot.as_str()
    );
    // A second answer to the same command changes nothing.
    answer(&mut ws1, &command, false, "late and wrong").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        agent_deployments(&owner, &team, "plant-1").await[0]["status"],
        "done"
    );
    let deployed = audit_events(&admin, "snapshot.deployed").await;
    assert_eq!(deployed.len(), 1, "{deployed:?}");
    assert_eq!(deployed[0]["target"], "agent:plant-1");

    // plant-2 was offline: it gets the deploy when it connects, and again
    // on its next connection while it has not answered.
    assert_eq!(
        agent_deployments(&owner, &team, "plant-2").await[0]["status"],
        "deploying"
    );
    let mut ws2 = connect(&s, &two.id, &two.key).await;
    let (first, sent) = next_deploy(&mut ws2).await;
    verify(&two, &team, &sent);
    drop(ws2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ws2 = connect(&s, &two.id, &two.key).await;
    let (again, sent) = next_deploy(&mut ws2).await;
    assert_eq!(again, first);
    verify(&two, &team, &sent);
    answer(
        &mut ws2,
        &again,
        false,
        "health check failed; rolled back to what ran before",
    )
    .await;
    let failed = wait_status(&owner, &team, "plant-2", "failed").await;
    assert!(
        failed["error"].as_str().unwrap().contains("rolled back"),
        "{failed}"
    );
    let refused = audit_events(&admin, "snapshot.deploy_failed").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["target"], "agent:plant-2");
    assert_eq!(refused[0]["outcome"], "failure");
    // An answered deploy is not handed over again.
    drop(ws2);
    let mut ws2 = connect(&s, &two.id, &two.key).await;
    no_deploy_within(&mut ws2, Duration::from_millis(500)).await;

    // A deploy held by its window waits, then goes when it opens.
    let now = redwall_hub::clock::Clock::now(&s.clock);
    let later = redwall_hub::clock::rfc3339(now + 10 * 60 * 1_000_000);
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/deploys"),
            json!({"snapshot": snapshot, "target": {"kind": "agent", "name": "plant-2"},
                   "window": {"not_before": later}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body[0]["status"], "waiting", "{}", r.body);
    let windowed = r.body[0]["id"].as_str().unwrap().to_string();
    no_deploy_within(&mut ws2, Duration::from_millis(1500)).await;
    s.clock.advance_secs(11 * 60);
    let (held, sent) = next_deploy(&mut ws2).await;
    verify(&two, &team, &sent);
    answer(&mut ws2, &held, true, "").await;
    wait_for(&owner, &team, "plant-2", Some(&windowed), "done").await;

    // A revoked agent is no target.
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/agents/plant-2/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = deploy(
        &owner,
        json!({"kind": "agent", "name": "plant-2"}),
        json!([]),
    )
    .await;
    assert_eq!((r.status, r.code()), (409, "agent_revoked"), "{}", r.body);
    let r = deploy(&owner, plants, json!([])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.as_array().unwrap().len(), 1, "{}", r.body);
}

/// Agents and agent groups as a pipeline's stages: the next stage waits
/// until every agent of the one before has answered that it runs the
/// snapshot.
#[tokio::test]
async fn agent_stages_of_a_pipeline_wait_for_the_agents_answers() {
    let s = snapshot_kit::instance_server().await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let (team, snapshot) = team_with_snapshot(&owner, "v1").await;
    let pilot = enrol_agent(&s, &owner, &team, "pilot", None).await;
    let plant = enrol_agent(&s, &owner, &team, "plant-1", Some("plants")).await;

    // A stage naming what the team does not have is refused.
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/pipelines"),
            json!({"name": "bad", "stages": [
                {"name": "x", "target": {"kind": "agent_group", "name": "nobody"}}]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/pipelines"),
            json!({"name": "sites", "stages": [
                {"name": "pilot", "target": {"kind": "agent", "name": "pilot"}},
                {"name": "plants", "target": {"kind": "agent_group", "name": "plants"}}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let promote = |stage: &str| {
        let owner = owner.clone();
        let body = json!({"snapshot": snapshot, "stage": stage});
        let path = format!("/api/v1/teams/{team}/pipelines/sites/promote");
        async move { owner.post(&path, body).await }
    };
    let mut ws = connect(&s, &pilot.id, &pilot.key).await;
    let r = promote("pilot").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "deploying", "{}", r.body);
    // Not into the plants while the pilot has not answered.
    let r = promote("plants").await;
    assert_eq!(
        (r.status, r.code()),
        (409, "previous_stage_not_done"),
        "{}",
        r.body
    );
    let (id, sent) = next_deploy(&mut ws).await;
    verify(&pilot, &team, &sent);
    answer(&mut ws, &id, true, "").await;
    wait_status(&owner, &team, "pilot", "done").await;
    let r = promote("plants").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut ws = connect(&s, &plant.id, &plant.key).await;
    let (id, sent) = next_deploy(&mut ws).await;
    verify(&plant, &team, &sent);
    answer(&mut ws, &id, true, "").await;
    wait_status(&owner, &team, "plant-1", "done").await;
    let r = owner
        .get(&format!("/api/v1/teams/{team}/pipelines/sites/promotions"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "done"),
        "{}",
        r.body
    );
}

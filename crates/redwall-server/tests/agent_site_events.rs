//! What an agent reports of its site, with a protocol-speaking agent in the
//! test (the real agent, with its journals and Node-RED, is tested end to
//! end in the `redwall` crate): audit events it kept become the team's
//! audit entries and log lines its log, each stored once however often the
//! agent sends them again; gaps are recorded as lost; a batch that breaks
//! the rules is refused whole and the connection closed; heartbeats carry
//! the store-and-forward figures to the API; who may read the logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_kit;
mod common;

use agent_kit::*;
use common::*;
use redwall_crypto::signing::AgentKey;
use redwall_policy::agent_protocol::close;
use serde_json::{json, Value};

const EPOCH: &str = "00112233aabbccdd";
/// 2026-12-05T06:00:00Z, by the site's clock.
const SITE_MS: i64 = 1_796_450_400_000;

async fn enrolled(s: &TestServer, owner: &Client, team: &str, name: &str) -> (String, AgentKey) {
    let token = token(owner, team).await;
    let key = AgentKey::generate();
    let r = enrol(s, &token, name, &key).await;
    assert_eq!(r.status, 201, "{}", r.body);
    (r.body["agent_id"].as_str().unwrap().to_string(), key)
}

fn audit_event(seq: u64, name: &str, user: Option<&str>) -> Value {
    let mut e =
        json!({"seq": seq, "at_ms": SITE_MS + seq as i64, "source": "node-red", "text": name});
    if let Some(user) = user {
        e["user"] = json!(user);
        e["details"] = json!({"event": name, "ip": "127.0.0.1"});
    }
    e
}

fn log_line(seq: u64) -> Value {
    json!({"seq": seq, "at_ms": SITE_MS + seq as i64, "source": "node-red", "text": format!("line {seq}")})
}

/// Sends a batch; the hub's answer: how far it now holds the journal.
async fn deliver(ws: &mut Ws, stream: &str, epoch: &str, events: Vec<Value>) -> u64 {
    send(
        ws,
        json!({"type": "site_events", "stream": stream, "epoch": epoch, "events": events}),
    )
    .await;
    let answer = next_json(ws).await.expect("an answer");
    assert_eq!(answer["type"], "site_events_stored", "{answer}");
    assert_eq!(answer["stream"], stream);
    assert_eq!(answer["epoch"], epoch);
    answer["through"].as_u64().unwrap()
}

async fn lines(c: &Client, team: &str, query: &str) -> Vec<String> {
    let r = c
        .get(&format!("/api/v1/teams/{team}/agents/plant-7/logs{query}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["source"].as_str().unwrap(),
                l["text"].as_str().unwrap()
            )
        })
        .collect()
}

/// Audit events and log lines arrive once each, in order, however often
/// the agent sends them again; gaps and new journals are recorded.
async fn site_events_are_stored_once_with_gaps_recorded(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Plant").await;
    let (agent_id, key) = enrolled(s, &owner, &team, "plant-7").await;
    let mut ws = connect(s, &agent_id, &key).await;

    let batch = vec![
        audit_event(1, "flows.set", Some("olivia")),
        json!({"seq": 2, "at_ms": SITE_MS + 2, "source": "agent", "text": "node_red.crashed",
               "details": {"reason": "exit 1", "restarts": 1}}),
    ];
    assert_eq!(deliver(&mut ws, "audit", EPOCH, batch.clone()).await, 2);
    let entries = audit_events(&admin, "agent.site_event").await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    // Newest first.
    let (crashed, deployed) = (&entries[0], &entries[1]);
    assert_eq!(deployed["target"], "agent:plant-7");
    // In the team's own log too.
    let r = owner
        .get(&format!(
            "/api/v1/teams/{team}/audit?event=agent.site_event"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 2, "{}", r.body);
    assert_eq!(deployed["details"]["site_event"], "flows.set");
    assert_eq!(deployed["details"]["site_user"], "olivia");
    assert_eq!(deployed["details"]["site_at"], "2026-12-05T06:00:00.001Z");
    assert_eq!(deployed["details"]["site_details"]["ip"], "127.0.0.1");
    assert_eq!(deployed["actor_name"], "agent:plant-7");
    assert_eq!(crashed["details"]["site_event"], "node_red.crashed");
    assert_eq!(crashed["details"]["source"], "agent");

    // The hub's answer was lost with the link: the same batch again, and
    // one overlapping it, store nothing twice.
    assert_eq!(deliver(&mut ws, "audit", EPOCH, batch).await, 2);
    let overlapping = vec![
        audit_event(2, "x.y", None),
        audit_event(3, "nodes.add", Some("mia")),
    ];
    assert_eq!(deliver(&mut ws, "audit", EPOCH, overlapping).await, 3);
    let entries = audit_events(&admin, "agent.site_event").await;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["details"]["site_event"], "nodes.add");

    // Log lines, in order; a gap (the site's journal was full) is said.
    assert_eq!(
        deliver(&mut ws, "log", EPOCH, (1..=3).map(log_line).collect()).await,
        3
    );
    assert_eq!(
        deliver(&mut ws, "log", EPOCH, (2..=4).map(log_line).collect()).await,
        4
    );
    assert_eq!(
        deliver(&mut ws, "log", EPOCH, vec![log_line(8), log_line(9)]).await,
        9
    );
    assert_eq!(
        lines(&owner, &team, "").await,
        [
            "node-red line 1",
            "node-red line 2",
            "node-red line 3",
            "node-red line 4",
            "agent [redwall] 3 log lines were dropped at the site (its journal was full)",
            "node-red line 8",
            "node-red line 9",
        ]
    );
    assert_eq!(
        lines(&owner, &team, "?lines=2").await,
        ["node-red line 8", "node-red line 9"]
    );
    let lost = audit_events(&admin, "agent.site_events_lost").await;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(
        lost[0]["details"],
        json!({"stream": "log", "journal": EPOCH, "lost": 3})
    );
    assert_eq!(lost[0]["outcome"], "failure");

    // A journal made anew (the agent's directory was replaced) numbers
    // from 1 again: stored, not mistaken for a resend.
    let fresh = "ffeeddccbbaa0099";
    assert_eq!(
        deliver(
            &mut ws,
            "audit",
            fresh,
            vec![audit_event(1, "flows.set", None)]
        )
        .await,
        1
    );
    assert_eq!(audit_events(&admin, "agent.site_event").await.len(), 4);

    // The heartbeat's figures reach the API.
    send(
        &mut ws,
        json!({"type": "heartbeat", "status": {"node_red": "running", "site": {
            "bridge": {"local_connected": true, "team_connected": false, "queued": 1200,
                       "queued_bytes": 48000, "max_bytes": 67108864, "in_flight": true,
                       "delivered": 300, "dropped": 0, "refused": 0, "resent_after_session_loss": 0},
            "journal": {"audit_pending": 2, "log_pending": 40, "audit_dropped": 0, "log_dropped": 3}}}}),
    )
    .await;
    let mut seen = Value::Null;
    for _ in 0..50 {
        seen = agent(&owner, &team, "plant-7").await;
        if seen["site"].is_object() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen["site"]["bridge"]["queued"], 1200, "{seen}");
    assert_eq!(seen["site"]["bridge"]["team_connected"], false);
    assert_eq!(seen["site"]["journal"]["log_pending"], 40);
    assert_eq!(seen["node_red"], "running");
}

/// One bad event refuses its whole batch: nothing of it is stored, and the
/// connection closes (the agent's own journal checks what it keeps, so
/// only a broken or hostile agent gets here).
async fn a_batch_that_breaks_the_rules_is_refused_whole(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Plant").await;
    let (agent_id, key) = enrolled(s, &owner, &team, "plant-7").await;
    let bad_batches = [
        json!({"type": "site_events", "stream": "audit", "epoch": "NOT-HEX-AT-ALL!!", "events": [audit_event(1, "a.b", None)]}),
        json!({"type": "site_events", "stream": "audit", "epoch": EPOCH, "events": [audit_event(1, "a.b", None), audit_event(1, "c.d", None)]}),
        json!({"type": "site_events", "stream": "log", "epoch": EPOCH, "events": [log_line(1), {"seq": 2, "at_ms": SITE_MS, "source": "node-red", "text": "a\nforged line"}]}),
        json!({"type": "site_events", "stream": "log", "epoch": EPOCH, "events": [{"seq": 1, "at_ms": SITE_MS, "source": "hub", "text": "x"}]}),
        json!({"type": "site_events", "stream": "audit", "epoch": EPOCH, "events": [{"seq": 1, "at_ms": SITE_MS, "source": "node-red", "text": "flows.set", "extra": 1}]}),
        json!({"type": "site_events", "stream": "audit", "epoch": EPOCH, "events": []}),
    ];
    for bad in bad_batches {
        let mut ws = connect(s, &agent_id, &key).await;
        send(&mut ws, bad.clone()).await;
        assert_eq!(close_code(&mut ws).await, Some(close::PROTOCOL), "{bad}");
    }
    assert!(audit_events(&admin, "agent.site_event").await.is_empty());
    assert!(lines(&owner, &team, "").await.is_empty());
}

/// Members of the team read the logs (Viewers see no agents at all); a
/// stranger's answer is the one for an agent that does not exist; the
/// query is checked.
async fn who_may_read_a_sites_logs(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let member = s.user(&admin, "mia").await;
    let viewer = s.user(&admin, "victor").await;
    let stranger = s.user(&admin, "sam").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &member, &team, "mia", "member").await;
    join_team(&owner, &viewer, &team, "victor", "viewer").await;
    let (agent_id, key) = enrolled(s, &owner, &team, "plant-7").await;
    let mut ws = connect(s, &agent_id, &key).await;
    assert_eq!(deliver(&mut ws, "log", EPOCH, vec![log_line(1)]).await, 1);

    assert_eq!(lines(&member, &team, "").await, ["node-red line 1"]);
    let r = viewer
        .get(&format!("/api/v1/teams/{team}/agents/plant-7/logs"))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let theirs = stranger
        .get(&format!("/api/v1/teams/{team}/agents/plant-7/logs"))
        .await;
    let missing = owner
        .get(&format!("/api/v1/teams/{team}/agents/no-such/logs"))
        .await;
    assert_eq!(theirs.status, 404, "{}", theirs.body);
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(theirs.body["error"]["code"], missing.body["error"]["code"]);
    let bad = owner
        .get(&format!(
            "/api/v1/teams/{team}/agents/plant-7/logs?lines=many"
        ))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body["error"]["code"].is_string(), "{}", bad.body);
    // Out of range is brought within it, as for instances' logs.
    assert_eq!(lines(&owner, &team, "?lines=0").await, ["node-red line 1"]);
    assert_eq!(
        lines(&owner, &team, "?lines=999999").await,
        ["node-red line 1"]
    );
}

on_both_backends!(
    site_events_are_stored_once_with_gaps_recorded,
    a_batch_that_breaks_the_rules_is_refused_whole,
    who_may_read_a_sites_logs,
);

//! What an agent reports of its site, with a protocol-speaking agent in the
//! test (the real agent, with its journals and Node-RED, is tested end to
//! end in the `redwall` crate): audit events it kept become the team's
//! audit entries and log lines its log, each stored once however often the
//! agent sends them again; gaps are recorded as lost; a batch that breaks
//! the rules is refused whole and the connection closed; heartbeats carry
//! the store-and-forward figures to the API; who may read the logs; and a
//! connection's budget (`redwall_policy::site_events::SiteEventBudget`):
//! an agent sending as fast as it can is slowed to the budget's rate,
//! reconnecting earns it nothing, one that does not wait for the hub's
//! answers is cut off, and an honest backlog still drains in full.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_kit;
mod common;

use agent_kit::*;
use common::*;
use redwall_crypto::signing::AgentKey;
use redwall_policy::agent_protocol::close;
use redwall_policy::site_events::{MAX_EVENTS_PER_BATCH, SITE_EVENTS_PER_SECOND};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

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

/// Olivia's team "Plant" with its enrolled agent "plant-7": Olivia's
/// client, the team's id, the agent's id and key.
async fn plant_agent(s: &TestServer) -> (Client, String, String, AgentKey) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Plant").await;
    let (agent_id, key) = enrolled(s, &owner, &team, "plant-7").await;
    (owner, team, agent_id, key)
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

/// A full batch of log lines, numbered on from `after`.
fn full_batch(after: u64) -> Vec<Value> {
    (after + 1..=after + MAX_EVENTS_PER_BATCH as u64)
        .map(log_line)
        .collect()
}

/// The number of the newest log line the hub stored (lines are numbered
/// as sent, from 1), through the API; 0 for none.
async fn newest_line(c: &Client, team: &str) -> u64 {
    lines(c, team, "?lines=1")
        .await
        .last()
        .map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// The most a connection may have had stored `elapsed` after it began, with
/// a generous margin against a slow machine: the budget starts empty and
/// fills at its rate, so half as much again, and one batch.
fn most_allowed(elapsed: Duration) -> u64 {
    (SITE_EVENTS_PER_SECOND as f64 * elapsed.as_secs_f64() * 1.5) as u64
        + MAX_EVENTS_PER_BATCH as u64
}

/// How long the floods below go on.
const FLOOD: Duration = Duration::from_secs(3);

/// A compromised agent (its key stolen) that sends full batches as fast
/// as the hub answers them is slowed to the budget's rate: over a fixed
/// while, what is stored is bounded by it. Slowed, not shut out: it is
/// answered all along and everything answered is stored.
async fn an_agent_sending_as_fast_as_it_can_is_slowed(s: &TestServer) {
    let (owner, team, agent_id, key) = plant_agent(s).await;
    let started = Instant::now();
    let mut ws = connect(s, &agent_id, &key).await;
    let mut sent = 0u64;
    while started.elapsed() < FLOOD {
        let through = deliver(&mut ws, "log", EPOCH, full_batch(sent)).await;
        sent += MAX_EVENTS_PER_BATCH as u64;
        assert_eq!(through, sent);
    }
    let elapsed = started.elapsed();
    let stored = newest_line(&owner, &team).await;
    assert_eq!(stored, sent, "what was answered is stored");
    assert!(
        stored <= most_allowed(elapsed),
        "{stored} events stored in {elapsed:?}: more than the budget allows ({})",
        most_allowed(elapsed)
    );
    assert!(stored >= 2 * MAX_EVENTS_PER_BATCH as u64, "{stored}");
}

/// A connection's budget starts empty, so hanging up and dialing again
/// earns an agent nothing.
async fn reconnecting_earns_no_budget(s: &TestServer) {
    let (owner, team, agent_id, key) = plant_agent(s).await;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut connections = 0;
    while started.elapsed() < FLOOD {
        let mut ws = connect(s, &agent_id, &key).await;
        connections += 1;
        let through = deliver(&mut ws, "log", EPOCH, full_batch(sent)).await;
        sent += MAX_EVENTS_PER_BATCH as u64;
        assert_eq!(through, sent);
        let _ = ws.close(None).await;
    }
    let elapsed = started.elapsed();
    let stored = newest_line(&owner, &team).await;
    assert_eq!(stored, sent);
    assert!(
        stored <= most_allowed(elapsed),
        "{stored} events stored in {elapsed:?} over {connections} connections: more than the budget allows ({})",
        most_allowed(elapsed)
    );
}

/// An agent that sends a second batch of a stream while the hub still
/// holds one (it did not wait for the answer, as an honest agent does) is
/// cut off, and what it sent is bounded by the budget.
async fn an_agent_that_does_not_wait_is_cut_off(s: &TestServer) {
    let (owner, team, agent_id, key) = plant_agent(s).await;
    let started = Instant::now();
    let mut ws = connect(s, &agent_id, &key).await;
    for n in 0..2 {
        send(
            &mut ws,
            json!({"type": "site_events", "stream": "log", "epoch": EPOCH,
                   "events": full_batch(n * MAX_EVENTS_PER_BATCH as u64)}),
        )
        .await;
    }
    assert_eq!(close_code(&mut ws).await, Some(close::PROTOCOL));
    let elapsed = started.elapsed();
    let stored = newest_line(&owner, &team).await;
    assert!(stored <= most_allowed(elapsed), "{stored} in {elapsed:?}");
    // It may dial again, and is heard.
    let mut ws = connect(s, &agent_id, &key).await;
    assert_eq!(
        deliver(&mut ws, "log", EPOCH, vec![log_line(1_000)]).await,
        1_000
    );
}

/// A batch the hub holds, sent again (the agent's answer was late, on a
/// link that slow): it takes the held one's place, nothing is stored
/// twice, and the agent is not cut off.
async fn a_batch_sent_again_while_held_takes_its_place(s: &TestServer) {
    let (owner, team, agent_id, key) = plant_agent(s).await;
    let mut ws = connect(s, &agent_id, &key).await;
    let first =
        json!({"type": "site_events", "stream": "log", "epoch": EPOCH, "events": full_batch(0)});
    // A new connection's budget is empty: the first is held.
    send(&mut ws, first.clone()).await;
    send(&mut ws, first).await;
    let answer = next_json(&mut ws).await.expect("an answer");
    assert_eq!(answer["type"], "site_events_stored", "{answer}");
    assert_eq!(answer["through"], 200);
    // Still heard: the next batch is answered (after one more answer for
    // the first, should a slow machine have stored it before the second
    // came).
    send(
        &mut ws,
        json!({"type": "site_events", "stream": "log", "epoch": EPOCH, "events": full_batch(200)}),
    )
    .await;
    loop {
        let answer = next_json(&mut ws).await.expect("an answer");
        assert_eq!(answer["type"], "site_events_stored", "{answer}");
        if answer["through"] == 400 {
            break;
        }
        assert_eq!(answer["through"], 200, "{answer}");
    }
    let kept = lines(&owner, &team, "?lines=1000").await;
    assert_eq!(kept.len(), 400);
    assert_eq!(kept[399], "node-red line 400");
}

/// An honest agent back online with a backlog in both journals (2,000 log
/// lines and 400 audit events), one batch per stream on its way and the
/// next sent once the last is answered, with heartbeats meanwhile: all of
/// it is stored, at the budget's pace and within a reasonable time.
async fn an_honest_backlog_drains_in_full(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Plant").await;
    let (agent_id, key) = enrolled(s, &owner, &team, "plant-7").await;
    let (log_backlog, audit_backlog) = (2_000u64, 400u64);
    let batch_of = |stream: &str, after: u64| -> Value {
        let events: Vec<Value> = match stream {
            "log" => (after + 1..=after + MAX_EVENTS_PER_BATCH as u64)
                .map(log_line)
                .collect(),
            _ => (after + 1..=after + MAX_EVENTS_PER_BATCH as u64)
                .map(|seq| audit_event(seq, "flows.set", Some("olivia")))
                .collect(),
        };
        json!({"type": "site_events", "stream": stream, "epoch": EPOCH, "events": events})
    };
    let started = Instant::now();
    let mut ws = connect(s, &agent_id, &key).await;
    send(&mut ws, batch_of("log", 0)).await;
    send(&mut ws, batch_of("audit", 0)).await;
    let (mut log_through, mut audit_through) = (0u64, 0u64);
    while log_through < log_backlog || audit_through < audit_backlog {
        let answer = next_json(&mut ws).await.expect("an answer");
        assert_eq!(answer["type"], "site_events_stored", "{answer}");
        let through = answer["through"].as_u64().unwrap();
        let (done, backlog) = match answer["stream"].as_str().unwrap() {
            "log" => (&mut log_through, log_backlog),
            _ => (&mut audit_through, audit_backlog),
        };
        assert_eq!(through, *done + MAX_EVENTS_PER_BATCH as u64, "{answer}");
        *done = through;
        send(
            &mut ws,
            json!({"type": "heartbeat", "status": {"node_red": "running", "site": {
                "journal": {"audit_pending": audit_backlog - audit_through,
                            "log_pending": log_backlog - log_through,
                            "audit_dropped": 0, "log_dropped": 0}}}}),
        )
        .await;
        if through < backlog {
            send(
                &mut ws,
                batch_of(answer["stream"].as_str().unwrap(), through),
            )
            .await;
        }
    }
    let elapsed = started.elapsed();
    let kept = lines(&owner, &team, "?lines=2000").await;
    assert_eq!(kept.len(), 2_000);
    assert_eq!(kept[0], "node-red line 1");
    assert_eq!(kept[1_999], "node-red line 2000");
    assert_eq!(audit_events(&admin, "agent.site_event").await.len(), 400);
    // One budget for both streams, starting empty: never faster than its
    // rate (exact, whatever the machine), and not much slower either.
    let budget_time =
        Duration::from_millis((log_backlog + audit_backlog) * 1_000 / SITE_EVENTS_PER_SECOND);
    assert!(elapsed >= budget_time, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

on_both_backends!(
    site_events_are_stored_once_with_gaps_recorded,
    a_batch_that_breaks_the_rules_is_refused_whole,
    who_may_read_a_sites_logs,
    an_agent_sending_as_fast_as_it_can_is_slowed,
    reconnecting_earns_no_budget,
    an_agent_that_does_not_wait_is_cut_off,
    a_batch_sent_again_while_held_takes_its_place,
    an_honest_backlog_drains_in_full,
);

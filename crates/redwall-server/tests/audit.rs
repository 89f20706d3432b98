//! The audit log: who did what, filtered, paged and exported; a chain that
//! names any entry changed after the fact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use futures::{StreamExt, TryStreamExt};
use redwall_store::testing::{disable_audit_guards, execute_raw};
use redwall_store::ChainProblemKind;
use serde_json::json;

async fn entries_say_who_did_what_from_where(s: &TestServer) {
    let admin = s.admin().await;
    let alice_id = s.create_user(&admin, "alice").await;
    let created = audit_events(&admin, "user.created").await;
    let e = &created[0];
    assert_eq!(e["actor_name"], ADMIN);
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["target"], format!("user:{alice_id}"));
    assert_eq!(e["outcome"], "success");
    assert!(e["at"].as_str().unwrap().contains('T'));
    assert_eq!(e["hash"].as_str().unwrap().len(), 64);
    assert_eq!(e["user_agent"], "redwall-tests");
}

async fn secrets_never_reach_the_log(s: &TestServer) {
    let admin = s.admin().await;
    s.create_user(&admin, "alice").await;
    let token = admin
        .post("/api/v1/me/tokens", json!({"name": "t", "scope": "read"}))
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    s.anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"username": "alice", "password": "my-secret-typo-1"}),
        )
        .await;
    let export = admin.get("/api/v1/audit/export").await;
    assert_eq!(export.status, 200);
    for secret in [
        USER_PASSWORD,
        ADMIN_PASSWORD,
        "my-secret-typo-1",
        token.as_str(),
        s.setup_token.as_deref().unwrap(),
    ] {
        assert!(
            !export.text.contains(secret),
            "a secret is in the audit log"
        );
    }
}

async fn filters_and_cursor_pages(s: &TestServer) {
    let admin = s.admin().await;
    for i in 0..7 {
        s.create_user(&admin, &format!("u{i}")).await;
    }
    let anon = s.anonymous();
    anon.post(
        "/api/v1/auth/login",
        json!({"username": "u1", "password": "wrong-password-x"}),
    )
    .await;

    let by_event = audit_events(&admin, "user.created").await;
    assert_eq!(by_event.len(), 7);
    let by_prefix = audit_events(&admin, "auth.*").await;
    assert!(by_prefix
        .iter()
        .all(|e| e["event"].as_str().unwrap().starts_with("auth.")));
    assert!(by_prefix.iter().any(|e| e["event"] == "auth.login_failed"));

    let r = admin.get("/api/v1/audit?actor=u1").await;
    assert!(r.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor_name"] == "u1"));
    assert!(!r.body["entries"].as_array().unwrap().is_empty());

    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/audit?event=user.created&limit=3&cursor={c}"),
            None => "/api/v1/audit?event=user.created&limit=3".into(),
        };
        let r = admin.get(&path).await;
        assert_eq!(r.status, 200);
        seqs.extend(
            r.body["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_i64().unwrap()),
        );
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut sorted = seqs.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seqs, sorted, "pages are newest first, without overlap");
    assert_eq!(seqs.len(), 7);

    let future = "2999-01-01T00:00:00Z";
    let r = admin.get(&format!("/api/v1/audit?since={future}")).await;
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 0);
    let r = admin.get("/api/v1/audit?until=2000-01-01T00:00:00Z").await;
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 0);
    assert_eq!(admin.get("/api/v1/audit?since=yesterday").await.status, 400);
    assert_eq!(admin.get("/api/v1/audit?cursor=%%%").await.status, 400);
    assert_eq!(admin.get("/api/v1/audit?limit=abc").await.status, 400);
}

async fn export_is_json_lines_oldest_first_and_audited(s: &TestServer) {
    let admin = s.admin().await;
    s.create_user(&admin, "alice").await;
    let r = admin.get("/api/v1/audit/export").await;
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let lines: Vec<serde_json::Value> = r
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3);
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gapless, oldest first"
    );
    assert_eq!(lines[0]["event"], "setup.completed");
    for w in lines.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
    }
    assert!(!audit_events(&admin, "audit.exported").await.is_empty());
}

async fn the_chain_names_an_edited_a_deleted_and_an_inserted_entry(s: &TestServer) {
    s.chain_broken_on_purpose();
    let admin = s.admin().await;
    for i in 0..4 {
        s.create_user(&admin, &format!("v{i}")).await;
    }
    let state = &s.running.state;
    let report = state
        .hub
        .store
        .verify_audit_chain(&state.hub.chain_key())
        .await
        .unwrap();
    assert!(report.problem.is_none());
    let last = report.last_seq.unwrap();
    assert!(report.checked >= 5);
    // Someone with database access rewrites history.
    let store = state.hub.store.clone();
    disable_audit_guards(&store).await.unwrap();
    execute_raw(
        &store,
        "UPDATE audit_log SET details = '{\"username\":\"nobody\"}' WHERE seq = 3",
    )
    .await
    .unwrap();
    let report = state
        .hub
        .store
        .verify_audit_chain(&state.hub.chain_key())
        .await
        .unwrap();
    let p = report.problem.unwrap();
    assert_eq!((p.seq, p.kind), (3, ChainProblemKind::Altered));

    execute_raw(&store, "DELETE FROM audit_log WHERE seq = 3")
        .await
        .unwrap();
    let p = state
        .hub
        .store
        .verify_audit_chain(&state.hub.chain_key())
        .await
        .unwrap()
        .problem
        .unwrap();
    assert_eq!((p.seq, p.kind), (4, ChainProblemKind::Removed));

    // Put a forged row in the gap: it cannot carry a valid keyed hash.
    execute_raw(&store, "INSERT INTO audit_log SELECT 3, 'forged', at, actor_id, actor_name, client_ip, user_agent, event, target, outcome, details, team_id, prev_hash, hash FROM audit_log WHERE seq = 2").await.unwrap();
    let p = state
        .hub
        .store
        .verify_audit_chain(&state.hub.chain_key())
        .await
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(p.seq, 3);
    assert!(matches!(
        p.kind,
        ChainProblemKind::Altered | ChainProblemKind::Inserted
    ));
    let _ = last;
}

/// The entries of `event` as the admin sees them (at most 1000).
async fn entries_of(admin: &Client, event: &str) -> Vec<serde_json::Value> {
    audit_events(admin, event).await
}

fn count_of(e: &serde_json::Value) -> u64 {
    e["details"]["count"].as_u64().unwrap_or(0)
}

/// Issue 14: invalid instance API keys from many addresses wrote one audit
/// row each (2,590 rows in 2.2 s). Now each address's first refusal in a
/// minute is written at once, the rest of the minute become one entry with a
/// count, and beyond `audit.refusal_sources` addresses they are counted per
/// network and then together, so the rows stay bounded and every refusal
/// is counted exactly once.
async fn key_flood_from_many_addresses(backend: Backend) {
    const SOURCES: usize = 20;
    const ADDRESSES: usize = 60;
    const PER_ADDRESS: usize = 5;
    let Some(s) = TestServer::start_with(backend, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.audit.refusal_sources = SOURCES;
        // Machines with API keys use /i/{name}/.
        c.instances.path_routing = true;
    })
    .await
    else {
        return;
    };
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Plant").await;
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": "plant", "start": false}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = owner
        .put(
            &format!("/api/v1/teams/{team}/instances/plant/routes"),
            json!([{"path_prefix": "/hook", "methods": ["POST"], "policy": {"type": "api_key"}}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Every address in a /24 of its own, a few wrong keys each.
    let flood = s.anonymous();
    let url = s.url("/i/plant/hook");
    let requests = (0..ADDRESSES).flat_map(|a| (0..PER_ADDRESS).map(move |k| (a, k)));
    let statuses: Vec<u16> = futures::stream::iter(requests)
        .map(|(a, k)| {
            let req = flood
                .http
                .post(&url)
                .header("x-forwarded-for", format!("10.{a}.0.7"))
                .header("x-api-key", format!("rwi_wrong{a}x{k}"))
                .body("{}");
            async move { req.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|&st| st == 401), "{statuses:?}");

    // The first refusal of each address the table keeps is visible at once.
    let now = entries_of(&admin, "instance.key_rejected").await;
    assert_eq!(now.len(), SOURCES, "one immediate entry per kept address");
    assert!(now
        .iter()
        .all(|e| count_of(e) == 1 && e["details"]["reason"] == "invalid_key"));

    // The minute ends; the housekeeping loop writes the counted rest.
    s.clock.advance_secs(61);
    let total = (ADDRESSES * PER_ADDRESS) as u64;
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = entries_of(&admin, "instance.key_rejected").await;
        if entries.iter().map(count_of).sum::<u64>() >= total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let counted: u64 = entries.iter().map(count_of).sum();
    assert_eq!(counted, total, "every refusal counted once: {entries:#?}");
    // Immediate entries, one aggregate per kept address, a quarter of the
    // capacity in networks, one for the rest.
    assert!(
        entries.len() <= SOURCES + SOURCES + SOURCES / 4 + 1,
        "{} entries for {total} refusals",
        entries.len()
    );
    let aggregated: Vec<_> = entries
        .iter()
        .filter(|e| e["details"]["aggregated"] == true)
        .collect();
    let kept = aggregated
        .iter()
        .find(|e| e["details"]["source"] == "address")
        .expect("an address's minute");
    assert_eq!(count_of(kept), (PER_ADDRESS - 1) as u64);
    assert!(kept["client_ip"].as_str().unwrap().starts_with("10."));
    let network = aggregated
        .iter()
        .find(|e| e["details"]["source"] == "network")
        .expect("a network's minute");
    assert!(
        network["client_ip"].as_str().unwrap().ends_with(".0.0/24"),
        "{network}"
    );
    assert!(aggregated.iter().any(|e| e["details"]["source"] == "any"));
    assert!(aggregated
        .iter()
        .all(|e| e["target"] == "instance:plant" && e["details"]["window_secs"] == 60));

    // The team's own log shows the same.
    let team_log = owner
        .get(&format!(
            "/api/v1/teams/{team}/audit?event=instance.key_rejected&limit=1000"
        ))
        .await;
    let team_counted: u64 = team_log.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(count_of)
        .sum();
    assert_eq!(team_counted, total);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_flood_from_many_addresses_sqlite() {
    key_flood_from_many_addresses(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_flood_from_many_addresses_postgres() {
    key_flood_from_many_addresses(Backend::Postgres).await;
}

fn operator() -> (
    redwall_server::audit::Actor,
    redwall_server::net::client::ClientInfo,
) {
    (
        redwall_server::audit::Actor {
            id: None,
            name: Some("cli:test".into()),
        },
        redwall_server::net::client::ClientInfo {
            ip: std::net::IpAddr::from([127, 0, 0, 1]),
            user_agent: Some("redwall-cli".into()),
            https: false,
        },
    )
}

async fn stored_seqs(s: &TestServer) -> Vec<i64> {
    let mut all = std::pin::pin!(s
        .running
        .state
        .hub
        .store
        .stream_audit(redwall_store::AuditFilter::default()));
    let mut seqs = Vec::new();
    while let Some(e) = all.try_next().await.unwrap() {
        seqs.push(e.seq);
    }
    seqs
}

/// Retention: the old part of the log is exported to a file that verifies
/// on its own, then pruned behind a checkpoint; `audit verify` still proves
/// what remains, and still names a changed or removed entry. Nothing leaves
/// the log without an export and a checkpoint.
async fn export_then_prune_keeps_the_rest_provable(s: &TestServer) {
    use redwall_server::audit::retention::{export_before, prune_before};
    let state = &s.running.state;
    let store = state.hub.store.clone();
    let (actor, client) = operator();
    let origin = client.origin();
    let who = redwall_hub::Who {
        actor: Some(&actor),
        origin: &origin,
    };
    let admin = s.admin().await;
    for i in 0..3 {
        s.create_user(&admin, &format!("old{i}")).await;
    }
    s.clock.advance_secs(10);
    let cutoff = {
        use redwall_server::clock::Clock;
        s.clock.now()
    };
    s.clock.advance_secs(10);
    for i in 0..2 {
        s.create_user(&admin, &format!("new{i}")).await;
    }
    let before = stored_seqs(s).await;
    let old_count = before.len();

    // No export: refused, nothing removed.
    let err = prune_before(&state.hub, who, cutoff).await.unwrap_err();
    assert!(err.to_string().contains("were not exported"), "{err:#}");
    assert_eq!(stored_seqs(s).await, before);
    // The database refuses a delete, and a permit without its checkpoint.
    assert!(execute_raw(&store, "DELETE FROM audit_log WHERE seq <= 2")
        .await
        .is_err());
    let head = *before.last().unwrap();
    assert!(execute_raw(
        &store,
        &format!("INSERT INTO audit_prune_permit (through_seq, checkpoint_seq) VALUES (2, {head})")
    )
    .await
    .is_err());
    assert!(
        execute_raw(&store, "UPDATE audit_log SET outcome = 'x' WHERE seq = 1")
            .await
            .is_err()
    );
    assert_eq!(stored_seqs(s).await, before);

    // Export: a file of JSON lines that verifies with the chain key alone.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit-1.jsonl");
    let exported = export_before(&state.hub, who, cutoff, &file)
        .await
        .unwrap()
        .expect("entries before the cutoff");
    let cut = exported.cut.clone();
    assert_eq!(cut.first_seq, 1);
    assert!(cut.through_seq >= 4 && cut.through_seq < head, "{cut:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count() as i64, cut.entries());
    let report = redwall_store::verify_export(&state.hub.chain_key(), text.as_bytes()).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.last_hash.as_deref(), Some(cut.through_hash.as_str()));
    let tampered = text.replacen("old1", "evil", 1);
    let report = redwall_store::verify_export(&state.hub.chain_key(), tampered.as_bytes()).unwrap();
    assert!(
        report.problem.is_some(),
        "a changed exported entry is named"
    );
    assert!(
        export_before(&state.hub, who, cutoff, &file).await.is_err(),
        "an export never overwrites a file"
    );

    // Prune: the exported prefix goes, a chained checkpoint names its end.
    let pruned = prune_before(&state.hub, who, cutoff)
        .await
        .unwrap()
        .expect("something to prune");
    assert_eq!(pruned.cut, cut);
    assert_eq!(pruned.export_seq, exported.recorded_seq);
    let after = stored_seqs(s).await;
    assert_eq!(after.first(), Some(&(cut.through_seq + 1)));
    assert_eq!(after.last(), Some(&pruned.checkpoint_seq));
    assert_eq!(after.len() as i64, old_count as i64 + 2 - cut.entries());
    let checkpoint = entries_of(&admin, "audit.pruned").await;
    assert_eq!(checkpoint.len(), 1);
    assert_eq!(checkpoint[0]["details"]["through_seq"], cut.through_seq);
    assert_eq!(checkpoint[0]["details"]["through_hash"], cut.through_hash);
    assert_eq!(checkpoint[0]["actor_name"], "cli:test");
    let report = store
        .verify_audit_chain(&state.hub.chain_key())
        .await
        .unwrap();
    assert_eq!(report.problem, None, "{report:?}");
    assert_eq!(report.pruned_through, Some(cut.through_seq));
    assert_eq!(report.checked as usize, after.len());
    // Still append-only after a prune.
    assert!(execute_raw(
        &store,
        &format!("DELETE FROM audit_log WHERE seq = {}", after[0])
    )
    .await
    .is_err());

    // A second round starts where the first ended.
    s.create_user(&admin, "newer").await;
    let cutoff2 = {
        use redwall_server::clock::Clock;
        s.clock.now() + 1
    };
    let file2 = dir.path().join("audit-2.jsonl");
    let second = export_before(&state.hub, who, cutoff2, &file2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.cut.first_seq, cut.through_seq + 1);
    let text2 = std::fs::read_to_string(&file2).unwrap();
    let report = redwall_store::verify_export(&state.hub.chain_key(), text2.as_bytes()).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(
        report.starts_after.as_deref(),
        Some(cut.through_hash.as_str())
    );
    let pruned2 = prune_before(&state.hub, who, cutoff2)
        .await
        .unwrap()
        .unwrap();
    // The export's own record is before the cutoff too, but no file holds it.
    assert_eq!(pruned2.cut, second.cut);
    assert_eq!(pruned2.kept_unexported, 1);
    let report = store
        .verify_audit_chain(&state.hub.chain_key())
        .await
        .unwrap();
    assert_eq!(report.problem, None, "{report:?}");
    assert_eq!(report.pruned_through, Some(pruned2.cut.through_seq));
    s.create_user(&admin, "latest").await;

    // Someone with database access edits a remaining entry: named.
    s.chain_broken_on_purpose();
    let remaining = stored_seqs(s).await;
    disable_audit_guards(&store).await.unwrap();
    let victim = remaining[1];
    execute_raw(
        &store,
        &format!("UPDATE audit_log SET outcome = 'failure' WHERE seq = {victim}"),
    )
    .await
    .unwrap();
    let p = store
        .verify_audit_chain(&state.hub.chain_key())
        .await
        .unwrap()
        .problem
        .unwrap();
    assert_eq!((p.seq, p.kind), (victim, ChainProblemKind::Altered));
    // ... or removes the oldest remaining entries: no checkpoint covers them.
    execute_raw(
        &store,
        &format!("DELETE FROM audit_log WHERE seq <= {victim}"),
    )
    .await
    .unwrap();
    let p = store
        .verify_audit_chain(&state.hub.chain_key())
        .await
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(
        (p.seq, p.kind),
        (victim + 1, ChainProblemKind::Removed),
        "{p:?}"
    );
}

on_both_backends!(
    export_then_prune_keeps_the_rest_provable,
    entries_say_who_did_what_from_where,
    secrets_never_reach_the_log,
    filters_and_cursor_pages,
    export_is_json_lines_oldest_first_and_audited,
    the_chain_names_an_edited_a_deleted_and_an_inserted_entry,
);

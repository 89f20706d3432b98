//! The audit log: who did what, filtered, paged and exported; a chain that
//! names any entry changed after the fact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
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
    let admin = s.admin().await;
    for i in 0..4 {
        s.create_user(&admin, &format!("v{i}")).await;
    }
    let state = &s.running.state;
    let report = state
        .store
        .verify_audit_chain(&state.chain_key)
        .await
        .unwrap();
    assert!(report.problem.is_none());
    let last = report.last_seq.unwrap();
    assert!(report.checked >= 5);
    // Someone with database access rewrites history.
    let store = state.store.clone();
    disable_audit_guards(&store).await.unwrap();
    execute_raw(
        &store,
        "UPDATE audit_log SET details = '{\"username\":\"nobody\"}' WHERE seq = 3",
    )
    .await
    .unwrap();
    let report = state
        .store
        .verify_audit_chain(&state.chain_key)
        .await
        .unwrap();
    let p = report.problem.unwrap();
    assert_eq!((p.seq, p.kind), (3, ChainProblemKind::Altered));

    execute_raw(&store, "DELETE FROM audit_log WHERE seq = 3")
        .await
        .unwrap();
    let p = state
        .store
        .verify_audit_chain(&state.chain_key)
        .await
        .unwrap()
        .problem
        .unwrap();
    assert_eq!((p.seq, p.kind), (4, ChainProblemKind::Removed));

    // Put a forged row in the gap: it cannot carry a valid keyed hash.
    execute_raw(&store, "INSERT INTO audit_log SELECT 3, 'forged', at, actor_id, actor_name, client_ip, user_agent, event, target, outcome, details, team_id, prev_hash, hash FROM audit_log WHERE seq = 2").await.unwrap();
    let p = state
        .store
        .verify_audit_chain(&state.chain_key)
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

on_both_backends!(
    entries_say_who_did_what_from_where,
    secrets_never_reach_the_log,
    filters_and_cursor_pages,
    export_is_json_lines_oldest_first_and_audited,
    the_chain_names_an_edited_a_deleted_and_an_inserted_entry,
);

//! The team broker's clients through the API, as an Owner, a Member and a
//! Viewer use them: the password shown once and working at once, rules
//! checked, a rotation or revocation ending the old password, and nothing
//! of one team reachable from another.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use serde_json::json;

async fn login_works(s: &TestServer, username: &str, password: &str) -> bool {
    s.running
        .state
        .hub
        .broker_login(username, password.as_bytes())
        .await
        .unwrap()
        .is_some()
}

async fn clients_are_created_shown_once_rotated_and_revoked(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let member = s.user(&admin, "martin").await;
    let viewer = s.user(&admin, "victor").await;
    let stranger = s.user(&admin, "sam").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &member, &team, "martin", "member").await;
    join_team(&owner, &viewer, &team, "victor", "viewer").await;
    let other = create_team(&stranger, "Elsewhere").await;
    let clients = format!("/api/v1/teams/{team}/broker/clients");

    // A Member creates a client; its password is shown once and works.
    let r = member
        .post(
            &clients,
            json!({"name": "line 1 gateway", "rules": [
                {"effect": "allow", "actions": "publish", "filter": "plant/line1/#"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["username"].as_str().unwrap().to_string();
    let password = r.body["password"].as_str().unwrap().to_string();
    assert!(password.starts_with("rwb_"));
    assert!(login_works(s, &id, &password).await);

    // The list shows the client and its rules, never a password.
    let list = viewer.get(&clients).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body[0]["name"], "line 1 gateway");
    assert_eq!(list.body[0]["rules"][0]["filter"], "plant/line1/#");
    assert!(!list.text.contains("rwb_"), "{}", list.text);

    // A Viewer may look but not change; a stranger gets the answer for a
    // team that does not exist.
    let denied = viewer.post(&clients, json!({"name": "mine"})).await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(stranger.get(&clients).await.status, 404);
    let theirs = stranger
        .post(
            &format!("/api/v1/teams/{other}/broker/clients/{id}/rotate"),
            json!({}),
        )
        .await;
    assert_eq!(theirs.status, 404, "another team's client is not found");

    // Rules are checked before they are stored.
    let rules = format!("{clients}/{id}/rules");
    let bad = owner
        .put(
            &rules,
            json!([{"effect": "allow", "actions": "both", "filter": "a/#/b"}]),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (422, "invalid_filter"),
        "{}",
        bad.body
    );
    let bad = owner
        .put(
            &rules,
            json!([{"effect": "maybe", "actions": "both", "filter": "a"}]),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    let ok = owner
        .put(
            &rules,
            json!([{"effect": "allow", "actions": "both", "filter": "plant/#"}]),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["rules"][0]["actions"], "both");

    // Rotated: the old password stops at once.
    let rotated = owner
        .post(&format!("{clients}/{id}/rotate"), json!({}))
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let fresh = rotated.body["password"].as_str().unwrap().to_string();
    assert!(!login_works(s, &id, &password).await);
    assert!(login_works(s, &id, &fresh).await);

    // Revoked: gone, and so is its password.
    assert_eq!(member.delete(&format!("{clients}/{id}")).await.status, 204);
    assert!(!login_works(s, &id, &fresh).await);
    assert_eq!(member.delete(&format!("{clients}/{id}")).await.status, 404);

    let events = audit_events(&admin, "broker.*").await;
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for name in [
        "broker.client_created",
        "broker.rules_changed",
        "broker.client_rotated",
        "broker.client_revoked",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(
        !serde_json::to_string(&events).unwrap().contains("rwb_"),
        "no password reaches the log"
    );
}

on_both_backends!(clients_are_created_shown_once_rotated_and_revoked);

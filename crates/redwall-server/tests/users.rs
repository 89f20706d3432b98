//! User administration by platform admins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use serde_json::json;

async fn suspending_revokes_sessions_and_tokens_at_once(s: &TestServer) {
    let admin = s.admin().await;
    let id = s.create_user(&admin, "dave").await;
    let dave = s.login("dave", USER_PASSWORD).await;
    let dave_token = s.token_client(&dave, "full").await;
    assert_eq!(dave.get("/api/v1/me").await.status, 200);
    assert_eq!(dave_token.get("/api/v1/me").await.status, 200);
    let r = admin
        .post(&format!("/api/v1/users/{id}/suspend"), json!({}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["suspended"], true);
    assert_eq!(dave.get("/api/v1/me").await.status, 401);
    assert_eq!(dave_token.get("/api/v1/me").await.status, 401);
    // Reinstating does not bring old sessions or tokens back.
    admin
        .post(&format!("/api/v1/users/{id}/reinstate"), json!({}))
        .await;
    assert_eq!(dave.get("/api/v1/me").await.status, 401);
    assert_eq!(dave_token.get("/api/v1/me").await.status, 401);
}

async fn deleting_a_user_removes_everything(s: &TestServer) {
    let admin = s.admin().await;
    let id = s.create_user(&admin, "erin").await;
    let erin = s.login("erin", USER_PASSWORD).await;
    let token = s.token_client(&erin, "read").await;
    assert_eq!(
        admin.delete(&format!("/api/v1/users/{id}")).await.status,
        204
    );
    assert_eq!(erin.get("/api/v1/me").await.status, 401);
    assert_eq!(token.get("/api/v1/me").await.status, 401);
    assert_eq!(admin.get(&format!("/api/v1/users/{id}")).await.status, 404);
    // The name can be used again.
    s.create_user(&admin, "erin").await;
    let deleted = audit_events(&admin, "user.deleted").await;
    assert_eq!(deleted[0]["details"]["username"], "erin");
}

async fn admins_cannot_lock_themselves_out(s: &TestServer) {
    let admin = s.admin().await;
    let me = admin.get("/api/v1/me").await;
    let my_id = me.body["id"].as_str().unwrap();
    let r = admin
        .post(&format!("/api/v1/users/{my_id}/suspend"), json!({}))
        .await;
    assert_eq!(r.status, 409);
    let r = admin.delete(&format!("/api/v1/users/{my_id}")).await;
    assert_eq!(r.status, 409);
    assert_eq!(admin.get("/api/v1/me").await.status, 200);
}

async fn usernames_are_unique_regardless_of_case(s: &TestServer) {
    let admin = s.admin().await;
    s.create_user(&admin, "frank").await;
    let r = admin
        .post(
            "/api/v1/users",
            json!({"username": "FRANK", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "username_taken");
}

async fn users_are_listed_in_pages(s: &TestServer) {
    let admin = s.admin().await;
    for i in 0..5 {
        s.create_user(&admin, &format!("user{i}")).await;
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = if after.is_empty() {
            "/api/v1/users?limit=2".to_string()
        } else {
            format!("/api/v1/users?limit=2&after={after}")
        };
        let r = admin.get(&path).await;
        assert_eq!(r.status, 200);
        for u in r.body["users"].as_array().unwrap() {
            seen.push(u["username"].as_str().unwrap().to_string());
            assert!(u.get("password_hash").is_none());
        }
        match r.body["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec!["admin", "user0", "user1", "user2", "user3", "user4"]
    );
}

async fn plain_users_cannot_administer(s: &TestServer) {
    let admin = s.admin().await;
    let alice = s.user(&admin, "alice").await;
    let admin_id = admin.get("/api/v1/me").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(alice.get("/api/v1/users").await.status, 403);
    assert_eq!(
        alice
            .post(
                "/api/v1/users",
                json!({"username": "x2", "password": USER_PASSWORD})
            )
            .await
            .status,
        403
    );
    assert_eq!(
        alice
            .post(&format!("/api/v1/users/{admin_id}/suspend"), json!({}))
            .await
            .status,
        403
    );
    assert_eq!(
        alice
            .patch("/api/v1/settings", json!({"require_mfa": true}))
            .await
            .status,
        403
    );
    assert_eq!(alice.get("/metrics").await.status, 403);
    let denied = audit_events(&admin, "access.denied").await;
    assert!(denied.len() >= 5);
    assert!(denied.iter().all(|e| e["actor_name"] == "alice"));
}

async fn metrics_need_an_admin_credential(s: &TestServer) {
    let admin = s.admin().await;
    assert_eq!(s.anonymous().get("/metrics").await.status, 401);
    let token = s.token_client(&admin, "read").await;
    let r = token.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("redwall_logins_total{outcome=\"success\"}"));
    assert!(r
        .text
        .contains("# TYPE redwall_http_requests_total counter"));
}

async fn admins_grant_and_withdraw_the_admin_flag(s: &TestServer) {
    let admin = s.admin().await;
    let id = s.create_user(&admin, "grace").await;
    let grace = s.login("grace", USER_PASSWORD).await;
    assert_eq!(grace.get("/api/v1/users").await.status, 403);
    let r = admin
        .patch(&format!("/api/v1/users/{id}"), json!({"is_admin": true}))
        .await;
    assert_eq!((r.status, r.body["is_admin"].clone()), (200, json!(true)));
    // Effective on her very next request.
    assert_eq!(grace.get("/api/v1/users").await.status, 200);
    let my_id = admin.get("/api/v1/me").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        admin
            .patch(
                &format!("/api/v1/users/{my_id}"),
                json!({"is_admin": false})
            )
            .await
            .status,
        409
    );
    let r = admin
        .patch(&format!("/api/v1/users/{id}"), json!({"is_admin": false}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(grace.get("/api/v1/users").await.status, 403);
    let changes = audit_events(&admin, "user.admin_changed").await;
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["details"]["is_admin"], false);
    assert_eq!(
        admin
            .patch(&format!("/api/v1/users/{id}"), json!({"is_admin": "yes"}))
            .await
            .status,
        422
    );
}

on_both_backends!(
    admins_grant_and_withdraw_the_admin_flag,
    suspending_revokes_sessions_and_tokens_at_once,
    deleting_a_user_removes_everything,
    admins_cannot_lock_themselves_out,
    usernames_are_unique_regardless_of_case,
    users_are_listed_in_pages,
    plain_users_cannot_administer,
    metrics_need_an_admin_credential,
);

//! Logging in: the same answer for unknown users and wrong passwords, every
//! failure audited, and throttling with exponential backoff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use serde_json::json;

async fn unknown_user_and_wrong_password_look_the_same(s: &TestServer) {
    let admin = s.admin().await;
    s.create_user(&admin, "alice").await;
    let anon = s.anonymous();
    let wrong = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "alice", "password": "not-her-password"}),
        )
        .await;
    let unknown = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "mallory", "password": "not-her-password"}),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.code(), "invalid_credentials");
    let failures = audit_events(&admin, "auth.login_failed").await;
    let reasons: Vec<_> = failures
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(reasons.contains(&"wrong_password".to_string()));
    assert!(reasons.contains(&"unknown_user".to_string()));
    assert!(failures.iter().all(|e| e["client_ip"] == "127.0.0.1"));
}

async fn repeated_failures_are_throttled_with_backoff(s: &TestServer) {
    let admin = s.admin().await;
    s.create_user(&admin, "bob").await;
    let anon = s.anonymous();
    for _ in 0..5 {
        let r = anon
            .post(
                "/api/v1/auth/login",
                json!({"username": "bob", "password": "wrong-password-1"}),
            )
            .await;
        assert_eq!(r.status, 401);
    }
    // The sixth failure imposes a wait; the next attempt, even with the right password, gets 429.
    let r = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "bob", "password": "wrong-password-1"}),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "bob", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.code(), "too_many_attempts");
    let retry: i64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    // Another failure after the wait doubles it.
    s.clock.advance_secs(retry);
    let r = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "bob", "password": "wrong-password-1"}),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "BOB", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 429);
    let retry2: i64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry2 > retry, "{retry2} > {retry}");
    s.clock.advance_secs(retry2);
    s.login("bob", USER_PASSWORD).await;
    assert!(!audit_events(&admin, "auth.login_throttled")
        .await
        .is_empty());
}

async fn throttling_an_unknown_account_looks_like_a_known_one(s: &TestServer) {
    let _admin = s.admin().await;
    let anon = s.anonymous();
    let mut last = None;
    for _ in 0..7 {
        last = Some(
            anon.post(
                "/api/v1/auth/login",
                json!({"username": "ghost", "password": "whatever-pass"}),
            )
            .await,
        );
    }
    assert_eq!(last.unwrap().status, 429);
}

async fn suspended_users_cannot_log_in(s: &TestServer) {
    let admin = s.admin().await;
    let id = s.create_user(&admin, "carol").await;
    assert_eq!(
        admin
            .post(&format!("/api/v1/users/{id}/suspend"), json!({}))
            .await
            .status,
        200
    );
    let r = s
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"username": "carol", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "invalid_credentials");
    assert_eq!(
        admin
            .post(&format!("/api/v1/users/{id}/reinstate"), json!({}))
            .await
            .status,
        200
    );
    s.login("carol", USER_PASSWORD).await;
}

async fn login_sets_a_hardened_cookie_and_a_csrf_token(s: &TestServer) {
    s.admin().await;
    let r = s
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD}),
        )
        .await;
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("redwall_session=rwc_"), "{cookie}");
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Lax"));
    assert!(r.body["csrf_token"].as_str().unwrap().len() >= 40);
    assert_eq!(r.body["user"]["username"], ADMIN);
    assert!(r.body["user"].get("password_hash").is_none());
}

on_both_backends!(
    unknown_user_and_wrong_password_look_the_same,
    repeated_failures_are_throttled_with_backoff,
    throttling_an_unknown_account_looks_like_a_known_one,
    suspended_users_cannot_log_in,
    login_sets_a_hardened_cookie_and_a_csrf_token,
);

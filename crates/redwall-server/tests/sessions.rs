//! Sessions: server-side, ended by logout, logout everywhere, password change,
//! idle and absolute expiry; CSRF on cookie-authenticated writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use serde_json::json;

async fn logout_ends_the_session_on_the_server(s: &TestServer) {
    let admin = s.admin().await;
    assert_eq!(admin.get("/api/v1/me").await.status, 200);
    let r = admin.post("/api/v1/auth/logout", json!({})).await;
    assert_eq!(r.status, 204);
    assert!(r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // Replaying the old cookie does not work: the session is gone on the server.
    let r = admin.get("/api/v1/me").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "session_expired");
}

async fn logout_everywhere_ends_every_session(s: &TestServer) {
    let admin = s.admin().await;
    let laptop = s.login(ADMIN, ADMIN_PASSWORD).await;
    let phone = s.login(ADMIN, ADMIN_PASSWORD).await;
    let r = phone
        .post("/api/v1/auth/logout-everywhere", json!({}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["sessions_ended"], 3);
    for c in [&admin, &laptop, &phone] {
        assert_eq!(c.get("/api/v1/me").await.status, 401);
    }
}

async fn a_password_change_ends_all_other_sessions(s: &TestServer) {
    let admin = s.admin().await;
    let alice = s.user(&admin, "alice").await;
    let other = s.login("alice", USER_PASSWORD).await;
    let r = alice
        .put(
            "/api/v1/me/password",
            json!({"current_password": "wrong-current-pw", "new_password": "plum-orchard-river-7"}),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = alice
        .put(
            "/api/v1/me/password",
            json!({"current_password": USER_PASSWORD, "new_password": "123456789012"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "weak_password");
    let r = alice
        .put(
            "/api/v1/me/password",
            json!({"current_password": USER_PASSWORD, "new_password": "plum-orchard-river-7"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["other_sessions_ended"], 1);
    assert_eq!(alice.get("/api/v1/me").await.status, 200);
    assert_eq!(other.get("/api/v1/me").await.status, 401);
    let r = s
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"username": "alice", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 401);
    s.login("alice", "plum-orchard-river-7").await;
    assert!(!audit_events(&admin, "user.password_changed")
        .await
        .is_empty());
}

async fn idle_sessions_expire(s: &TestServer) {
    let admin = s.admin().await;
    s.clock.advance_secs(59 * 60);
    assert_eq!(
        admin.get("/api/v1/me").await.status,
        200,
        "activity keeps it alive"
    );
    s.clock.advance_secs(59 * 60);
    assert_eq!(admin.get("/api/v1/me").await.status, 200);
    s.clock.advance_secs(60 * 60);
    let r = admin.get("/api/v1/me").await;
    assert_eq!(r.status, 401);
    let fresh = s.login(ADMIN, ADMIN_PASSWORD).await;
    let expired = audit_events(&fresh, "session.expired").await;
    assert_eq!(expired[0]["details"]["reason"], "idle");
}

async fn sessions_end_at_their_absolute_lifetime(s: &TestServer) {
    let admin = s.admin().await;
    // Busy every 50 minutes for 14 days: the idle timeout never fires.
    for _ in 0..(14 * 24 * 60 / 50) {
        s.clock.advance_secs(50 * 60);
        if admin.get("/api/v1/me").await.status != 200 {
            break;
        }
    }
    s.clock.advance_secs(50 * 60);
    assert_eq!(admin.get("/api/v1/me").await.status, 401);
}

async fn lifetimes_follow_platform_settings(s: &TestServer) {
    let admin = s.admin().await;
    let r = admin
        .patch("/api/v1/settings", json!({"session_idle_secs": 300}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = admin
        .patch("/api/v1/settings", json!({"session_idle_secs": 5}))
        .await;
    assert_eq!(r.status, 422);
    s.clock.advance_secs(301);
    assert_eq!(admin.get("/api/v1/me").await.status, 401);
}

async fn users_list_and_end_their_sessions(s: &TestServer) {
    let admin = s.admin().await;
    let other = s.login(ADMIN, ADMIN_PASSWORD).await;
    let r = admin.get("/api/v1/me/sessions").await;
    assert_eq!(r.status, 200);
    let list = r.body.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|x| x["current"] == true).count(), 1);
    assert!(list.iter().all(|x| x["client_ip"] == "127.0.0.1"));
    let other_id = list.iter().find(|x| x["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        admin
            .delete(&format!("/api/v1/me/sessions/{other_id}"))
            .await
            .status,
        204
    );
    assert_eq!(other.get("/api/v1/me").await.status, 401);
    assert_eq!(
        admin
            .delete(&format!("/api/v1/me/sessions/{other_id}"))
            .await
            .status,
        404
    );
}

async fn someone_elses_session_cannot_be_ended(s: &TestServer) {
    let admin = s.admin().await;
    let alice = s.user(&admin, "alice").await;
    let admin_sessions = admin.get("/api/v1/me/sessions").await;
    let id = admin_sessions.body[0]["id"].as_str().unwrap();
    assert_eq!(
        alice
            .delete(&format!("/api/v1/me/sessions/{id}"))
            .await
            .status,
        404
    );
    assert_eq!(admin.get("/api/v1/me").await.status, 200);
}

async fn cookie_writes_need_the_csrf_token(s: &TestServer) {
    let admin = s.admin().await;
    let r = admin
        .without_csrf()
        .post("/api/v1/me/tokens", json!({"name": "x", "scope": "read"}))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "csrf_failed");
    let mut forged = admin.clone();
    forged.csrf = Some("A".repeat(43));
    assert_eq!(
        forged
            .post("/api/v1/me/tokens", json!({"name": "x", "scope": "read"}))
            .await
            .status,
        403
    );
    // The right token but a foreign Origin is refused too.
    let req = admin
        .http
        .post(format!("{}/api/v1/me/tokens", admin.base))
        .header("cookie", admin.cookie.clone().unwrap())
        .header("x-csrf-token", admin.csrf.clone().unwrap())
        .header("origin", "https://evil.example")
        .json(&json!({"name": "x", "scope": "read"}));
    assert_eq!(admin.raw(req).await.status, 403);
    // Reads need no token, and the token can be fetched again from /me.
    let me = admin.without_csrf().get("/api/v1/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["csrf_token"], admin.csrf.clone().unwrap().as_str());
    assert!(!audit_events(&admin, "access.csrf_rejected")
        .await
        .is_empty());
}

on_both_backends!(
    logout_ends_the_session_on_the_server,
    logout_everywhere_ends_every_session,
    a_password_change_ends_all_other_sessions,
    idle_sessions_expire,
    sessions_end_at_their_absolute_lifetime,
    lifetimes_follow_platform_settings,
    users_list_and_end_their_sessions,
    someone_elses_session_cannot_be_ended,
    cookie_writes_need_the_csrf_token,
);

//! First run: no default password; a one-time setup token creates the first admin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use serde_json::json;

async fn setup_token_creates_the_first_admin_once(s: &TestServer) {
    let token = s
        .setup_token
        .clone()
        .expect("a fresh server prints a setup token");
    assert!(token.starts_with("rws_"));
    let anon = s.anonymous();
    // Nobody can log in before setup: there is no default account.
    let r = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "admin", "password": "admin"}),
        )
        .await;
    assert_eq!(r.status, 401);

    let r = anon
        .post(
            "/api/v1/setup",
            json!({"setup_token": token, "username": ADMIN, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["is_admin"], true);

    let again = anon
        .post(
            "/api/v1/setup",
            json!({"setup_token": token, "username": "second", "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(again.status, 401);
    assert_eq!(again.code(), "invalid_setup_token");

    let admin = s.login(ADMIN, ADMIN_PASSWORD).await;
    let events = audit_events(&admin, "setup.*").await;
    assert!(events.iter().any(|e| e["event"] == "setup.completed"));
    assert!(events.iter().any(|e| e["event"] == "setup.token_rejected"));
}

async fn setup_refuses_weak_passwords_and_keeps_the_token(s: &TestServer) {
    let token = s.setup_token.clone().unwrap();
    let anon = s.anonymous();
    for (password, code) in [
        ("short", "weak_password"),
        ("password12345", "weak_password"),
        ("xxadmin-is-mexx", "weak_password"),
    ] {
        let r = anon
            .post(
                "/api/v1/setup",
                json!({"setup_token": token, "username": "admin", "password": password}),
            )
            .await;
        assert_eq!(r.status, 422, "{password}: {}", r.body);
        assert_eq!(r.code(), code);
    }
    let r = anon
        .post(
            "/api/v1/setup",
            json!({"setup_token": token, "username": "bad name", "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "invalid_username");
    // Nothing was half-written: the token still works.
    let r = anon
        .post(
            "/api/v1/setup",
            json!({"setup_token": token, "username": ADMIN, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

async fn setup_token_expires_after_an_hour(s: &TestServer) {
    let token = s.setup_token.clone().unwrap();
    s.clock.advance_secs(3601);
    let r = s
        .anonymous()
        .post(
            "/api/v1/setup",
            json!({"setup_token": token, "username": ADMIN, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 401);
}

async fn forged_setup_tokens_are_refused(s: &TestServer) {
    let anon = s.anonymous();
    for forged in [
        "",
        "rws_",
        "rws_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "' OR 1=1 --",
    ] {
        let r = anon
            .post(
                "/api/v1/setup",
                json!({"setup_token": forged, "username": ADMIN, "password": ADMIN_PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 401, "{forged}");
    }
}

on_both_backends!(
    setup_token_creates_the_first_admin_once,
    setup_refuses_weak_passwords_and_keeps_the_token,
    setup_token_expires_after_an_hour,
    forged_setup_tokens_are_refused,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_users_prints_no_setup_token() {
    let db = TestDatabase::sqlite().await.unwrap();
    let url = db.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let first = TestServer::start_with(Backend::Sqlite, |c| {
        c.database_url = Some(url.clone());
        c.data_dir = path.clone();
    })
    .await
    .unwrap();
    first.admin().await;
    first.stop().await;
    let second = TestServer::start_with(Backend::Sqlite, |c| {
        c.database_url = Some(url.clone());
        c.data_dir = path.clone();
    })
    .await
    .unwrap();
    assert!(second.setup_token.is_none());
    // The same master key was reused: the admin still logs in.
    second.login(ADMIN, ADMIN_PASSWORD).await;
    second.stop().await;
    db.cleanup().await;
}

//! Personal access tokens: shown once, scoped, expiring, revocable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use serde_json::json;

async fn a_token_is_shown_once_and_works_as_bearer(s: &TestServer) {
    let admin = s.admin().await;
    let r = admin
        .post(
            "/api/v1/me/tokens",
            json!({"name": "ci pipeline", "scope": "full"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("rwp_"));
    let listed = admin.get("/api/v1/me/tokens").await;
    let text = listed.text.clone();
    assert!(!text.contains(&token), "the list never shows the token");
    assert_eq!(listed.body[0]["name"], "ci pipeline");
    assert!(token.starts_with(
        listed.body[0]["prefix"]
            .as_str()
            .unwrap()
            .trim_end_matches('…')
    ));
    assert!(listed.body[0]["last_used_at"].is_null());

    let mut bearer = s.anonymous();
    bearer.bearer = Some(token.clone());
    let me = bearer.get("/api/v1/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["authenticated_by"], "token");
    assert!(me.body.get("csrf_token").is_none());
    // Bearer requests need no CSRF token: no browser sends them on its own.
    assert_eq!(bearer.get("/api/v1/users").await.status, 200);
    let r = bearer
        .post(
            "/api/v1/users",
            json!({"username": "bot-made", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // Last use is recorded: buffered, and written by the background flush
    // every few seconds (run here directly instead of waiting for it).
    let state = &s.running.state;
    state.hub.activity.flush(&state.hub.store).await.unwrap();
    let listed = admin.get("/api/v1/me/tokens").await;
    assert!(
        listed.body[0]["last_used_at"].is_string(),
        "{}",
        listed.body
    );
    let created = audit_events(&admin, "token.created").await;
    assert!(!serde_json::to_string(&created).unwrap().contains(&token));
}

async fn read_scoped_tokens_only_read(s: &TestServer) {
    let admin = s.admin().await;
    let reader = s.token_client(&admin, "read").await;
    assert_eq!(reader.get("/api/v1/users").await.status, 200);
    assert_eq!(reader.get("/api/v1/audit").await.status, 200);
    let r = reader
        .post(
            "/api/v1/users",
            json!({"username": "x1", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "token_scope");
    let r = reader
        .post(
            "/api/v1/me/tokens",
            json!({"name": "escalate", "scope": "full"}),
        )
        .await;
    assert_eq!(r.status, 403);
}

async fn a_token_never_grants_more_than_its_user_has(s: &TestServer) {
    let admin = s.admin().await;
    let alice = s.user(&admin, "alice").await;
    let full = s.token_client(&alice, "full").await;
    assert_eq!(full.get("/api/v1/users").await.status, 403);
    assert_eq!(full.get("/api/v1/audit").await.status, 403);
}

async fn revoked_and_expired_tokens_stop_working(s: &TestServer) {
    let admin = s.admin().await;
    let r = admin
        .post(
            "/api/v1/me/tokens",
            json!({"name": "short", "scope": "read", "expires_in_days": 1}),
        )
        .await;
    assert_eq!(r.status, 201);
    let mut short = s.anonymous();
    short.bearer = Some(r.body["token"].as_str().unwrap().to_string());
    assert_eq!(short.get("/api/v1/me").await.status, 200);
    s.clock.advance_secs(86_400);
    let r = short.get("/api/v1/me").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "invalid_token");

    let admin = s.login(ADMIN, ADMIN_PASSWORD).await;
    let r = admin
        .post("/api/v1/me/tokens", json!({"name": "rev", "scope": "read"}))
        .await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let mut rev = s.anonymous();
    rev.bearer = Some(r.body["token"].as_str().unwrap().to_string());
    assert_eq!(rev.get("/api/v1/me").await.status, 200);
    assert_eq!(
        admin
            .delete(&format!("/api/v1/me/tokens/{id}"))
            .await
            .status,
        204
    );
    assert_eq!(
        rev.get("/api/v1/me").await.status,
        401,
        "revocation is immediate"
    );
    assert_eq!(
        admin
            .delete(&format!("/api/v1/me/tokens/{id}"))
            .await
            .status,
        404
    );
    let events: Vec<String> = audit_events(&admin, "token.*")
        .await
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert!(events.contains(&"token.revoked".to_string()));
    assert!(events.contains(&"token.rejected".to_string()));
}

async fn someone_elses_token_cannot_be_revoked(s: &TestServer) {
    let admin = s.admin().await;
    let alice = s.user(&admin, "alice").await;
    let r = admin
        .post(
            "/api/v1/me/tokens",
            json!({"name": "mine", "scope": "read"}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap();
    assert_eq!(
        alice
            .delete(&format!("/api/v1/me/tokens/{id}"))
            .await
            .status,
        404
    );
    assert_eq!(
        alice
            .get("/api/v1/me/tokens")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

async fn malformed_bearer_credentials_are_refused(s: &TestServer) {
    s.admin().await;
    let anon = s.anonymous();
    for value in [
        "Bearer",
        "Bearer rwp_short",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer rwp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer rwc_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let req = anon
            .http
            .get(format!("{}/api/v1/me", anon.base))
            .header("authorization", value);
        let r = anon.raw(req).await;
        assert_eq!(r.status, 401, "{value}");
    }
}

async fn bad_token_requests_are_refused_with_reasons(s: &TestServer) {
    let admin = s.admin().await;
    for body in [
        json!({"name": "", "scope": "read"}),
        json!({"name": "x", "scope": "root"}),
        json!({"name": "x", "scope": "read", "expires_in_days": 0}),
        json!({"name": "x", "scope": "read", "expires_in_days": 10000}),
        json!({"name": "x\u{0007}", "scope": "read"}),
    ] {
        let r = admin.post("/api/v1/me/tokens", body.clone()).await;
        assert!(r.status == 422 || r.status == 400, "{body}: {}", r.status);
        assert!(!r.code().is_empty());
    }
    assert_eq!(
        admin
            .get("/api/v1/me/tokens")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

on_both_backends!(
    a_token_is_shown_once_and_works_as_bearer,
    read_scoped_tokens_only_read,
    a_token_never_grants_more_than_its_user_has,
    revoked_and_expired_tokens_stop_working,
    someone_elses_token_cannot_be_revoked,
    malformed_bearer_credentials_are_refused,
    bad_token_requests_are_refused_with_reasons,
);

/// Guessing tokens from one address slows that address down, and nobody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guessing_is_throttled_per_client_address() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await
    .unwrap();
    let admin = s.admin().await;
    let good = s.token_client(&admin, "read").await;
    let from = |client: &Client, ip: &str, token: &str| {
        client
            .http
            .get(format!("{}/api/v1/me", client.base))
            .header("x-forwarded-for", ip)
            .header("authorization", format!("Bearer {token}"))
    };
    let guess = format!("rwp_{}", "A".repeat(43));
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(admin.raw(from(&admin, "198.51.100.7", &guess)).await.status);
    }
    assert!(statuses.contains(&401));
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    let good_token = good.bearer.clone().unwrap();
    assert_eq!(
        admin
            .raw(from(&admin, "198.51.100.7", &good_token))
            .await
            .status,
        429
    );
    assert_eq!(
        admin
            .raw(from(&admin, "203.0.113.9", &good_token))
            .await
            .status,
        200
    );
    let r = admin
        .raw(
            admin
                .http
                .post(format!("{}/api/v1/auth/login", admin.base))
                .header("x-forwarded-for", "203.0.113.9")
                .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 200, "other addresses and accounts are unaffected");
    s.stop().await;
}

//! TOTP enrolment, the MFA login step, recovery codes, admin reset and the
//! platform-wide MFA requirement.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use redwall_crypto::totp::TotpSecret;
use redwall_server::clock::Clock;
use serde_json::json;

fn code(s: &TestServer, secret: &TotpSecret) -> String {
    secret.code_at((s.clock.now() / 1_000_000) as u64)
}

/// Enrols `client`'s user; returns the secret and the recovery codes.
async fn enrol(s: &TestServer, client: &Client) -> (TotpSecret, Vec<String>) {
    let r = client.post("/api/v1/me/mfa/enrol", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/Redwall:"));
    let svg = r.body["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"));
    let secret = TotpSecret::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
    let r = client
        .post("/api/v1/me/mfa/confirm", json!({"code": "000000"}))
        .await;
    if r.status == 200 {
        panic!("a wrong code confirmed enrolment");
    }
    let r = client
        .post("/api/v1/me/mfa/confirm", json!({"code": code(s, &secret)}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let codes: Vec<String> = r.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

async fn login_needs_the_second_factor_after_enrolment(s: &TestServer) {
    let admin = s.admin().await;
    let (secret, _) = enrol(s, &admin).await;
    let status = admin.get("/api/v1/me/mfa").await;
    assert_eq!(status.body["enabled"], true);
    assert_eq!(status.body["recovery_codes_remaining"], 10);

    let anon = s.anonymous();
    let r = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "mfa_required");
    assert!(
        r.headers.get("set-cookie").is_none(),
        "no session before the second factor"
    );
    let challenge = r.body["mfa_token"].as_str().unwrap().to_string();

    let wrong = anon
        .post(
            "/api/v1/auth/mfa",
            json!({"mfa_token": challenge, "code": "123456"}),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.code(), "invalid_mfa_code");

    // Next time step, so the code is not the one used at enrolment.
    s.clock.advance_secs(30);
    let totp = code(s, &secret);
    let r = anon
        .post(
            "/api/v1/auth/mfa",
            json!({"mfa_token": challenge, "code": totp}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ok");
    let mut c = s.anonymous();
    c.adopt_session(&r);
    assert_eq!(c.get("/api/v1/me").await.body["mfa_enabled"], true);

    // The same code cannot be used twice.
    let r = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD, "totp": totp}),
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(!audit_events(&c, "mfa.verify_failed").await.is_empty());
}

async fn one_step_login_with_totp(s: &TestServer) {
    let admin = s.admin().await;
    let (secret, _) = enrol(s, &admin).await;
    s.clock.advance_secs(30);
    let r = s
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD, "totp": code(s, &secret)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ok");
}

async fn challenges_expire(s: &TestServer) {
    let admin = s.admin().await;
    let (secret, _) = enrol(s, &admin).await;
    let anon = s.anonymous();
    let r = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD}),
        )
        .await;
    let challenge = r.body["mfa_token"].as_str().unwrap().to_string();
    s.clock.advance_secs(301);
    let r = anon
        .post(
            "/api/v1/auth/mfa",
            json!({"mfa_token": challenge, "code": code(s, &secret)}),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "invalid_mfa_token");
    let r = anon
        .post(
            "/api/v1/auth/mfa",
            json!({"mfa_token": "rwm_tampered", "code": "123456"}),
        )
        .await;
    assert_eq!(r.status, 401);
}

async fn recovery_codes_work_once_each(s: &TestServer) {
    let admin = s.admin().await;
    let (_, codes) = enrol(s, &admin).await;
    let anon = s.anonymous();
    let r = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD, "totp": codes[0].to_uppercase()}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD, "totp": codes[0]}),
        )
        .await;
    assert_eq!(r.status, 401);
    let status = admin.get("/api/v1/me/mfa").await;
    assert_eq!(status.body["recovery_codes_remaining"], 9);
    let used = audit_events(&admin, "mfa.recovery_code_used").await;
    assert_eq!(used[0]["details"]["remaining"], 9);
    // Codes are never in the log.
    let log = admin.get("/api/v1/audit/export").await.text;
    assert!(!log.contains(&codes[1]));
}

async fn an_admin_resets_a_lost_device(s: &TestServer) {
    let admin = s.admin().await;
    let alice = s.user(&admin, "alice").await;
    let (_secret, _) = enrol(s, &alice).await;
    let me = alice.get("/api/v1/me").await;
    let id = me.body["id"].as_str().unwrap();
    assert_eq!(
        admin
            .delete(&format!("/api/v1/users/{id}/mfa"))
            .await
            .status,
        204
    );
    // Her sessions ended, and she logs in with the password alone.
    assert_eq!(alice.get("/api/v1/me").await.status, 401);
    let again = s.login("alice", USER_PASSWORD).await;
    assert_eq!(again.get("/api/v1/me/mfa").await.body["enabled"], false);
    let resets = audit_events(&admin, "mfa.reset").await;
    assert_eq!(resets[0]["actor_name"], ADMIN);
    assert_eq!(resets[0]["target"], format!("user:{id}"));
}

async fn turning_mfa_off_needs_password_and_code(s: &TestServer) {
    let admin = s.admin().await;
    let (secret, _) = enrol(s, &admin).await;
    s.clock.advance_secs(30);
    let r = admin
        .delete_with(
            "/api/v1/me/mfa",
            json!({"password": "wrong-password-9", "code": code(s, &secret)}),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = admin
        .delete_with(
            "/api/v1/me/mfa",
            json!({"password": ADMIN_PASSWORD, "code": code(s, &secret)}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(admin.get("/api/v1/me/mfa").await.body["enabled"], false);
}

async fn required_mfa_sends_users_to_enrol_first(s: &TestServer) {
    let admin = s.admin().await;
    let alice = s.user(&admin, "alice").await;
    let token = s.token_client(&alice, "full").await;
    let (_, _) = enrol(s, &admin).await;
    let r = admin
        .patch("/api/v1/settings", json!({"require_mfa": true}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Within the settings cache lifetime.
    s.clock.advance_secs(3);

    let r = alice
        .post("/api/v1/me/tokens", json!({"name": "ci", "scope": "full"}))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "mfa_enrolment_required");
    let r = admin.get("/api/v1/users").await;
    assert_eq!(r.status, 200, "an enrolled admin is not held back");
    let me = alice.get("/api/v1/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["mfa_enrolment_required"], true);
    let _ = token;
    let (_, _) = enrol(s, &alice).await;
    let r = alice
        .post("/api/v1/me/tokens", json!({"name": "ci", "scope": "full"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // MFA cannot be turned off while it is required.
    let r = alice
        .delete_with(
            "/api/v1/me/mfa",
            json!({"password": USER_PASSWORD, "code": "000000"}),
        )
        .await;
    assert_eq!(r.status, 403);
}

on_both_backends!(
    login_needs_the_second_factor_after_enrolment,
    one_step_login_with_totp,
    challenges_expire,
    recovery_codes_work_once_each,
    an_admin_resets_a_lost_device,
    turning_mfa_off_needs_password_and_code,
    required_mfa_sends_users_to_enrol_first,
);

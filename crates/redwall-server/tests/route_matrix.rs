//! Walks every route of the API with every kind of caller and checks that
//! the request is allowed exactly when the permission table says so. A new
//! route is covered the moment it is added to the table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use redwall_policy::access::{decide, Credential, TokenScope};
use redwall_policy::permission::PlatformRole;
use redwall_server::api::routes;
use redwall_server::auth::guard::Access;
use serde_json::json;

#[derive(Clone, Copy, Debug)]
enum Caller {
    Anonymous,
    Session(PlatformRole),
    Token(PlatformRole, TokenScope),
    PendingMfaSession,
}

const UNKNOWN_ID: &str = "0123456789abcdef0123456789abcdef";

async fn session_for(s: &TestServer, admin: &Client, role: PlatformRole, n: usize) -> Client {
    match role {
        PlatformRole::Admin => s.login(ADMIN, ADMIN_PASSWORD).await,
        PlatformRole::User => s.user(admin, &format!("m{n}")).await,
    }
}

async fn client_for(s: &TestServer, admin: &Client, caller: Caller, n: usize) -> Client {
    match caller {
        Caller::Anonymous => s.anonymous(),
        Caller::Session(role) => session_for(s, admin, role, n).await,
        Caller::PendingMfaSession => session_for(s, admin, PlatformRole::User, n).await,
        Caller::Token(role, scope) => {
            let owner = session_for(s, admin, role, n).await;
            let scope = if scope == TokenScope::Read {
                "read"
            } else {
                "full"
            };
            s.token_client(&owner, scope).await
        }
    }
}

fn expected(caller: Caller, access: Access) -> Option<bool> {
    let Access::Permission(p) = access else {
        return None;
    };
    Some(match caller {
        Caller::Anonymous => false,
        Caller::Session(role) => decide(
            role,
            Credential::Session {
                mfa_enrolment_pending: false,
            },
            p,
        )
        .is_ok(),
        Caller::Token(role, scope) => decide(role, Credential::Token { scope }, p).is_ok(),
        Caller::PendingMfaSession => decide(
            PlatformRole::User,
            Credential::Session {
                mfa_enrolment_pending: true,
            },
            p,
        )
        .is_ok(),
    })
}

async fn walk(s: &TestServer, callers: &[Caller], require_mfa: bool) {
    let mut admin = s.admin().await;
    if require_mfa {
        // Enrol the admin first, so only the new user is held back.
        let r = admin.post("/api/v1/me/mfa/enrol", json!({})).await;
        let secret =
            redwall_crypto::totp::TotpSecret::from_base32(r.body["secret"].as_str().unwrap())
                .unwrap();
        use redwall_server::clock::Clock;
        let code = secret.code_at((s.clock.now() / 1_000_000) as u64);
        assert_eq!(
            admin
                .post("/api/v1/me/mfa/confirm", json!({"code": code}))
                .await
                .status,
            200
        );
        assert_eq!(
            admin
                .patch("/api/v1/settings", json!({"require_mfa": true}))
                .await
                .status,
            200
        );
    }
    let mut n = 0;
    for route in routes() {
        for &caller in callers {
            n += 1;
            // Fresh callers per request: some routes end the caller's session
            // (logout everywhere ends the admin's too, so log in again then).
            if admin.get("/api/v1/me").await.status != 200 {
                admin = s.login(ADMIN, ADMIN_PASSWORD).await;
            }
            let client = client_for(s, &admin, caller, n).await;
            let path = route.path.replace("{id}", UNKNOWN_ID);
            let body = (route.method != reqwest::Method::GET).then(|| json!({}));
            let r = client.send(route.method.clone(), &path, body).await;
            let what = format!(
                "{caller:?} {} {} -> {} {}",
                route.method, route.path, r.status, r.text
            );
            assert!(r.status < 500, "{what}");
            match expected(caller, route.access) {
                None => assert!(
                    r.status != 403 && r.code() != "unauthenticated",
                    "public route refused: {what}"
                ),
                Some(true) => assert!(
                    r.status != 401 && r.status != 403,
                    "should be allowed: {what}"
                ),
                Some(false) => assert!(
                    r.status == 401 || r.status == 403,
                    "should be refused: {what}"
                ),
            }
        }
    }
}

async fn every_route_answers_every_caller_as_the_table_says(s: &TestServer) {
    use PlatformRole::*;
    walk(
        s,
        &[
            Caller::Anonymous,
            Caller::Session(User),
            Caller::Session(Admin),
            Caller::Token(User, TokenScope::Read),
            Caller::Token(User, TokenScope::Full),
            Caller::Token(Admin, TokenScope::Read),
            Caller::Token(Admin, TokenScope::Full),
        ],
        false,
    )
    .await;
}

async fn a_user_who_must_enrol_reaches_only_mfa_and_logout(s: &TestServer) {
    walk(s, &[Caller::PendingMfaSession], true).await;
}

on_both_backends!(
    every_route_answers_every_caller_as_the_table_says,
    a_user_who_must_enrol_reaches_only_mfa_and_logout,
);

#[test]
fn every_route_is_in_the_openapi_document_with_its_permission() {
    let doc = serde_json::to_value(redwall_server::api::openapi::document()).unwrap();
    for route in routes() {
        let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing from the OpenAPI document",
            route.method,
            route.path
        );
        match route.access {
            Access::Public => assert!(op.get("x-permission").is_none()),
            Access::Permission(p) => assert_eq!(op["x-permission"], p.name()),
        }
    }
}

#[test]
fn routes_are_unique() {
    let mut seen = std::collections::HashSet::new();
    for r in routes() {
        assert!(
            seen.insert((r.method.clone(), r.path)),
            "{} {} twice",
            r.method,
            r.path
        );
    }
}

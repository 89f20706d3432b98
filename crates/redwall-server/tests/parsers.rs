//! Property tests for what parses untrusted input before any lookup: the
//! bearer header, the session cookie, the login body, and the login endpoint
//! fed random bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use axum::http::{HeaderMap, HeaderValue};
use common::*;
use proptest::prelude::*;
use redwall_server::api::auth::LoginRequest;
use redwall_server::auth::session::cookie_token;
use redwall_server::auth::token::bearer;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn bearer_parsing_never_panics_and_takes_only_bearer(value in "\\PC{0,200}") {
        if let Some(token) = bearer(&value) {
            prop_assert!(value.to_ascii_lowercase().starts_with("bearer "));
            prop_assert!(value.ends_with(token) || value.trim_end().ends_with(token));
        }
    }

    #[test]
    fn cookie_parsing_finds_only_our_cookie(prefix in "[a-z_=; ]{0,40}", token in "[A-Za-z0-9_-]{0,60}", noise in "\\PC{0,80}") {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("{prefix}; redwall_session={token}; {noise}")) {
            h.insert("cookie", v);
            let found = cookie_token(&h, false);
            prop_assert!(found.is_some());
            // Over HTTPS only the __Host- cookie counts.
            if !noise.contains("__Host-redwall_session=") {
                prop_assert_eq!(cookie_token(&h, true), None);
            }
        }
        let mut other = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("xredwall_session={token}; {noise}")) {
            other.insert("cookie", v);
            if !noise.contains("redwall_session=") {
                prop_assert_eq!(cookie_token(&other, false), None);
            }
        }
    }

    #[test]
    fn login_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = serde_json::from_slice::<LoginRequest>(&bytes);
    }

    #[test]
    fn login_bodies_with_the_right_shape_parse(username in "\\PC{0,80}", password in "\\PC{0,80}") {
        let body = serde_json::json!({"username": username, "password": password});
        let parsed: LoginRequest = serde_json::from_value(body).unwrap();
        prop_assert_eq!(parsed.username, username);
        prop_assert!(parsed.totp.is_none());
    }
}

/// Random bodies at the real endpoint: always a 4xx with a JSON error.
async fn random_login_bodies_get_json_4xx(s: &TestServer) {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let _admin = s.admin().await;
    let mut runner = TestRunner::deterministic();
    let strategy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| b),
        (
            "\\PC{0,70}",
            "\\PC{0,70}",
            proptest::option::of("\\PC{0,12}")
        )
            .prop_map(|(u, p, t)| serde_json::to_vec(
                &serde_json::json!({"username": u, "password": p, "totp": t})
            )
            .unwrap()),
    ];
    let anon = s.anonymous();
    for _ in 0..150 {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        let req = anon
            .http
            .post(format!("{}/api/v1/auth/login", anon.base))
            .header("content-type", "application/json")
            .body(body.clone());
        let r = anon.raw(req).await;
        assert!(
            (400..500).contains(&r.status),
            "{} for {:?}",
            r.status,
            String::from_utf8_lossy(&body)
        );
        assert!(r.body["error"]["code"].is_string(), "{}", r.text);
        // Keep the client throttle from turning the rest into 429s (also a 4xx, but less informative).
        s.clock.advance_secs(3600);
    }
}

on_both_backends!(random_login_bodies_get_json_4xx);

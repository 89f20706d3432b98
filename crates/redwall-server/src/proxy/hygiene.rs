//! What crosses the proxy between a client and a flow. The rules live in
//! `redwall_headers` (shared with the agent's site endpoints); this module
//! feeds them what the server saw.
//!
//! Towards the instance: nothing in our header names (in any spelling: a
//! framework may read `x_redwall_user` as `x-redwall-user`), none of our
//! cookies, no Redwall credential in any scheme, and forwarding headers that
//! say what Redwall saw instead of what the client claimed.
//!
//! Back from the instance: no cookie that is, or could be read as, one of
//! ours, and no challenge a browser could answer with a Redwall password.
//!
//! Who owns authentication on a route decides the rest. On a public route
//! of an instance with no `basic` rule the instance does: its own basic
//! credentials and challenges pass (but never our realm). Once any rule of
//! an instance asks for a Redwall password, a browser may send that
//! password to every path below the one it was asked on (and, on the same
//! origin, to any path a challenge in our realm names), so on such an
//! instance no basic credential reaches a flow and no flow challenges.
//! Everywhere else (editor, session, API-key and basic rules) Redwall
//! decides, and the instance's challenges are dropped.

use crate::net::client::ClientInfo;
use axum::http::HeaderMap;

pub use redwall_headers::{
    drop_our_cookies, filter_challenges, is_redwall_cookie, set_cookie_name, Authorization,
};

/// Prepares a request's headers for an instance: removes what it must never
/// see and says who the client is (`redwall_headers`, shared with the
/// agent's site endpoints).
pub fn prepare_request(headers: &mut HeaderMap, client: &ClientInfo, authorization: Authorization) {
    // A copy of the Host value (it shares the request's bytes), not a
    // `String`: the headers are changed while it is read.
    let host = crate::net::authority::value(headers);
    redwall_headers::prepare_request(
        headers,
        client.ip,
        client.https,
        host.as_ref().and_then(|v| v.to_str().ok()),
        authorization,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderName, HeaderValue};
    use base64::Engine as _;
    use redwall_runtime::{EDITOR_TOKEN_HEADER, ENDPOINT_TOKEN_HEADER, USER_HEADER};
    use std::net::IpAddr;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_bytes(v),
            ) {
                h.append(k, v);
            }
        }
        h
    }

    fn client(ip: [u8; 4], https: bool) -> ClientInfo {
        ClientInfo {
            ip: IpAddr::from(ip),
            user_agent: None,
            https,
        }
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn our_headers_and_cookies_never_reach_an_instance() {
        let mut h = headers(&[
            (EDITOR_TOKEN_HEADER, b"forged"),
            (ENDPOINT_TOKEN_HEADER, b"forged"),
            (USER_HEADER, b"admin"),
            ("x_redwall_user", b"admin"),
            ("X-Redwall_Anything", b"forged"),
            ("x-csrf-token", b"t"),
            ("x_api_key", b"rwk_x"),
            ("authorization", b"Bearer rwk_x"),
            ("cookie", b"redwall_session=rwc_a; theme=dark"),
            ("cookie", b"__Host-redwall_pass=p; lang=caf\xe9"),
            ("accept", b"*/*"),
        ]);
        prepare_request(&mut h, &client([10, 0, 0, 1], true), Authorization::Drop);
        assert_eq!(
            names(&h),
            [
                "accept",
                "cookie",
                "forwarded",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-real-ip"
            ]
        );
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE].as_bytes(), b"theme=dark; lang=caf\xe9");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=10.0.0.1;proto=https");
    }

    #[test]
    fn forwarding_headers_say_what_redwall_saw() {
        let mut h = headers(&[
            ("host", b"plant.example.test"),
            ("forwarded", b"for=6.6.6.6"),
            ("x-forwarded-for", b"6.6.6.6"),
            ("X_Forwarded_Host", b"evil"),
            ("x-forwarded-port", b"1"),
            ("x-real-ip", b"6.6.6.6"),
            ("true-client-ip", b"6.6.6.6"),
        ]);
        prepare_request(
            &mut h,
            &client([127, 0, 0, 1], false),
            Authorization::Foreign,
        );
        assert_eq!(h["x-forwarded-host"], "plant.example.test");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;proto=http;host=\"plant.example.test\""
        );
        assert!(h.get("x-forwarded-port").is_none());
        assert!(h.get("true-client-ip").is_none());
        assert!(!h.iter().any(|(_, v)| v
            .as_bytes()
            .windows(7)
            .any(|w| w == b"6.6.6.6" || w == b"evil")));
        let mut v6 = HeaderMap::new();
        let c = ClientInfo {
            ip: "2001:db8::1".parse().unwrap_or(IpAddr::from([0; 4])),
            user_agent: None,
            https: true,
        };
        prepare_request(&mut v6, &c, Authorization::Foreign);
        assert_eq!(v6["forwarded"], "for=\"[2001:db8::1]\";proto=https");
    }

    #[test]
    fn redwall_tokens_never_pass_and_basic_only_where_the_instance_owns_it() {
        let token = format!("rwp_{}", "A".repeat(43));
        let basic_token = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("ci:{token}"))
        );
        let basic_device = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("device:s3cret")
        );
        let cases: [(String, Authorization, bool); 10] = [
            (format!("Bearer {token}"), Authorization::Foreign, false),
            (
                format!("bearer RWK_{}", "b".repeat(43)),
                Authorization::Foreign,
                false,
            ),
            (
                format!("Token token=\"{token}\""),
                Authorization::Foreign,
                false,
            ),
            (token.clone(), Authorization::Foreign, false),
            (basic_token.clone(), Authorization::Foreign, false),
            ("Bearer device-own".into(), Authorization::Foreign, true),
            (basic_device.clone(), Authorization::Foreign, true),
            (basic_device.clone(), Authorization::NoBasic, false),
            ("Bearer device-own".into(), Authorization::NoBasic, true),
            ("Bearer device-own".into(), Authorization::Drop, false),
        ];
        for (value, authorization, passes) in cases {
            let mut h = headers(&[("authorization", value.as_bytes())]);
            prepare_request(&mut h, &client([127, 0, 0, 1], false), authorization);
            assert_eq!(
                h.contains_key(header::AUTHORIZATION),
                passes,
                "{value} {authorization:?}"
            );
        }
    }

    // The answers' cookies and challenges are the shared crate's alone
    // (redwall_headers' own tests).
}

//! CSRF protection for cookie-authenticated requests that change state.
//!
//! The token is derived from the session secret with a keyed digest, so it
//! needs no storage, differs per session and cannot be computed without the
//! cookie (which scripts cannot read). Requests must also not come from a
//! foreign Origin.

use axum::http::HeaderMap;
use redwall_crypto::keyring::Keyring;

pub const HEADER: &str = "x-csrf-token";

pub use redwall_hub::sessions::csrf_token_for as token_for_session;

/// True when the request carries the session's CSRF token and no foreign Origin.
pub fn request_is_same_site(keyring: &Keyring, session_token: &str, headers: &HeaderMap) -> bool {
    let expected = token_for_session(keyring, session_token);
    let presented = headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    redwall_crypto::constant_time_eq(expected.as_bytes(), presented.as_bytes())
        && origin_matches_host(headers)
}

/// For pages we serve but do not write (proxied Node-RED): the browser must
/// say the request is same-origin, by Sec-Fetch-Site or by an Origin that
/// names the host. A request that says neither is refused.
pub fn browser_says_same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin" && origin_matches_host(headers);
    }
    headers.contains_key("origin") && origin_matches_host(headers)
}

/// An Origin header, when present, must name the host the request was sent to.
pub fn origin_matches_host(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = crate::net::authority::of(headers) else {
        return false;
    };
    origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .is_some_and(|origin_host| origin_host.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origin_must_match_host() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("redwall.example:8443"));
        assert!(origin_matches_host(&h));
        h.insert(
            "origin",
            HeaderValue::from_static("https://redwall.example:8443"),
        );
        assert!(origin_matches_host(&h));
        h.insert("origin", HeaderValue::from_static("https://evil.example"));
        assert!(!origin_matches_host(&h));
        h.insert("origin", HeaderValue::from_static("null"));
        assert!(!origin_matches_host(&h));
    }

    #[test]
    fn tokens_are_per_session() {
        let k = Keyring::generate();
        assert_ne!(
            token_for_session(&k, "rwc_a"),
            token_for_session(&k, "rwc_b")
        );
        assert_eq!(
            token_for_session(&k, "rwc_a"),
            token_for_session(&k, "rwc_a")
        );
    }
}

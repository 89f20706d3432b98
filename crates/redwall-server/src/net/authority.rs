//! The authority a request was sent to, read one way everywhere.
//!
//! HTTP/2, which browsers speak to our HTTPS listener, carries it as the
//! `:authority` pseudo-header: hyper puts that in the request's URI and does
//! not copy it into `Host`. HTTP/1.1 carries it in `Host`, or in an
//! absolute-form target, which then wins (RFC 9112 §3.2.2). The front door
//! calls [`canonicalize`] on every request before anything reads it, so the
//! later readers (the CSRF Origin check, the proxy's instance host, the
//! console and the OpenID Connect redirect) all call [`of`] and agree.

use axum::http::header::HOST;
use axum::http::{HeaderMap, HeaderValue, Request};

/// Writes the URI's authority, when it has one, into `Host` (replacing a
/// `Host` that disagrees with it). Userinfo is never part of the result.
pub fn canonicalize<B>(request: &mut Request<B>) {
    let Some(authority) = request.uri().authority() else {
        return;
    };
    let value = match authority.port() {
        Some(port) => format!("{}:{}", authority.host(), port.as_str()),
        None => authority.host().to_string(),
    };
    match HeaderValue::from_str(&value) {
        Ok(v) => {
            request.headers_mut().insert(HOST, v);
        }
        // Not representable as a header: no authority rather than a wrong one.
        Err(_) => {
            request.headers_mut().remove(HOST);
        }
    }
}

/// The request's authority (`host[:port]`) as the client named it, once the
/// front door has canonicalised it.
pub fn of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty())
}

/// The value [`of`] reads, for a caller that goes on to change the headers
/// (a clone of a `HeaderValue` shares its bytes).
pub fn value(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(HOST)
        .filter(|v| v.to_str().is_ok_and(|h| !h.is_empty()))
        .cloned()
}

/// The host part of [`of`], lowercased, without the port.
pub fn host_name(headers: &HeaderMap) -> Option<String> {
    host(headers).map(|h| h.to_ascii_lowercase())
}

/// The host part of [`of`] as sent (any case), without the port.
pub fn host(headers: &HeaderMap) -> Option<&str> {
    let authority = of(headers)?;
    Some(if authority.starts_with('[') {
        // An IPv6 literal: keep the brackets, drop a port after them.
        authority
            .split_once(']')
            .map_or(authority, |(h, _)| &authority[..h.len() + 1])
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap_or_default()
    }

    #[test]
    fn http2_authority_becomes_the_host() {
        // What hyper hands us for an HTTP/2 request: no Host header at all.
        let mut r = request("https://127.0.0.1:8443/setup", None);
        canonicalize(&mut r);
        assert_eq!(of(r.headers()), Some("127.0.0.1:8443"));
        assert_eq!(host_name(r.headers()).as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn the_uri_authority_wins_over_a_disagreeing_host() {
        let mut r = request("https://a1.localhost:8443/", Some("evil.example"));
        canonicalize(&mut r);
        assert_eq!(of(r.headers()), Some("a1.localhost:8443"));
    }

    #[test]
    fn userinfo_is_dropped() {
        let mut r = request("https://user:pw@redwall.example/", None);
        canonicalize(&mut r);
        assert_eq!(of(r.headers()), Some("redwall.example"));
    }

    #[test]
    fn origin_form_keeps_the_host_header() {
        let mut r = request("/api/v1/me", Some("Redwall.Example:8443"));
        canonicalize(&mut r);
        assert_eq!(of(r.headers()), Some("Redwall.Example:8443"));
        assert_eq!(host_name(r.headers()).as_deref(), Some("redwall.example"));
        assert_eq!(of(request("/", None).headers()), None);
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        let mut r = request("https://[::1]:8443/", None);
        canonicalize(&mut r);
        assert_eq!(host_name(r.headers()).as_deref(), Some("[::1]"));
    }
}

//! Security headers on every response.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// Whether to send HSTS (only when clients reach us over HTTPS).
#[derive(Clone, Copy)]
pub struct HeaderPolicy {
    pub hsts: bool,
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub async fn security_headers(
    State(policy): State<HeaderPolicy>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    // The API's layer: every answer through it is Redwall's own (instance
    // answers leave through the front door, which says whose they are).
    policy.apply(&mut response, false);
    response
}

impl HeaderPolicy {
    /// Adds the headers to an answer: all of them to Redwall's own, only
    /// those that cannot break a page to an instance's (`from_instance`;
    /// the proxy says so in `proxy::Served`).
    pub fn apply(self, response: &mut Response, from_instance: bool) {
        let h = response.headers_mut();
        if from_instance {
            // Node-RED's pages set their own policy; ours (script-src 'self'
            // only) would break the editor. Add only what cannot break a page.
            h.entry(header::X_CONTENT_TYPE_OPTIONS)
                .or_insert(HeaderValue::from_static("nosniff"));
            h.entry(header::REFERRER_POLICY)
                .or_insert(HeaderValue::from_static("same-origin"));
        } else {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            // Not "no-referrer": with it, browsers send `Origin: null` on
            // same-site form posts, and our CSRF checks need the real
            // origin. "same-origin" still sends nothing to other sites.
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
            h.insert(
                "cross-origin-opener-policy",
                HeaderValue::from_static("same-origin"),
            );
            h.entry(header::CACHE_CONTROL)
                .or_insert(HeaderValue::from_static("no-store"));
        }
        if self.hsts {
            h.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000; includeSubDomains"),
            );
        }
    }
}

//! Who is on the other end of the socket.
//!
//! The address comes from the socket, unless the peer is a listed trusted
//! proxy: only then is X-Forwarded-For honoured (its right-most entry that is
//! not itself a trusted proxy), and X-Forwarded-Proto decides whether the
//! client used HTTPS.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub ip: IpAddr,
    pub user_agent: Option<String>,
    /// The client reached Redwall over HTTPS (directly or through a trusted proxy).
    pub https: bool,
}

impl ClientInfo {
    /// Where the request came from, as the hub's audit entries record it.
    pub fn origin(&self) -> redwall_hub::Origin {
        redwall_hub::Origin {
            ip: self.ip,
            user_agent: self.user_agent.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ClientResolver {
    pub trusted_proxies: Arc<Vec<IpNet>>,
    pub tls: bool,
}

impl ClientResolver {
    pub fn for_state(state: &crate::state::AppState) -> Self {
        ClientResolver {
            trusted_proxies: Arc::new(state.config.server.trusted_proxies.clone()),
            tls: state.tls,
        }
    }

    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> ClientInfo {
        let user_agent = headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return ClientInfo {
                ip: peer,
                user_agent,
                https: self.tls,
            };
        }
        // Walk X-Forwarded-For from the right: each hop was appended by the
        // proxy before it, so the first untrusted one is the real client.
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let ip = forwarded
            .iter()
            .rev()
            .find(|ip| !trusted(ip))
            .copied()
            .unwrap_or(peer);
        let https = self.tls
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        ClientInfo {
            ip,
            user_agent,
            https,
        }
    }
}

/// Middleware that puts a [`ClientInfo`] into the request's extensions.
pub async fn attach_client_info(
    State(resolver): State<ClientResolver>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let info = resolver.resolve(peer, request.headers());
    request.extensions_mut().insert(info);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn resolver(proxies: &[&str]) -> ClientResolver {
        ClientResolver {
            trusted_proxies: Arc::new(proxies.iter().filter_map(|p| p.parse().ok()).collect()),
            tls: false,
        }
    }

    fn headers(xff: &str, proto: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(xff) {
            h.insert("x-forwarded-for", v);
        }
        if let Ok(v) = HeaderValue::from_str(proto) {
            h.insert("x-forwarded-proto", v);
        }
        h
    }

    #[test]
    fn forwarded_headers_from_strangers_are_ignored() {
        let r = resolver(&[]);
        let info = r.resolve(
            "203.0.113.9".parse().unwrap_or(IpAddr::from([0; 4])),
            &headers("1.2.3.4", "https"),
        );
        assert_eq!(info.ip.to_string(), "203.0.113.9");
        assert!(!info.https);
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let r = resolver(&["10.0.0.0/8"]);
        let info = r.resolve(
            "10.0.0.2".parse().unwrap_or(IpAddr::from([0; 4])),
            &headers("6.6.6.6, 198.51.100.7, 10.0.0.5", "https"),
        );
        // 6.6.6.6 was supplied by the client itself; the last untrusted hop is the truth.
        assert_eq!(info.ip.to_string(), "198.51.100.7");
        assert!(info.https);
    }
}

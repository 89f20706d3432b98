//! The client side of a relay: a stream of an agent's tunnel held by
//! another replica (`redwall_hub::relay`, `api/agent_relay.rs`). TLS pinned
//! to that replica's certificate as recorded in the database, an HTTP/1.1
//! upgrade with the relay token, then the switched connection is the
//! stream: the caller speaks HTTP/1.1 to the agent's Node-RED over it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use redwall_hub::relay::RelayTarget;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::upstream::{handshake, Unreachable, CONNECT_WITHIN};

/// Where a replica asks (`api/agent_relay.rs` answers); `{agent}` is the
/// agent's id.
pub const RELAY_PATH: &str = "/api/v1/agent/relay/{agent}";
/// The relay token's header.
pub const RELAY_HEADER: &str = "x-redwall-relay";
/// The protocol switched to.
pub const RELAY_PROTOCOL: &str = "redwall-relay";

/// `https://host:port` -> (host, port); brackets kept off an IPv6 host.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

/// A stream to the agent's Node-RED through the replica in `target`.
pub async fn open(
    agent_id: &str,
    target: &RelayTarget,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, Unreachable> {
    let (host, port) = host_port(&target.relay_url).ok_or(Unreachable)?;
    let config = redwall_crypto::tls_pin::pinned_client_config(&target.cert_sha256)
        .map_err(|_| Unreachable)?;
    let failed = |what: &str, why: &dyn std::fmt::Display| {
        tracing::warn!(node = %target.node, url = %target.relay_url, "relaying to the replica holding an agent's connection failed: {what}: {why}");
        Unreachable
    };
    let opened = tokio::time::timeout(CONNECT_WITHIN, async {
        let tcp = match TcpStream::connect((host.as_str(), port)).await {
            Ok(t) => t,
            Err(e) => return Err(failed("connect", &e)),
        };
        let _ = tcp.set_nodelay(true);
        // The pin is the identity; the name only fills SNI.
        let name = rustls::pki_types::ServerName::try_from(host.clone()).unwrap_or_else(|_| {
            rustls::pki_types::ServerName::try_from("localhost").unwrap_or(
                rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            )
        });
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| failed("TLS", &e))
    })
    .await
    .map_err(|_| failed("connect", &"timed out"))??;
    let mut connection = handshake(opened)
        .await
        .map_err(|_| failed("HTTP", &"no handshake"))?;
    // The upgrade outlives this function: the driver runs on its own.
    connection.driver.spawn();
    let ask = Request::builder()
        .method("GET")
        .uri(RELAY_PATH.replace("{agent}", agent_id))
        .header(header::HOST, format!("{host}:{port}"))
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, RELAY_PROTOCOL)
        .header(RELAY_HEADER, &target.token)
        .body(Body::empty())
        .map_err(|_| Unreachable)?;
    let answer = connection
        .sender
        .send_request(ask)
        .await
        .map_err(|e| failed("HTTP", &e))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        tracing::warn!(
            node = %target.node,
            status = %answer.status(),
            "the replica holding an agent's connection refused to relay"
        );
        return Err(Unreachable);
    }
    let upgraded = hyper::upgrade::on(answer)
        .await
        .map_err(|e| failed("upgrade", &e))?;
    Ok(TokioIo::new(upgraded))
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn relay_addresses_are_read() {
        assert_eq!(
            host_port("https://10.0.0.5:8443"),
            Some(("10.0.0.5".into(), 8443))
        );
        assert_eq!(host_port("https://[::1]:8443"), Some(("::1".into(), 8443)));
        assert_eq!(
            host_port("https://hub.example:443/x"),
            Some(("hub.example".into(), 443))
        );
        assert_eq!(host_port("http://10.0.0.5:8443"), None);
        assert_eq!(host_port("https://10.0.0.5"), None);
    }
}

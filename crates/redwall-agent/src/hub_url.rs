//! Where the hub is: the bundle's `https://host:port`, taken apart once so
//! that enrolment and the WebSocket dial use the same host, port and path.

use redwall_policy::agent_protocol::{CONNECT_PATH, ENROL_PATH};
use reqwest::Url;
use rustls::pki_types::ServerName;

/// The hub's address, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubEndpoint {
    /// Host as written in a URL (IPv6 in brackets), for `Host:` and URLs.
    url_host: String,
    /// The name TLS is checked against (and sent as SNI).
    server_name: ServerName<'static>,
    port: u16,
    /// A path prefix, when the hub sits under one behind a proxy ("" if none).
    base_path: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the hub URL {url:?} {why}")]
pub struct BadHubUrl {
    url: String,
    why: &'static str,
}

impl HubEndpoint {
    pub fn parse(hub_url: &str) -> Result<Self, BadHubUrl> {
        let bad = |why| BadHubUrl {
            url: hub_url.to_owned(),
            why,
        };
        let url = Url::parse(hub_url).map_err(|_| bad("is not a URL"))?;
        if url.scheme() != "https" {
            return Err(bad("must start with https://"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not hold credentials"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        let url_host = url.host_str().ok_or_else(|| bad("has no host"))?.to_owned();
        // The url crate writes IPv6 hosts in brackets and normalises IPv4.
        let bare = url_host.trim_start_matches('[').trim_end_matches(']');
        let server_name = match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(bare.to_owned())
                .map_err(|_| bad("has an invalid host name"))?,
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let base_path = url.path().trim_end_matches('/').to_owned();
        Ok(Self {
            url_host,
            server_name,
            port,
            base_path,
        })
    }

    /// `host:port` to dial (IPv6 hosts in brackets).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.url_host, self.port)
    }

    /// The host to resolve and dial, without IPv6 brackets.
    pub fn dial_host(&self) -> &str {
        self.url_host.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn server_name(&self) -> ServerName<'static> {
        self.server_name.clone()
    }

    /// Where to POST the enrolment.
    pub fn enrol_url(&self) -> String {
        format!("https://{}{}{ENROL_PATH}", self.authority(), self.base_path)
    }

    /// The WebSocket to open.
    pub fn connect_url(&self) -> String {
        format!("wss://{}{}{CONNECT_PATH}", self.authority(), self.base_path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_from_the_hub_url() {
        let hub = HubEndpoint::parse("https://hub.example:8443").unwrap();
        assert_eq!(
            hub.enrol_url(),
            "https://hub.example:8443/api/v1/agent/enrol"
        );
        assert_eq!(
            hub.connect_url(),
            "wss://hub.example:8443/api/v1/agent/connect"
        );
        assert_eq!(hub.dial_host(), "hub.example");
        let default_port = HubEndpoint::parse("https://hub.example/").unwrap();
        assert_eq!(default_port.authority(), "hub.example:443");
        let prefixed = HubEndpoint::parse("https://hub.example/redwall/").unwrap();
        assert_eq!(
            prefixed.connect_url(),
            "wss://hub.example:443/redwall/api/v1/agent/connect"
        );
        let v6 = HubEndpoint::parse("https://[::1]:9443").unwrap();
        assert_eq!(v6.authority(), "[::1]:9443");
        assert_eq!(v6.dial_host(), "::1");
        assert!(matches!(v6.server_name(), ServerName::IpAddress(_)));
        for bad in [
            "http://hub",
            "hub:8443",
            "https://u:p@hub",
            "https://hub/?x=1",
        ] {
            assert!(HubEndpoint::parse(bad).is_err(), "{bad}");
        }
    }
}

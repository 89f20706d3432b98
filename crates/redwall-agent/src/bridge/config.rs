//! `[bridge]` in the agent's configuration, and what is read from it at
//! start: the brokers' addresses, the password files, the team broker's
//! TLS trust.

use std::io::Read as _;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use redwall_policy::mqtt_acl;
use reqwest::Url;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::BridgeError;
use crate::outbox::OutboxConfig;

/// `[bridge]`: forward the site's local broker to the team broker through
/// the outbox. Example:
///
/// ```toml
/// [bridge]
/// client_id = "plant-7-bridge"
///
/// [bridge.local]
/// port = 1883
/// username = "bridge"
/// password_file = "/var/lib/redwall-agent/local-broker.password"
/// forward = ["site/#", "alarms/#"]
///
/// [bridge.team]
/// url = "mqtts://hub.example.com:8883"
/// username = "plant-7"
/// password_file = "/var/lib/redwall-agent/team-broker.password"
/// cert_sha256 = "3f0c...e1"          # or ca_file = "...", or neither (public roots)
/// topic_prefix = "plant-7/"
///
/// [bridge.outbox]
/// max_bytes = 67108864
/// drop_policy = "drop-oldest"        # or "refuse-new"
///
/// [[bridge.outbox.priorities]]
/// filter = "alarms/#"
/// priority = "high"
///
/// [[bridge.outbox.priorities]]
/// filter = "site/+/debug"
/// priority = "low"
/// ```
///
/// `[local]` may be left out when the agent runs the site broker
/// (`DIR/site-broker.toml`, [`crate::site_broker`]): the local link then
/// connects to it as its built-in user `bridge`, with the password the
/// agent made for this run, and forwards the top-level `forward` filters
/// (default `["#"]`: everything the site publishes, `$` topics aside).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The MQTT client id on both brokers. Stable on purpose: both brokers
    /// keep the bridge's session (queued messages, the QoS 2 exchange in
    /// progress) under it across disconnects.
    pub client_id: String,
    /// The site's broker; `None`: the agent's own site broker.
    #[serde(default)]
    pub local: Option<LocalBrokerConfig>,
    /// Without `[local]` only: the filters forwarded from the site broker
    /// (default `["#"]`). With `[local]`, its own `forward` says it.
    #[serde(default)]
    pub forward: Option<Vec<String>>,
    pub team: TeamBrokerConfig,
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Reconnect delays (jittered, growing from base to max), both links.
    #[serde(default = "default_reconnect_base_ms")]
    pub reconnect_base_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

/// `[bridge.local]`: the broker the site's flows publish to, on this host.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalBrokerConfig {
    /// Loopback only: the local hop is plain MQTT.
    #[serde(default = "default_local_host")]
    pub host: IpAddr,
    #[serde(default = "default_local_port")]
    pub port: u16,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (mode 0600, trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The filters forwarded to the team broker.
    pub forward: Vec<String>,
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u16,
}

/// `[bridge.team]`: the team broker, reached out through TLS.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamBrokerConfig {
    /// `mqtts://host[:8883]`; `mqtt://` (plain TCP) only to a loopback
    /// address (a test, or a tunnel that encrypts on its own).
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (mode 0600, trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// SHA-256 (hex) of the broker's certificate: exactly that one is
    /// accepted (as for the hub, see [`crate::tls`]).
    #[serde(default)]
    pub cert_sha256: Option<String>,
    /// A CA (PEM file) the broker's certificate must chain to.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Put in front of every forwarded topic (`site/x` -> `plant-7/site/x`).
    #[serde(default)]
    pub topic_prefix: String,
    /// Seconds between pings; a link silent for twice that is dropped.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u16,
}

fn default_local_host() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn default_local_port() -> u16 {
    1883
}

fn default_keep_alive_secs() -> u16 {
    30
}

fn default_reconnect_base_ms() -> u64 {
    500
}

fn default_reconnect_max_ms() -> u64 {
    30_000
}

/// How to reach the team broker, checked.
#[derive(Clone, Debug)]
pub(crate) struct TeamEndpoint {
    pub host: String,
    pub port: u16,
    /// `None`: plain TCP (loopback only).
    pub tls: Option<ServerName<'static>>,
}

impl BridgeConfig {
    /// Everything that can be checked without a network.
    pub fn check(&self) -> Result<(), BridgeError> {
        let bad = |why: String| Err(BridgeError::Config(why));
        if self.client_id.is_empty()
            || self.client_id.len() > mqtt_acl::MAX_CLIENT_ID_BYTES
            || self.client_id.chars().any(char::is_control)
        {
            return bad("client_id must be 1 to 256 bytes, without control characters".into());
        }
        if let Some(local) = &self.local {
            if !local.host.is_loopback() {
                return bad(format!(
                    "local.host {} is not a loopback address: the local hop is plain MQTT",
                    local.host
                ));
            }
            if self.forward.is_some() {
                return bad(
                    "forward is for a bridge without [local]; give local.forward instead".into(),
                );
            }
            if local.keep_alive_secs == 0 {
                return bad("keep_alive_secs must be at least 1".into());
            }
        }
        let forward = self.forward_filters();
        if forward.is_empty() {
            return bad("forward names no filter: nothing would be forwarded".into());
        }
        for filter in &forward {
            mqtt_acl::check_filter(filter)
                .map_err(|e| BridgeError::Config(format!("forward {filter:?}: {e}")))?;
        }
        if !self.team.topic_prefix.is_empty() {
            mqtt_acl::check_topic_name(&self.team.topic_prefix).map_err(|e| {
                BridgeError::Config(format!(
                    "team.topic_prefix {:?}: {e}",
                    self.team.topic_prefix
                ))
            })?;
        }
        if self.team.keep_alive_secs == 0 {
            return bad("keep_alive_secs must be at least 1".into());
        }
        if self.reconnect_base_ms == 0 || self.reconnect_max_ms < self.reconnect_base_ms {
            return bad("reconnect_base_ms must be > 0 and <= reconnect_max_ms".into());
        }
        if self.team.cert_sha256.is_some() && self.team.ca_file.is_some() {
            return bad("team: give cert_sha256 or ca_file, not both".into());
        }
        self.outbox
            .check()
            .map_err(|e| BridgeError::Config(e.to_string()))?;
        self.team_endpoint()?;
        Ok(())
    }

    /// The filters taken from the local broker: `[local]`'s, else the
    /// top-level `forward`, else everything (`#`).
    pub fn forward_filters(&self) -> Vec<String> {
        match (&self.local, &self.forward) {
            (Some(local), _) => local.forward.clone(),
            (None, Some(forward)) => forward.clone(),
            (None, None) => vec!["#".to_owned()],
        }
    }

    pub(crate) fn team_endpoint(&self) -> Result<TeamEndpoint, BridgeError> {
        let bad = |why: &str| BridgeError::Config(format!("team.url {:?} {why}", self.team.url));
        let url = Url::parse(&self.team.url).map_err(|_| bad("is not a URL"))?;
        let tls = match url.scheme() {
            "mqtts" => true,
            "mqtt" => false,
            _ => {
                return Err(bad(
                    "must start with mqtts:// (or mqtt:// to a loopback address)",
                ))
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "must not hold credentials (use username and password_file)",
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must be only mqtts://host:port"));
        }
        let host = url.host_str().ok_or_else(|| bad("names no host"))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ip = bare.parse::<IpAddr>().ok();
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        if !tls && !ip.is_some_and(|ip| ip.is_loopback()) {
            return Err(bad(
                "is plain MQTT to a host that is not a loopback address; use mqtts://",
            ));
        }
        let tls = if tls {
            let name = match ip {
                Some(ip) => ServerName::IpAddress(ip.into()),
                None => ServerName::try_from(bare.to_owned()).map_err(|_| bad("has a bad host"))?,
            };
            Some(name)
        } else {
            None
        };
        Ok(TeamEndpoint {
            host: bare.to_owned(),
            port,
            tls,
        })
    }
}

/// Reads a password file, refusing one the group or others can read.
pub(crate) fn read_password(path: &Path) -> Result<Zeroizing<String>, BridgeError> {
    let bad = |why: String| BridgeError::Config(format!("{}: {why}", path.display()));
    let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mode = file
        .metadata()
        .map_err(|e| bad(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "can be read by other users (mode {:04o}); chmod 600 it",
            mode & 0o7777
        )));
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    let trimmed = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned());
    Ok(trimmed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::outbox::{DropPolicy, Priority};

    const EXAMPLE: &str = r#"
        [bridge]
        client_id = "plant-7-bridge"

        [bridge.local]
        port = 1883
        forward = ["site/#", "alarms/#"]

        [bridge.team]
        url = "mqtts://hub.example.com:8883"
        username = "plant-7"
        cert_sha256 = "00"
        topic_prefix = "plant-7/"

        [bridge.outbox]
        max_bytes = 1048576
        drop_policy = "refuse-new"

        [[bridge.outbox.priorities]]
        filter = "alarms/#"
        priority = "high"
    "#;

    #[derive(Deserialize)]
    struct Wrapper {
        bridge: BridgeConfig,
    }

    fn parse(text: &str) -> Result<BridgeConfig, toml::de::Error> {
        toml::from_str::<Wrapper>(text).map(|w| w.bridge)
    }

    #[test]
    fn the_documented_example_parses_and_checks() {
        let config = parse(EXAMPLE).unwrap();
        config.check().unwrap();
        assert_eq!(config.local.as_ref().unwrap().host, default_local_host());
        assert_eq!(config.outbox.drop_policy, DropPolicy::RefuseNew);
        assert_eq!(config.outbox.priority_of("alarms/x"), Priority::High);
        let endpoint = config.team_endpoint().unwrap();
        assert_eq!(
            (endpoint.host.as_str(), endpoint.port),
            ("hub.example.com", 8883)
        );
        assert!(endpoint.tls.is_some());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = EXAMPLE.replace("port = 1883", "port = 1883\nprot = 1");
        assert!(parse(&text).is_err());
        let text = EXAMPLE.replace("max_bytes = 1048576", "max_byte = 1");
        assert!(parse(&text).is_err());
    }

    #[test]
    fn plain_mqtt_only_to_loopback_and_the_local_side_only_on_loopback() {
        let check = |from: &str, to: &str| parse(&EXAMPLE.replace(from, to)).unwrap().check();
        let url = "url = \"mqtts://hub.example.com:8883\"";
        assert!(check(url, "url = \"mqtt://hub.example.com:1883\"").is_err());
        assert!(check(url, "url = \"mqtt://10.0.0.1:1883\"").is_err());
        assert!(check(url, "url = \"mqtt://127.0.0.1:1883\"").is_ok());
        assert!(check(url, "url = \"mqtt://[::1]:1883\"").is_ok());
        assert!(check(url, "url = \"https://hub.example.com\"").is_err());
        assert!(check(url, "url = \"mqtts://u:p@hub.example.com\"").is_err());
        assert!(check("port = 1883", "host = \"192.168.1.2\"").is_err());
        assert!(check("forward = [\"site/#\", \"alarms/#\"]", "forward = []").is_err());
        assert!(check(
            "forward = [\"site/#\", \"alarms/#\"]",
            "forward = [\"a/#/b\"]"
        )
        .is_err());
        assert!(check("topic_prefix = \"plant-7/\"", "topic_prefix = \"plant/#\"").is_err());
        assert!(check("client_id = \"plant-7-bridge\"", "client_id = \"\"").is_err());
    }

    #[test]
    fn without_local_the_site_broker_is_meant_and_everything_forwarded() {
        let start = EXAMPLE.find("[bridge.local]").unwrap();
        let end = EXAMPLE.find("[bridge.team]").unwrap();
        let without = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
        let config = parse(&without).unwrap();
        config.check().unwrap();
        assert!(config.local.is_none());
        assert_eq!(config.forward_filters(), vec!["#".to_owned()]);
        let only = without.replace(
            "client_id = \"plant-7-bridge\"",
            "client_id = \"plant-7-bridge\"\nforward = [\"plant/#\"]",
        );
        let config = parse(&only).unwrap();
        config.check().unwrap();
        assert_eq!(config.forward_filters(), vec!["plant/#".to_owned()]);
        assert!(parse(&only.replace("plant/#", "a/#/b"))
            .unwrap()
            .check()
            .is_err());
        assert!(parse(&only.replace("[\"plant/#\"]", "[]"))
            .unwrap()
            .check()
            .is_err());
        // Both at once is ambiguous.
        let both = EXAMPLE.replace(
            "client_id = \"plant-7-bridge\"",
            "client_id = \"plant-7-bridge\"\nforward = [\"plant/#\"]",
        );
        assert!(parse(&both).unwrap().check().is_err());
    }

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_password(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password(&path).unwrap().as_str(), "s3cret");
    }
}

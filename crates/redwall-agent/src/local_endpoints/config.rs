//! The local endpoints' configuration, checked before anything listens.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::Error;

/// Default largest request body: 10 MiB.
pub const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;
const DEFAULT_MAX_CONNECTIONS: usize = 512;
const DEFAULT_UPGRADE_ANSWER_SECS: u64 = 30;

/// Where and how the local endpoints listen. See the module documentation
/// for a TOML example.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalEndpointsConfig {
    /// The socket address clients of the site's network dial.
    pub listen: SocketAddr,
    /// The certificate chain (PEM), with `key`. Neither: a self-signed
    /// certificate the agent makes once in its state directory.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// More names (DNS names or IP addresses) for the self-signed
    /// certificate, beyond localhost, loopback and the listen address.
    #[serde(default)]
    pub names: Vec<String>,
    /// Plain HTTP instead of TLS: only on a loopback listen address.
    #[serde(default)]
    pub plain_http: bool,
    /// Larger request bodies are refused with 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Connections held at once; more are closed on accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long Node-RED may take to answer a WebSocket upgrade (it leaves
    /// one to a path without a listener unanswered): 504 after it.
    #[serde(default = "default_upgrade_answer_secs")]
    pub upgrade_answer_secs: u64,
}

fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn default_upgrade_answer_secs() -> u64 {
    DEFAULT_UPGRADE_ANSWER_SECS
}

impl LocalEndpointsConfig {
    /// A configuration with the defaults, listening on `listen` with TLS
    /// (self-signed).
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            cert: None,
            key: None,
            names: Vec::new(),
            plain_http: false,
            max_body_bytes: DEFAULT_MAX_BODY,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            upgrade_answer_secs: DEFAULT_UPGRADE_ANSWER_SECS,
        }
    }

    /// Refuses what must not run: plain HTTP off loopback, half a
    /// certificate, contradictory settings, limits of zero.
    pub fn check(&self) -> Result<(), Error> {
        if self.plain_http {
            if !self.listen.ip().is_loopback() {
                return Err(Error::PlainHttpNotLoopback(self.listen));
            }
            if self.cert.is_some() || self.key.is_some() || !self.names.is_empty() {
                return Err(Error::Config(
                    "`plain_http` takes no `cert`, `key` or `names`".to_owned(),
                ));
            }
        }
        match (&self.cert, &self.key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Config(
                    "`cert` and `key` go together: give both, or neither for a self-signed certificate"
                        .to_owned(),
                ))
            }
            (Some(_), Some(_)) if !self.names.is_empty() => {
                return Err(Error::Config(
                    "`names` is for the self-signed certificate; the certificate in `cert` names itself"
                        .to_owned(),
                ))
            }
            _ => {}
        }
        if self.max_body_bytes < 1024 {
            return Err(Error::Config(
                "`max_body_bytes` must be at least 1024".to_owned(),
            ));
        }
        if self.max_connections == 0 || self.upgrade_answer_secs == 0 {
            return Err(Error::Config(
                "`max_connections` and `upgrade_answer_secs` must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LocalEndpointsConfig, String> {
        let c: LocalEndpointsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.check().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_are_tls_with_ten_mebibytes() {
        let c = parse("listen = \"0.0.0.0:8443\"").unwrap();
        assert_eq!(
            c,
            LocalEndpointsConfig::new("0.0.0.0:8443".parse().unwrap())
        );
        assert!(!c.plain_http);
        assert_eq!(c.max_body_bytes, 10 * 1024 * 1024);
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(parse("listen = \"127.0.0.1:8080\"\nplain_http = true").is_ok());
        assert!(parse("listen = \"[::1]:8080\"\nplain_http = true").is_ok());
        for off_loopback in ["0.0.0.0:8080", "10.1.2.3:8080", "[::]:8080"] {
            let e = parse(&format!("listen = \"{off_loopback}\"\nplain_http = true")).unwrap_err();
            assert!(e.contains("only allowed on a loopback address"), "{e}");
        }
        assert!(parse(
            "listen = \"127.0.0.1:8080\"\nplain_http = true\ncert = \"/c\"\nkey = \"/k\""
        )
        .is_err());
    }

    #[test]
    fn odd_settings_are_refused() {
        assert!(parse("listen = \"0.0.0.0:1\"\ncert = \"/c\"").is_err());
        assert!(parse("listen = \"0.0.0.0:1\"\nkey = \"/k\"").is_err());
        assert!(parse("listen = \"0.0.0.0:1\"\ncert = \"/c\"\nkey = \"/k\"").is_ok());
        assert!(
            parse("listen = \"0.0.0.0:1\"\ncert = \"/c\"\nkey = \"/k\"\nnames = [\"x\"]").is_err()
        );
        assert!(parse("listen = \"0.0.0.0:1\"\nmax_body_bytes = 10").is_err());
        assert!(parse("listen = \"0.0.0.0:1\"\nmax_connections = 0").is_err());
        assert!(parse("listen = \"0.0.0.0:1\"\nupgrade_answer_secs = 0").is_err());
        let unknown = parse("listen = \"0.0.0.0:1\"\ntls = false").unwrap_err();
        assert!(unknown.contains("unknown field"), "{unknown}");
        assert!(parse("plain_http = true").is_err());
    }
}

//! `DIR/site-broker.toml`, the operator's file that turns the site broker
//! on (an empty file means every default), and the document the agent
//! hands the child on its stdin ([`ChildConfig`]).
//!
//! ```toml
//! listen = ["127.0.0.1:1883"]    # loopback only: the site hop is plain MQTT
//! max_connections = 256
//! max_queue = 10000               # messages held for one client (the bridge)
//! max_packet_bytes = 1048576
//!
//! [tls]                           # optional: MQTT over TLS for the site's network
//! listen = "0.0.0.0:8883"
//! names = ["plant-gw.example.test"]   # on the self-signed certificate
//! # cert = "/etc/redwall-agent/mqtt.crt" and key = ".../mqtt.key"
//!
//! [[users]]                       # more users, besides the built-in two
//! name = "scada"
//! password_file = "/etc/redwall-agent/scada.password"   # mode 0600
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The operator's file; without it the agent runs no site broker.
pub const CONFIG_FILE: &str = "site-broker.toml";

/// What `DIR/site-broker.toml` may say; every field has a default.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SiteBrokerConfig {
    /// Plain MQTT listeners, loopback addresses only (the site's Node-RED
    /// and the bridge are on this host). The first is the one Node-RED and
    /// the bridge are given.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Connections at once, all listeners together.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Messages the broker holds for one client beyond those in flight
    /// (for the bridge while it stores a batch); further ones are dropped.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Largest MQTT packet, either way.
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: u32,
    /// The operator's own users (other software on this host), with the
    /// same rights as the built-in ones.
    #[serde(default)]
    pub users: Vec<OperatorUser>,
    /// MQTT over TLS, for clients on the site's network.
    #[serde(default)]
    pub tls: Option<super::tls::TlsListenerConfig>,
}

/// `[[users]]`: a user of the operator's, its password in a file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OperatorUser {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`; not `node-red` or `bridge`.
    pub name: String,
    /// A file holding the password (mode 0600, at least 16 characters,
    /// trailing newline ignored); read at each start of the agent.
    pub password_file: PathBuf,
}

/// Shortest password of an operator's user: it is kept as a plain
/// SHA-256 digest (a CONNECT is a hot path), so it must be long.
pub const MIN_OPERATOR_PASSWORD: usize = 16;

impl Default for SiteBrokerConfig {
    fn default() -> Self {
        SiteBrokerConfig {
            listen: default_listen(),
            max_connections: default_max_connections(),
            max_queue: default_max_queue(),
            max_packet_bytes: default_max_packet_bytes(),
            users: Vec::new(),
            tls: None,
        }
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 1883))]
}

fn default_max_connections() -> usize {
    256
}

fn default_max_queue() -> usize {
    10_000
}

fn default_max_packet_bytes() -> u32 {
    1024 * 1024
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl SiteBrokerConfig {
    /// Reads `dir/site-broker.toml`: `None` without it; an empty file is
    /// every default.
    pub fn load(dir: &Path) -> Result<Option<SiteBrokerConfig>, ConfigError> {
        let path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ConfigError(format!("{}: {e}", path.display()))),
        };
        let config =
            Self::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))?;
        Ok(Some(config))
    }

    /// Parses and checks the file's text.
    pub fn parse(text: &str) -> Result<SiteBrokerConfig, ConfigError> {
        let config: SiteBrokerConfig =
            toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Everything that can be checked before binding.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError(why));
        if self.listen.is_empty() {
            return bad("listen names no address".into());
        }
        if self.listen.len() > 8 {
            return bad("listen names more than 8 addresses".into());
        }
        for addr in &self.listen {
            if !addr.ip().is_loopback() {
                return bad(format!(
                    "listen {addr} is not a loopback address: the site broker speaks plain MQTT, so only this host may reach it"
                ));
            }
            if addr.port() == 0 {
                return bad(format!(
                    "listen {addr}: give a port (Node-RED and the bridge are told it)"
                ));
            }
        }
        if !(1..=100_000).contains(&self.max_connections) {
            return bad("max_connections must be 1 to 100000".into());
        }
        if !(16..=10_000_000).contains(&self.max_queue) {
            return bad("max_queue must be 16 to 10000000".into());
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.max_packet_bytes) {
            return bad("max_packet_bytes must be 1024 to 268435456".into());
        }
        if let Some(tls) = &self.tls {
            tls.check()?;
            if self.listen.contains(&tls.listen) {
                return bad(format!(
                    "tls.listen {} is also a plain listener",
                    tls.listen
                ));
            }
        }
        for (i, user) in self.users.iter().enumerate() {
            let name = &user.name;
            let well_formed = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !well_formed {
                return bad(format!(
                    "users: {name:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"
                ));
            }
            if name == super::auth::NODE_RED_USER || name == super::auth::BRIDGE_USER {
                return bad(format!("users: {name:?} is a built-in user"));
            }
            if self.users[..i].iter().any(|u| &u.name == name) {
                return bad(format!("users: {name:?} is named twice"));
            }
        }
        Ok(())
    }

    /// Each operator's user with the digest of its password, read now
    /// from its file (refused when others can read it, or too short).
    pub fn operator_digests(&self) -> Result<Vec<UserDigest>, ConfigError> {
        self.users
            .iter()
            .map(|user| {
                let password = read_password(&user.password_file)?;
                if password.chars().count() < MIN_OPERATOR_PASSWORD {
                    return Err(ConfigError(format!(
                        "users: {:?}: the password in {} is shorter than {MIN_OPERATOR_PASSWORD} characters",
                        user.name,
                        user.password_file.display()
                    )));
                }
                Ok(UserDigest {
                    name: user.name.clone(),
                    sha256: super::auth::digest(&password),
                })
            })
            .collect()
    }

    /// Where this host's clients (Node-RED, the bridge) connect.
    pub fn address(&self) -> SocketAddr {
        self.listen
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1883)))
    }
}

/// Reads a password file, refusing one the group or others can read, or
/// one that is not a small regular file.
fn read_password(path: &Path) -> Result<Zeroizing<String>, ConfigError> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let bad = |why: String| ConfigError(format!("{}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "can be read by other users (mode {:04o}); chmod 600 it",
            mode & 0o7777
        )));
    }
    if !meta.is_file() || meta.len() > 4096 {
        return Err(bad("not a small regular file".into()));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// One user the child accepts: its name and the SHA-256 of its password
/// (hex). The password itself never reaches the child.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserDigest {
    pub name: String,
    pub sha256: String,
}

impl std::fmt::Debug for UserDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDigest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The whole configuration of `redwall-agent site-broker`, one JSON
/// document on its stdin.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChildConfig {
    pub listen: Vec<SocketAddr>,
    pub users: Vec<UserDigest>,
    pub max_connections: usize,
    pub max_queue: usize,
    pub max_packet_bytes: u32,
    /// The TLS listener, with its certificate and key.
    #[serde(default)]
    pub tls: Option<super::tls::ChildTls>,
}

/// The longest configuration the child reads.
pub const MAX_CHILD_CONFIG_BYTES: u64 = 1024 * 1024;

impl ChildConfig {
    pub fn new(config: &SiteBrokerConfig, users: Vec<UserDigest>) -> ChildConfig {
        ChildConfig {
            listen: config.listen.clone(),
            users,
            max_connections: config.max_connections,
            max_queue: config.max_queue,
            max_packet_bytes: config.max_packet_bytes,
            tls: None,
        }
    }

    /// The child checks what it was given as the agent did, and more: no
    /// user without a well-formed digest.
    pub fn check(&self) -> Result<(), ConfigError> {
        SiteBrokerConfig {
            listen: self.listen.clone(),
            max_connections: self.max_connections,
            max_queue: self.max_queue,
            max_packet_bytes: self.max_packet_bytes,
            users: Vec::new(),
            tls: None,
        }
        .check()?;
        if let Some(tls) = &self.tls {
            if tls.listen.port() == 0 || self.listen.contains(&tls.listen) {
                return Err(ConfigError(format!(
                    "tls.listen {} is not usable",
                    tls.listen
                )));
            }
        }
        if self.users.is_empty() {
            return Err(ConfigError("no user: nobody could log in".into()));
        }
        for (i, user) in self.users.iter().enumerate() {
            if self.users[..i].iter().any(|u| u.name == user.name) {
                return Err(ConfigError(format!("user {:?} is named twice", user.name)));
            }
            if user.name.is_empty()
                || user.name.len() > 256
                || user.name.chars().any(char::is_control)
            {
                return Err(ConfigError(
                    "a user name must be 1 to 256 bytes without control characters".into(),
                ));
            }
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&user.sha256, &mut digest).is_err() {
                return Err(ConfigError(format!(
                    "user {:?}: sha256 is not 64 hex digits",
                    user.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_every_default() {
        let config = SiteBrokerConfig::parse("").unwrap();
        assert_eq!(config, SiteBrokerConfig::default());
        assert_eq!(config.listen, vec!["127.0.0.1:1883".parse().unwrap()]);
        assert_eq!(config.address(), "127.0.0.1:1883".parse().unwrap());
    }

    #[test]
    fn the_documented_example_parses() {
        let config = SiteBrokerConfig::parse(
            "listen = [\"127.0.0.1:18830\", \"[::1]:18830\"]\nmax_connections = 10\nmax_queue = 500\nmax_packet_bytes = 65536\n",
        )
        .unwrap();
        assert_eq!(config.listen.len(), 2);
        assert_eq!(config.address().port(), 18830);
        assert_eq!(config.max_queue, 500);
    }

    #[test]
    fn only_loopback_with_a_port_and_sane_limits() {
        let refused = [
            "listen = [\"0.0.0.0:1883\"]",
            "listen = [\"192.168.1.5:1883\"]",
            "listen = [\"127.0.0.1:0\"]",
            "listen = []",
            "max_connections = 0",
            "max_queue = 1",
            "max_packet_bytes = 10",
            "lisen = [\"127.0.0.1:1883\"]",
            "listen = \"127.0.0.1:1883\"",
        ];
        for text in refused {
            assert!(SiteBrokerConfig::parse(text).is_err(), "{text}");
        }
        let err = SiteBrokerConfig::parse("listen = [\"0.0.0.0:1883\"]").unwrap_err();
        assert!(err.0.contains("not a loopback address"), "{err}");
    }

    #[test]
    fn tls_may_listen_on_the_sites_network_but_not_on_a_plain_listener() {
        let config =
            SiteBrokerConfig::parse("[tls]\nlisten = \"0.0.0.0:8883\"\nnames = [\"gw.test\"]\n")
                .unwrap();
        assert_eq!(config.tls.unwrap().listen.port(), 8883);
        assert!(SiteBrokerConfig::parse("[tls]\nlisten = \"127.0.0.1:1883\"\n").is_err());
        assert!(
            SiteBrokerConfig::parse("[tls]\nlisten = \"0.0.0.0:8883\"\ncert = \"/x\"\n").is_err()
        );
        assert!(SiteBrokerConfig::parse("[tls]\nlisten = \"0.0.0.0:8883\"\nport = 1\n").is_err());
    }

    #[test]
    fn the_file_is_optional() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SiteBrokerConfig::load(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(CONFIG_FILE), "").unwrap();
        assert_eq!(
            SiteBrokerConfig::load(dir.path()).unwrap(),
            Some(SiteBrokerConfig::default())
        );
        std::fs::write(dir.path().join(CONFIG_FILE), "listen = 5").unwrap();
        let err = SiteBrokerConfig::load(dir.path()).unwrap_err();
        assert!(err.0.contains(CONFIG_FILE), "{err}");
    }

    #[test]
    fn operator_users_need_a_good_name_and_a_private_long_password() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("scada.password");
        std::fs::write(&file, "correct-horse-battery\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = |name: &str| {
            format!(
                "[[users]]\nname = \"{name}\"\npassword_file = \"{}\"\n",
                file.display()
            )
        };
        let config = SiteBrokerConfig::parse(&text("scada")).unwrap();
        let digests = config.operator_digests().unwrap();
        assert_eq!(digests.len(), 1);
        assert_eq!(digests[0].name, "scada");
        assert_eq!(
            digests[0].sha256,
            super::super::auth::digest("correct-horse-battery")
        );
        for name in ["node-red", "bridge", "", "a b", "é", &"x".repeat(65)] {
            assert!(SiteBrokerConfig::parse(&text(name)).is_err(), "{name}");
        }
        let twice = format!("{}{}", text("scada"), text("scada"));
        assert!(SiteBrokerConfig::parse(&twice)
            .unwrap_err()
            .0
            .contains("twice"));
        // Readable by others, or short: refused, naming the file.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = config.operator_digests().unwrap_err();
        assert!(err.0.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&file, "short\n").unwrap();
        let err = config.operator_digests().unwrap_err();
        assert!(err.0.contains("shorter than 16"), "{err}");
        assert!(!err.0.contains("short\n"));
        std::fs::remove_file(&file).unwrap();
        assert!(config.operator_digests().is_err());
    }

    #[test]
    fn the_child_refuses_users_without_a_digest() {
        let user = |name: &str, sha256: &str| UserDigest {
            name: name.into(),
            sha256: sha256.into(),
        };
        let good = "ab".repeat(32);
        let config = ChildConfig::new(&SiteBrokerConfig::default(), vec![user("bridge", &good)]);
        config.check().unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<ChildConfig>(&json).unwrap(), config);
        assert!(!format!("{config:?}").contains(&good));
        for users in [
            vec![],
            vec![user("bridge", "zz")],
            vec![user("", &good)],
            vec![user("bridge", &good), user("bridge", &good)],
        ] {
            assert!(ChildConfig::new(&SiteBrokerConfig::default(), users)
                .check()
                .is_err());
        }
    }
}

//! Who may log in to the site broker, and what they may do there.
//!
//! # Users
//!
//! Two built-in users, their passwords made afresh (32 random bytes, hex)
//! at every start of the agent and kept only in its memory:
//!
//! - [`NODE_RED_USER`]: the site's Node-RED, given its password in
//!   `REDWALL_MQTT_PASSWORD`;
//! - [`BRIDGE_USER`]: the bridge's local link.
//!
//! The child is given each user's name and the SHA-256 of its password
//! ([`Credentials::digests`]), never a password. A CONNECT is checked by
//! one SHA-256 of what it offers and a constant-time comparison with the
//! stored digest ([`Users::check`]): a 256-bit random password needs no
//! slow hash, and every CONNECT pays the same price whatever the name.
//! Anonymous clients, unknown users and wrong passwords are refused.
//!
//! # What a user may do
//!
//! Kept simple on purpose, the same for every user ([`may_publish`],
//! [`may_subscribe`]): publish to any topic that does not start with `$`
//! (`$SYS/...` and the like belong to the broker, MQTT 4.7.2; a will on
//! such a topic is refused at CONNECT), subscribe to any filter. A client
//! id whose session (connected or kept) belongs to another user cannot be
//! taken over, so no client can steal the bridge's queued messages.

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::config::UserDigest;

/// The site's Node-RED.
pub const NODE_RED_USER: &str = "node-red";
/// The bridge's local link.
pub const BRIDGE_USER: &str = "bridge";

/// The built-in users' passwords, for this run of the agent only.
#[derive(Clone)]
pub struct Credentials {
    node_red: Zeroizing<String>,
    bridge: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([redacted])")
    }
}

fn random_password() -> Zeroizing<String> {
    Zeroizing::new(hex::encode(
        Zeroizing::new(rand::random::<[u8; 32]>()).as_slice(),
    ))
}

/// SHA-256 of a password, hex.
pub fn digest(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

impl Credentials {
    /// Fresh random passwords for both built-in users.
    pub fn generate() -> Credentials {
        Credentials {
            node_red: random_password(),
            bridge: random_password(),
        }
    }

    /// The password of the site's Node-RED (`REDWALL_MQTT_PASSWORD`).
    pub fn node_red_password(&self) -> &str {
        &self.node_red
    }

    /// The password of the bridge's local link.
    pub fn bridge_password(&self) -> &str {
        &self.bridge
    }

    /// What the child is given: names and digests.
    pub fn digests(&self) -> Vec<UserDigest> {
        vec![
            UserDigest {
                name: NODE_RED_USER.into(),
                sha256: digest(&self.node_red),
            },
            UserDigest {
                name: BRIDGE_USER.into(),
                sha256: digest(&self.bridge),
            },
        ]
    }
}

/// The users the child accepts.
pub struct Users {
    users: Vec<(String, [u8; 32])>,
}

impl Users {
    /// From the child's configuration; a digest that is not 64 hex digits
    /// is left out (the configuration check refuses it before).
    pub fn new(digests: &[UserDigest]) -> Users {
        let users = digests
            .iter()
            .filter_map(|u| {
                let mut d = [0u8; 32];
                hex::decode_to_slice(&u.sha256, &mut d).ok()?;
                Some((u.name.clone(), d))
            })
            .collect();
        Users { users }
    }

    /// Whether `password` is `username`'s. One SHA-256 and a constant-time
    /// comparison, also for a name nobody has (against a digest no
    /// password has, so the answer is no).
    pub fn check(&self, username: &str, password: &[u8]) -> bool {
        let offered: [u8; 32] = Sha256::digest(password).into();
        let stored = self
            .users
            .iter()
            .find(|(name, _)| name == username)
            .map(|(_, d)| d);
        match stored {
            Some(d) => bool::from(offered.ct_eq(d)),
            None => {
                // The same work as for a known name.
                let _ = offered.ct_eq(&[0u8; 32]);
                false
            }
        }
    }

    /// Whether `username` is one of these users (the ACL's first test).
    pub fn knows(&self, username: &str) -> bool {
        self.users.iter().any(|(name, _)| name == username)
    }
}

/// Whether a logged-in user may publish to `topic` (also a will's topic).
pub fn may_publish(topic: &str) -> bool {
    !topic.is_empty() && !topic.starts_with('$')
}

/// Whether a logged-in user may subscribe to `filter` (the engine has
/// checked its form already).
pub fn may_subscribe(filter: &str) -> bool {
    !filter.is_empty()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_fresh_long_and_never_printed() {
        let a = Credentials::generate();
        let b = Credentials::generate();
        assert_eq!(a.node_red_password().len(), 64);
        assert_ne!(a.node_red_password(), a.bridge_password());
        assert_ne!(a.node_red_password(), b.node_red_password());
        assert!(!format!("{a:?}").contains(a.node_red_password()));
        let digests = a.digests();
        assert_eq!(digests.len(), 2);
        assert!(digests
            .iter()
            .all(|d| !d.sha256.contains(a.node_red_password())
                && !format!("{d:?}").contains(&d.sha256)));
    }

    #[test]
    fn only_the_right_password_of_a_known_user_logs_in() {
        let creds = Credentials::generate();
        let users = Users::new(&creds.digests());
        assert!(users.check(NODE_RED_USER, creds.node_red_password().as_bytes()));
        assert!(users.check(BRIDGE_USER, creds.bridge_password().as_bytes()));
        // Each user's own password only.
        assert!(!users.check(NODE_RED_USER, creds.bridge_password().as_bytes()));
        assert!(!users.check(BRIDGE_USER, b""));
        assert!(!users.check(BRIDGE_USER, b"wrong"));
        // The digest itself is not a password.
        let digest = digest(creds.bridge_password());
        assert!(!users.check(BRIDGE_USER, digest.as_bytes()));
        // Unknown names, whatever the password.
        assert!(!users.check("admin", creds.bridge_password().as_bytes()));
        assert!(!users.check("", b""));
        assert!(users.knows(BRIDGE_USER) && !users.knows("admin"));
    }

    #[test]
    fn a_malformed_digest_lets_nobody_in() {
        let users = Users::new(&[UserDigest {
            name: "x".into(),
            sha256: "not hex".into(),
        }]);
        assert!(!users.check("x", b"not hex"));
        assert!(!users.knows("x"));
    }

    #[test]
    fn the_tree_is_open_except_the_brokers_own_topics() {
        for topic in ["plant/seq", "a", "a/b/c", "sys/x", "SYS/x"] {
            assert!(may_publish(topic), "{topic}");
        }
        for topic in ["$SYS/broker/uptime", "$share/g/a", "$anything", ""] {
            assert!(!may_publish(topic), "{topic}");
        }
        for filter in ["#", "plant/#", "$SYS/#", "+/x"] {
            assert!(may_subscribe(filter), "{filter}");
        }
        assert!(!may_subscribe(""));
    }
}

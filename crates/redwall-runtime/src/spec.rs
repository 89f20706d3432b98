use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use redwall_crypto::Secret;

use crate::RuntimeError;

/// Everything needed to run one Node-RED instance. Built by Redwall (or the
/// agent) from its own records; this crate never looks anything up.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Stable id (`[a-z0-9-]`), used in file names and as the token audience.
    pub id: String,
    /// Bound on 127.0.0.1 only.
    pub port: u16,
    /// Instance root: holds `settings.js` (rewritten at every start) and
    /// `userdir/`, the only place the instance may write.
    pub dir: PathBuf,
    /// HMAC key for editor tokens.
    pub editor_secret: Secret,
    /// HMAC key for endpoint tokens; must differ from `editor_secret`.
    pub endpoint_secret: Secret,
    /// Node-RED's `credentialSecret`, which encrypts `flows_cred.json`.
    pub credential_secret: Secret,
    /// User environment, visible to flows (`${VAR}`, `env.get`).
    pub env: Vec<EnvVar>,
    /// Variables Redwall itself gives the flows, by `REDWALL_` names a user
    /// may not set (the team broker's `REDWALL_MQTT_URL`, `_USERNAME`,
    /// `_PASSWORD`); they come after, so they win.
    pub platform_env: Vec<EnvVar>,
    pub options: InstanceOptions,
    pub limits: Limits,
    pub identity: SandboxIdentity,
    /// Extra paths the instance may read (and execute).
    pub read_only_paths: Vec<PathBuf>,
    /// What the instance's network looks like.
    pub network: NetworkMode,
}

/// The instance's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// Shares the host's network: it can reach every loopback service of the
    /// host (databases, Redwall itself). Only for machines where namespaces
    /// are unavailable and an operator chose to accept that.
    Host,
    /// Its own network, mount and PID namespaces (needs root): its own
    /// loopback, a private `/run`, `/tmp`, `/var/tmp` and `/dev/shm`, a
    /// `/proc` showing only its own processes, and one veth link, at
    /// [`isolated_addresses`], to Redwall's routing namespace (see the
    /// `netns` module). nftables there and on the host refuse traffic from it
    /// to the host itself, to link-local and metadata addresses and to other
    /// instances, and masquerade the rest outward, except what `egress`
    /// allows.
    Isolated { egress: Vec<EgressRule> },
}

/// One exception to the isolated network's refusals: traffic to `network`
/// (and the ports, if given) is let through. Built from an Owner's validated
/// egress policy (`redwall_policy::egress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressRule {
    /// Network address with no host bits set.
    pub network: IpAddr,
    pub prefix_len: u8,
    pub protocol: EgressProtocol,
    /// Inclusive port range; `None` for every port.
    pub ports: Option<(u16, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressProtocol {
    Tcp,
    Udp,
}

/// The block every isolated instance's link address comes from: each port
/// owns the pair `10.254.0.0 + 2 * port` (host side) and the next address
/// (instance side), a /31, so addresses follow from the port alone and the
/// proxy needs to ask nobody.
pub const ISOLATED_BLOCK: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 254, 0, 0), 15);

/// (host side, instance side) of the link of the isolated instance on `port`.
pub fn isolated_addresses(port: u16) -> (Ipv4Addr, Ipv4Addr) {
    let host = u32::from(ISOLATED_BLOCK.0) + 2 * u32::from(port);
    (Ipv4Addr::from(host), Ipv4Addr::from(host + 1))
}

/// Where Redwall reaches an instance on `port` with the given network.
pub fn instance_address(port: u16, isolated: bool) -> SocketAddr {
    if isolated {
        SocketAddr::new(IpAddr::V4(isolated_addresses(port).1), port)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }
}

/// One user environment variable.
#[derive(Debug, Clone)]
pub struct EnvVar {
    pub name: String,
    pub value: Secret,
}

/// Editor features that let a user add code from npm to the instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceOptions {
    /// Palette manager may install, update and upload node modules.
    pub allow_palette_install: bool,
    /// Function nodes may declare and install npm modules.
    pub allow_function_modules: bool,
}

/// Resource limits applied to the instance process (and inherited by the
/// processes it starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Enforced as `RLIMIT_DATA` (private writable memory), because V8 reserves
    /// far more address space than it uses and `RLIMIT_AS` would stop Node at
    /// start. The V8 heap gets 3/4 of it (`--max-old-space-size`).
    pub memory_bytes: u64,
    /// `RLIMIT_NPROC`: counted per uid, so it only bites with
    /// [`SandboxIdentity::OsUser`] (root ignores it).
    pub max_processes: u64,
    /// `RLIMIT_NOFILE`.
    pub max_open_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 1 << 30,
            max_processes: 256,
            max_open_files: 4096,
        }
    }
}

/// Which OS identity the instance runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxIdentity {
    /// A dedicated uid/gid per instance. Needs Redwall to run as root. The
    /// instance then cannot read root's 0600 files even where Landlock is
    /// missing, and its process limit is its own.
    OsUser { uid: u32, gid: u32 },
    /// Same uid as Redwall. Weaker: Landlock, rlimits and `no_new_privs` still
    /// apply, but without Landlock the instance could read everything Redwall
    /// can, and it shares Redwall's process count.
    Inherit,
}

/// Names Redwall sets itself; user variables may not shadow them.
pub(crate) const RESERVED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "NODE_ENV",
    "NODE_OPTIONS",
    "NODE_PATH",
    "NODE_RED_HOME",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
];

impl InstanceSpec {
    /// Checks what the runtime relies on: an id safe for paths and JS
    /// strings, distinct keys, and user variables that cannot override
    /// Redwall's own.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(RuntimeError::InvalidSpec(format!(
                "instance id {:?} must be 1-64 characters of [a-z0-9-]",
                self.id
            )));
        }
        if self.port < 1024 {
            return Err(RuntimeError::InvalidSpec(format!(
                "port {} is privileged",
                self.port
            )));
        }
        for (name, secret) in [
            ("editor_secret", &self.editor_secret),
            ("endpoint_secret", &self.endpoint_secret),
            ("credential_secret", &self.credential_secret),
        ] {
            if secret.expose().len() < 16 {
                return Err(RuntimeError::InvalidSpec(format!(
                    "{name} is shorter than 16 bytes"
                )));
            }
        }
        if self.editor_secret.expose() == self.endpoint_secret.expose() {
            return Err(RuntimeError::InvalidSpec(
                "editor_secret and endpoint_secret must differ".into(),
            ));
        }
        for var in &self.env {
            let valid = !var.name.is_empty()
                && !var.name.starts_with(|c: char| c.is_ascii_digit())
                && var
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(RuntimeError::InvalidSpec(format!(
                    "environment variable name {:?} must be [A-Za-z_][A-Za-z0-9_]*",
                    var.name
                )));
            }
            if var.name.starts_with("REDWALL_") || RESERVED_ENV.contains(&var.name.as_str()) {
                return Err(RuntimeError::InvalidSpec(format!(
                    "environment variable {} is reserved by Redwall",
                    var.name
                )));
            }
            if var.value.expose().contains('\0') {
                return Err(RuntimeError::InvalidSpec(format!(
                    "environment variable {} contains a NUL byte",
                    var.name
                )));
            }
        }
        for var in &self.platform_env {
            let known = var.name.starts_with("REDWALL_MQTT_")
                && var
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_');
            if !known || var.value.expose().contains('\0') {
                return Err(RuntimeError::InvalidSpec(format!(
                    "platform variable {} is not one Redwall gives",
                    var.name
                )));
            }
        }
        Ok(())
    }

    /// Where Redwall (the proxy, the readiness probe) reaches the instance.
    pub fn address(&self) -> SocketAddr {
        instance_address(self.port, self.is_isolated())
    }

    pub fn is_isolated(&self) -> bool {
        matches!(self.network, NetworkMode::Isolated { .. })
    }

    pub(crate) fn userdir(&self) -> PathBuf {
        self.dir.join("userdir")
    }

    pub(crate) fn settings_path(&self) -> PathBuf {
        self.dir.join("settings.js")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            id: "a-1".into(),
            port: 20000,
            dir: PathBuf::from("/tmp/x"),
            editor_secret: Secret::new("a".repeat(32)),
            endpoint_secret: Secret::new("e".repeat(32)),
            credential_secret: Secret::new("c".repeat(32)),
            env: vec![],
            platform_env: Vec::new(),
            options: InstanceOptions::default(),
            limits: Limits::default(),
            identity: SandboxIdentity::Inherit,
            read_only_paths: vec![],
            network: NetworkMode::Host,
        }
    }

    #[test]
    fn user_env_cannot_override_redwall_variables() {
        for name in [
            "REDWALL_EDITOR_SECRET",
            "NODE_OPTIONS",
            "PATH",
            "LD_PRELOAD",
            "A=B",
            "",
        ] {
            let mut s = spec();
            s.env.push(EnvVar {
                name: name.into(),
                value: Secret::new("x".into()),
            });
            assert!(s.validate().is_err(), "{name} accepted");
        }
        let mut s = spec();
        s.env.push(EnvVar {
            name: "MY_VAR".into(),
            value: Secret::new("x".into()),
        });
        assert!(s.validate().is_ok());
    }

    #[test]
    fn ids_must_be_safe_for_paths() {
        for id in ["", "A", "../x", "a/b", "a\"b"] {
            let mut s = spec();
            s.id = id.into();
            assert!(s.validate().is_err(), "{id:?} accepted");
        }
    }

    #[test]
    fn every_port_has_its_own_pair_inside_the_block() {
        let (base, len) = ISOLATED_BLOCK;
        let block = u32::from(base);
        let mask = u32::MAX << (32 - len);
        let mut seen = std::collections::HashSet::new();
        for port in [0u16, 1, 1024, 20000, 65535] {
            let (h, n) = isolated_addresses(port);
            assert_eq!(u32::from(h) & mask, block);
            assert_eq!(u32::from(n) & mask, block);
            assert_eq!(u32::from(h) % 2, 0);
            assert_eq!(u32::from(n), u32::from(h) + 1);
            assert!(seen.insert(h) && seen.insert(n));
        }
        assert_eq!(
            instance_address(20000, false),
            "127.0.0.1:20000".parse().unwrap()
        );
        assert_eq!(
            instance_address(20000, true),
            "10.254.156.65:20000".parse().unwrap()
        );
    }

    #[test]
    fn keys_must_differ() {
        let mut s = spec();
        s.endpoint_secret = s.editor_secret.clone();
        assert!(s.validate().is_err());
    }
}

//! Configuration: a TOML file, then `REDWALL_*` environment overrides.
//!
//! `check` explains every invalid or unsafe setting in plain words; the
//! server refuses to start while any problem of severity `Error` remains.

use ipnet::IpNet;
use redwall_crypto::password::Argon2Params;
pub use redwall_hub::instances::InstancesConfig;
use redwall_policy::session_rules::SessionLifetimes;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the SQLite database, the master key and generated certificates live.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; defaults to `redwall.db` in the data directory.
    pub database_url: Option<String>,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub sessions: SessionLifetimes,
    pub passwords: Argon2Params,
    pub log: LogConfig,
    pub instances: InstancesConfig,
    pub sso: crate::sso::config::SsoConfig,
    pub audit: AuditConfig,
    pub broker: BrokerConfig,
    pub agents: AgentsConfig,
}

/// Remote agents, which dial in to this hub's HTTPS port.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// Seconds between an agent's heartbeats; an agent is offline once two
    /// are missed.
    pub heartbeat_secs: u64,
    /// Seconds a new agent build has to connect before the agent goes
    /// back to the build it ran.
    pub update_confirm_secs: u64,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            heartbeat_secs: redwall_policy::agent_protocol::DEFAULT_HEARTBEAT_SECS,
            update_confirm_secs: redwall_policy::agent_protocol::DEFAULT_UPDATE_CONFIRM_SECS,
        }
    }
}

/// The team MQTT broker (`redwall-broker`), embedded in `redwall serve`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Run a team broker at all.
    pub enabled: bool,
    /// `embedded` (the default: in this process, no other service) or
    /// `mosquitto` (a Mosquitto 2 that Redwall manages through its
    /// dynamic-security plugin; see `[broker.mosquitto]`).
    pub mode: BrokerMode,
    pub mosquitto: MosquittoConfig,
    /// Plain MQTT, for local instances and scripts: loopback only.
    /// Isolated instances reach the same port on their link to the host.
    pub plain_listen: SocketAddr,
    /// MQTT over TLS with the hub's certificate (only when TLS is on).
    /// `None` for no TLS listener; MQTT over WebSocket stays at `/mqtt`.
    pub tls_listen: Option<SocketAddr>,
    /// Largest MQTT packet, in bytes.
    pub max_packet_bytes: u32,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Messages queued for one slow subscriber before new ones are dropped.
    pub max_queue: usize,
    pub max_connections: usize,
    /// Seconds a client has to send its CONNECT (and to finish TLS).
    pub handshake_secs: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BrokerMode {
    #[default]
    Embedded,
    Mosquitto,
}

/// A Mosquitto 2 managed by Redwall (`broker.mode = "mosquitto"`).
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MosquittoConfig {
    /// `host:port` of the Mosquitto listener Redwall logs in to as the
    /// dynamic-security admin, and clients and instances use.
    pub address: String,
    pub admin_username: String,
    /// A file holding the admin's password (or REDWALL_MOSQUITTO_ADMIN_PASSWORD).
    pub admin_password_file: Option<PathBuf>,
    /// CA certificate (PEM) of Mosquitto's TLS listener; without it the
    /// link is plain MQTT, allowed on loopback only.
    pub ca_file: Option<PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let limits = redwall_broker::Limits::default();
        BrokerConfig {
            enabled: true,
            mode: BrokerMode::Embedded,
            mosquitto: MosquittoConfig::default(),
            plain_listen: SocketAddr::from(([127, 0, 0, 1], 11883)),
            tls_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8883))),
            max_packet_bytes: limits.max_packet_bytes,
            max_subscriptions: limits.max_subscriptions,
            max_queue: limits.max_queue,
            max_connections: limits.max_connections,
            handshake_secs: limits.handshake_timeout.as_secs(),
        }
    }
}

impl BrokerConfig {
    pub fn limits(&self) -> redwall_broker::Limits {
        redwall_broker::Limits {
            max_packet_bytes: self.max_packet_bytes,
            max_subscriptions: self.max_subscriptions,
            max_queue: self.max_queue,
            max_connections: self.max_connections,
            handshake_timeout: std::time::Duration::from_secs(self.handshake_secs.max(1)),
            ..redwall_broker::Limits::default()
        }
    }
}

/// The audit log.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Refusals (wrong keys, passwords...) are counted per client address
    /// and minute, and each address's first in a minute is written at once;
    /// beyond this many addresses a minute they are counted per network,
    /// then per event (`crate::audit::refusals`).
    pub refusal_sources: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            refusal_sources: 1_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Addresses of TLS-terminating reverse proxies. Only requests from these
    /// peers may set X-Forwarded-For / X-Forwarded-Proto.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How browsers reach the console (e.g. `https://redwall.example.com`):
    /// instance hosts send browsers there to log in.
    pub public_url: Option<String>,
    /// How the other replicas reach this one (`https://10.0.0.5:8443`), to
    /// relay requests for instances on agents connected here. Default:
    /// `https://` and the listen address, unless that is 0.0.0.0 or `::`.
    pub relay_url: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// A certificate for localhost generated on first start.
    SelfSigned,
    /// Certificate and key from `cert_file` and `key_file`.
    Files,
    /// Plain HTTP: only on loopback, or behind a listed trusted proxy.
    Off,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mode: TlsMode,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            database_url: None,
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
            sessions: SessionLifetimes::default(),
            passwords: Argon2Params::default(),
            log: LogConfig::default(),
            instances: InstancesConfig::default(),
            sso: Default::default(),
            audit: AuditConfig::default(),
            broker: BrokerConfig::default(),
            agents: AgentsConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            trusted_proxies: Vec::new(),
            max_body_bytes: 64 * 1024,
            public_url: None,
            relay_url: None,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            mode: TlsMode::SelfSigned,
            cert_file: None,
            key_file: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub setting: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.setting, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {name} is not valid: {message}")]
    Env { name: &'static str, message: String },
}

impl Config {
    /// The domain instances are reached under (`{name}.{domain}`): the one
    /// configured, else `localhost` when Redwall listens on loopback only.
    pub fn instance_domain(&self) -> Option<&str> {
        if !self.instances.domain.is_empty() {
            Some(&self.instances.domain)
        } else if self.server.listen.ip().is_loopback() {
            Some("localhost")
        } else {
            None
        }
    }

    /// Instance content must never share the console's origin.
    fn instance_origin_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let console_host = self
            .server
            .public_url
            .as_deref()
            .and_then(|u| u.split_once("://"))
            .map(|(_, rest)| {
                rest.split(['/', ':'])
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase()
            });
        match self.instance_domain() {
            Some(domain) => {
                // An instance named after the console's first label would be
                // served on the console's own origin.
                if let Some(label) = console_host
                    .as_deref()
                    .and_then(|h| h.strip_suffix(&format!(".{domain}")))
                    .filter(|l| !l.contains('.'))
                {
                    out.push(Problem {
                        severity: Severity::Error,
                        setting: "instances.domain",
                        message: format!(
                            "the console's host is {label}.{domain}, which an instance named {label:?} would share: choose a domain the console is not directly under"
                        ),
                    });
                }
                if self.tls.mode == TlsMode::SelfSigned && domain != "localhost" {
                    out.push(Problem {
                        severity: Severity::Warning,
                        setting: "instances.domain",
                        message: format!(
                            "the self-signed certificate covers localhost and *.localhost only, not *.{domain}: use tls.mode = \"files\" with a certificate for *.{domain}"
                        ),
                    });
                }
            }
            None => out.push(Problem {
                severity: Severity::Warning,
                setting: "instances.domain",
                message: "Redwall listens beyond loopback and instances.domain is empty: instances get no address of their own, so browsers cannot reach their editors; set instances.domain (a wildcard DNS name whose names all point here)".into(),
            }),
        }
        if self.instances.path_routing {
            out.push(Problem {
                severity: Severity::Warning,
                setting: "instances.path_routing",
                message: "instances are also reached at /i/{name}/ on the console's origin, for machines only: no cookie is honoured there and every answer is sandboxed, so browser pages, forms and the editor over /i/ do not work; use the instances' own host names for people".into(),
            });
        }
        out
    }

    /// Reads `path` (when given) and applies `REDWALL_*` overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.display().to_string(),
                    message: e.message().to_string(),
                })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.trim().parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                message: e.to_string(),
            })
        }
        if let Some(v) = env("REDWALL_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("REDWALL_DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(v) = env("REDWALL_LISTEN") {
            self.server.listen = parse("REDWALL_LISTEN", &v)?;
        }
        if let Some(v) = env("REDWALL_TRUSTED_PROXIES") {
            self.server.trusted_proxies = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse_net(s.trim()))
                .collect::<Result<_, _>>()
                .map_err(|message| ConfigError::Env {
                    name: "REDWALL_TRUSTED_PROXIES",
                    message,
                })?;
        }
        if let Some(v) = env("REDWALL_TLS_MODE") {
            self.tls.mode = match v.as_str() {
                "self-signed" => TlsMode::SelfSigned,
                "files" => TlsMode::Files,
                "off" => TlsMode::Off,
                _ => {
                    return Err(ConfigError::Env {
                        name: "REDWALL_TLS_MODE",
                        message: "expected self-signed, files or off".into(),
                    })
                }
            };
        }
        if let Some(v) = env("REDWALL_BROKER") {
            self.broker.enabled = match v.as_str() {
                "on" => true,
                "off" => false,
                _ => {
                    return Err(ConfigError::Env {
                        name: "REDWALL_BROKER",
                        message: "expected on or off".into(),
                    })
                }
            };
        }
        if let Some(v) = env("REDWALL_BROKER_MODE") {
            self.broker.mode = match v.as_str() {
                "embedded" => BrokerMode::Embedded,
                "mosquitto" => BrokerMode::Mosquitto,
                _ => {
                    return Err(ConfigError::Env {
                        name: "REDWALL_BROKER_MODE",
                        message: "expected embedded or mosquitto".into(),
                    })
                }
            };
        }
        if let Some(v) = env("REDWALL_MQTT_LISTEN") {
            self.broker.plain_listen = parse("REDWALL_MQTT_LISTEN", &v)?;
        }
        if let Some(v) = env("REDWALL_MQTTS_LISTEN") {
            self.broker.tls_listen = match v.trim() {
                "off" => None,
                addr => Some(parse("REDWALL_MQTTS_LISTEN", addr)?),
            };
        }
        if let Some(v) = env("REDWALL_TLS_CERT_FILE") {
            self.tls.cert_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("REDWALL_TLS_KEY_FILE") {
            self.tls.key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("REDWALL_SESSION_IDLE_SECS") {
            self.sessions.idle_secs = parse("REDWALL_SESSION_IDLE_SECS", &v)?;
        }
        if let Some(v) = env("REDWALL_SESSION_ABSOLUTE_SECS") {
            self.sessions.absolute_secs = parse("REDWALL_SESSION_ABSOLUTE_SECS", &v)?;
        }
        if let Some(v) = env("REDWALL_LOG_FORMAT") {
            self.log.format = match v.as_str() {
                "json" => LogFormat::Json,
                "pretty" => LogFormat::Pretty,
                _ => {
                    return Err(ConfigError::Env {
                        name: "REDWALL_LOG_FORMAT",
                        message: "expected json or pretty".into(),
                    })
                }
            };
        }
        if let Some(v) = env("REDWALL_LOG_LEVEL") {
            self.log.level = v;
        }
        if let Some(v) = env("REDWALL_PUBLIC_URL") {
            self.server.public_url = Some(v.trim().trim_end_matches('/').to_string());
        }
        if let Some(v) = env("REDWALL_INSTANCES_DOMAIN") {
            self.instances.domain = v.trim().to_ascii_lowercase();
        }
        if let Some(v) = env("REDWALL_NODE_RED_PATH") {
            self.instances.node_red_path = Some(PathBuf::from(v));
        }
        if let Some(v) = env("REDWALL_NODE_RED_VERSION") {
            self.instances.node_red_version = v.trim().to_string();
        }
        if let Some(v) = env("REDWALL_INSTALL_AT_START") {
            self.instances.install_at_start = match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError::Env {
                        name: "REDWALL_INSTALL_AT_START",
                        message: "expected true or false".into(),
                    })
                }
            };
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("redwall.db").display()))
    }

    /// Every invalid or unsafe setting, explained.
    pub fn check(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut error = |setting, message: String| {
            out.push(Problem {
                severity: Severity::Error,
                setting,
                message,
            })
        };
        if let Err(e) =
            redwall_policy::agent_protocol::check_heartbeat_secs(self.agents.heartbeat_secs)
        {
            error("agents.heartbeat_secs", e.message);
        }
        if !(5..=3600).contains(&self.agents.update_confirm_secs) {
            error(
                "agents.update_confirm_secs",
                "a new agent build has 5 to 3600 seconds to connect".to_string(),
            );
        }
        let loopback = self.server.listen.ip().is_loopback();
        if self.tls.mode == TlsMode::Off && !loopback && self.server.trusted_proxies.is_empty() {
            error(
                "server.listen",
                format!(
                    "{} is reachable from other machines but TLS is off; enable TLS, listen on 127.0.0.1, or list the TLS-terminating proxy in server.trusted_proxies",
                    self.server.listen
                ),
            );
        }
        if self.tls.mode == TlsMode::Files {
            for (setting, file) in [
                ("tls.cert_file", &self.tls.cert_file),
                ("tls.key_file", &self.tls.key_file),
            ] {
                match file {
                    None => error(setting, "tls.mode is \"files\" but no file is given".into()),
                    Some(p) if !p.is_file() => {
                        error(setting, format!("{} does not exist", p.display()))
                    }
                    Some(_) => {}
                }
            }
        }
        for net in &self.server.trusted_proxies {
            if net.prefix_len() == 0 {
                error(
                    "server.trusted_proxies",
                    format!("{net} trusts every address: anyone could forge their client address"),
                );
            }
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            error(
                "database_url",
                "must start with sqlite: or postgres://".into(),
            );
        }
        for message in self.sessions.problems() {
            error("sessions", message);
        }
        if let Err(e) = redwall_crypto::password::PasswordHasher::new(self.passwords) {
            error("passwords", e.to_string());
        }
        if self.server.max_body_bytes < 1024 || self.server.max_body_bytes > 16 * 1024 * 1024 {
            error(
                "server.max_body_bytes",
                "must be between 1 KiB and 16 MiB".into(),
            );
        }
        let b = &self.broker;
        if b.enabled && !b.plain_listen.ip().is_loopback() {
            error(
                "broker.plain_listen",
                format!(
                    "{} is reachable from other machines without TLS; plain MQTT listens on loopback only (use broker.tls_listen or /mqtt from elsewhere)",
                    b.plain_listen
                ),
            );
        }
        if b.enabled && b.mode == BrokerMode::Mosquitto {
            let m = &b.mosquitto;
            match m.address.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) =>
                {
                    let loopback = host == "localhost"
                        || host
                            .trim_matches(['[', ']'])
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback());
                    if m.ca_file.is_none() && !loopback {
                        error(
                            "broker.mosquitto.ca_file",
                            format!("{} is not on loopback: the admin link to Mosquitto needs TLS (ca_file)", m.address),
                        );
                    }
                }
                _ => error(
                    "broker.mosquitto.address",
                    "broker.mode is \"mosquitto\": give Mosquitto's listener as host:port".into(),
                ),
            }
            if m.admin_username.is_empty() {
                error(
                    "broker.mosquitto.admin_username",
                    "the dynamic-security admin Redwall logs in as (mosquitto_ctrl dynsec init)"
                        .into(),
                );
            }
            if let Some(f) = &m.ca_file {
                if !f.is_file() {
                    error(
                        "broker.mosquitto.ca_file",
                        format!("{} does not exist", f.display()),
                    );
                }
            }
            if let Some(f) = &m.admin_password_file {
                if !f.is_file() {
                    error(
                        "broker.mosquitto.admin_password_file",
                        format!("{} does not exist", f.display()),
                    );
                }
            }
        }
        if b.max_packet_bytes < 1024 || b.max_subscriptions == 0 || b.max_queue == 0 {
            error(
                "broker",
                "max_packet_bytes >= 1024, max_subscriptions >= 1 and max_queue >= 1 are needed"
                    .into(),
            );
        }
        let i = &self.instances;
        if i.port_min == 0 || i.port_min > i.port_max {
            error(
                "instances.port_min",
                "port_min must be between 1 and port_max".into(),
            );
        }
        if !i.domain.is_empty()
            && !i
                .domain
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            error(
                "instances.domain",
                format!("{:?} is not a DNS domain", i.domain),
            );
        }
        if let Some(u) = &self.server.public_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.ends_with('/') {
                error(
                    "server.public_url",
                    "must be an http(s) URL without a trailing slash".into(),
                );
            }
        }
        if let Some(u) = &self.server.relay_url {
            if !u.starts_with("https://") || u.ends_with('/') || u.contains('@') {
                error(
                    "server.relay_url",
                    "must be an https URL without a trailing slash (replicas relay over TLS only)"
                        .into(),
                );
            }
        }
        if i.memory_mb < 128 || i.max_processes < 8 || i.max_open_files < 256 {
            error(
                "instances",
                "memory_mb >= 128, max_processes >= 8 and max_open_files >= 256 are needed to run Node-RED".into(),
            );
        }
        if i.max_body_bytes < 1024 {
            error("instances.max_body_bytes", "must be at least 1 KiB".into());
        }
        if i.upgrade_answer_secs == 0
            || i.max_upstream_per_instance == 0
            || i.max_upstream_per_client == 0
        {
            error(
                "instances",
                "upgrade_answer_secs, max_upstream_per_instance and max_upstream_per_client must be at least 1".into(),
            );
        }
        for (setting, message) in self.sso.problems() {
            error(setting, message);
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            error(
                "log.level",
                format!("{:?} is not a log filter", self.log.level),
            );
        }
        let weak = Argon2Params::default();
        if self.passwords.memory_kib < weak.memory_kib
            && self.passwords.iterations <= weak.iterations
        {
            out.push(Problem {
                severity: Severity::Warning,
                setting: "passwords",
                message: format!(
                    "argon2id memory {} KiB with {} iterations is below the OWASP recommendation (19456 KiB, 2 iterations)",
                    self.passwords.memory_kib, self.passwords.iterations
                ),
            });
        }
        for (setting, message) in self.sso.warnings() {
            out.push(Problem {
                severity: Severity::Warning,
                setting,
                message,
            });
        }
        out.extend(self.sandbox_problems());
        out.extend(self.instance_origin_problems());
        if self.tls.mode == TlsMode::Off && !self.server.trusted_proxies.is_empty() {
            out.push(Problem {
                severity: Severity::Warning,
                setting: "tls.mode",
                message:
                    "TLS is off: make sure the trusted proxy terminates TLS and is the only way in"
                        .into(),
            });
        }
        out
    }
}

impl Config {
    /// One line on what confines instances here, for `redwall config check`.
    /// The broker this configuration runs, in words (`config check`).
    pub fn broker_summary(&self) -> String {
        let b = &self.broker;
        if !b.enabled {
            return "off (broker.enabled = false)".into();
        }
        match b.mode {
            BrokerMode::Embedded => format!(
                "embedded in this process: plain MQTT on {} (loopback; isolated instances reach the same port on their link to the host), MQTT over TLS on {} with this server's certificate, WebSocket at /mqtt on {}; packets up to {} bytes, {} subscriptions per connection, {} queued messages per subscriber",
                b.plain_listen,
                match (b.tls_listen, self.tls.mode) {
                    (Some(addr), mode) if mode != TlsMode::Off => addr.to_string(),
                    _ => "off".into(),
                },
                self.server.listen,
                b.max_packet_bytes,
                b.max_subscriptions,
                b.max_queue,
            ),
            BrokerMode::Mosquitto => format!(
                "Mosquitto at {} managed through its dynamic-security plugin as {:?} ({}); each broker client is a Mosquitto client with a role holding its rules; topics carry the team's prefix t/{{team}}/ in the clear (Mosquitto has no mount per client)",
                b.mosquitto.address,
                b.mosquitto.admin_username,
                if b.mosquitto.ca_file.is_some() { "TLS" } else { "plain, loopback" },
            ),
        }
    }

    pub fn sandbox_summary(&self) -> String {
        let landlock = redwall_runtime::landlock_abi()
            .map_or("no Landlock".to_string(), |a| format!("Landlock ABI {a}"));
        let users = if self.instances.os_users && crate::instances::runner::running_as_root() {
            "one OS user per instance"
        } else {
            "Redwall's own user"
        };
        let network = if !self.instances.network_isolation {
            "host network (isolation off)".to_string()
        } else if redwall_runtime::isolation_problems().is_empty() {
            "own network, mount and PID namespaces; nftables refuse this host, link-local and metadata addresses".to_string()
        } else {
            "network isolation unavailable: instances will not start".to_string()
        };
        format!("{landlock}, {users}, {network}")
    }

    /// What this host's kernel and user allow the instance sandbox to be.
    fn sandbox_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut warn = |message: String| {
            out.push(Problem {
                severity: Severity::Warning,
                setting: "instances",
                message,
            })
        };
        if self.instances.os_users && !crate::instances::runner::running_as_root() {
            warn("Redwall is not running as root, so instances run as Redwall's own user: Landlock still confines them, but run as root for one OS user per instance".into());
        }
        if let Some(message) = self.data_dir_unreachable() {
            warn(message);
        }
        if self.instances.network_isolation {
            let problems = redwall_runtime::isolation_problems();
            if !problems.is_empty() {
                warn(format!(
                    "instances will not start: their network isolation is unavailable here ({}). Fix that, or set instances.network_isolation = false to let instances reach this host's loopback services",
                    problems.join("; ")
                ));
            }
        } else {
            warn("instances.network_isolation is off: flows can reach every service of this host (databases on loopback, Unix sockets, Redwall itself, cloud metadata)".into());
        }
        match redwall_runtime::landlock_abi() {
            Some(abi) if abi >= crate::instances::runner::MIN_LANDLOCK_ABI => {}
            found => {
                let found =
                    found.map_or("no Landlock".to_string(), |a| format!("Landlock ABI {a}"));
                if self.instances.require_landlock {
                    warn(format!("this kernel offers {found}; instances will not start (ABI {} or newer is needed, or set instances.require_landlock = false for weaker isolation)", crate::instances::runner::MIN_LANDLOCK_ABI));
                } else {
                    warn(format!("this kernel offers {found}: instances run without filesystem and port confinement"));
                }
            }
        }
        out
    }
}

impl Config {
    /// Instances running as their own uids must pass every directory above
    /// the data directory (which `serve` itself makes passable): one that
    /// only root may pass (`/root`, a 0700 temp dir) stops them all.
    pub fn data_dir_unreachable(&self) -> Option<String> {
        if !(self.instances.os_users && crate::instances::runner::running_as_root()) {
            return None;
        }
        let dir = std::path::absolute(&self.data_dir).ok()?;
        let uid = self.instances.uid_base;
        let blocked = redwall_runtime::blocked_on_the_way(dir.parent()?, uid, uid)?;
        Some(format!(
            "instances cannot start: their users cannot reach data_dir {}, because {blocked}; use a data_dir under a directory others may pass (for example /var/lib/redwall), or chmod o+x {}",
            dir.display(),
            blocked.dir.display()
        ))
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or CIDR range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_safe() {
        let c = Config::load(None, no_env).unwrap_or_default();
        assert!(c.server.listen.ip().is_loopback());
        assert_eq!(c.tls.mode, TlsMode::SelfSigned);
        // Only the host may add warnings (not root, no Landlock).
        assert!(
            c.check()
                .iter()
                .all(|p| p.setting == "instances" && p.severity == Severity::Warning),
            "{:?}",
            c.check()
        );
    }

    #[test]
    fn plain_http_beyond_loopback_is_refused() {
        let env = |k: &str| match k {
            "REDWALL_LISTEN" => Some("0.0.0.0:8080".to_string()),
            "REDWALL_TLS_MODE" => Some("off".to_string()),
            _ => None,
        };
        let c = Config::load(None, env).unwrap_or_default();
        let problems = c.check();
        assert!(problems
            .iter()
            .any(|p| p.severity == Severity::Error && p.setting == "server.listen"));
    }

    #[test]
    fn a_trusted_proxy_allows_plain_http_with_a_warning() {
        let env = |k: &str| match k {
            "REDWALL_LISTEN" => Some("0.0.0.0:8080".to_string()),
            "REDWALL_TLS_MODE" => Some("off".to_string()),
            "REDWALL_TRUSTED_PROXIES" => Some("10.1.2.3, 192.168.0.0/24".to_string()),
            _ => None,
        };
        let c = Config::load(None, env).unwrap_or_default();
        let problems = c.check();
        assert!(
            problems.iter().all(|p| p.severity == Severity::Warning),
            "{problems:?}"
        );
        assert_eq!(c.server.trusted_proxies.len(), 2);
    }

    #[test]
    fn bad_values_are_explained() {
        let env = |k: &str| (k == "REDWALL_LISTEN").then(|| "not-an-address".to_string());
        assert!(matches!(
            Config::load(None, env),
            Err(ConfigError::Env {
                name: "REDWALL_LISTEN",
                ..
            })
        ));
        let env = |k: &str| (k == "REDWALL_TRUSTED_PROXIES").then(|| "0.0.0.0/0".to_string());
        let c = Config::load(None, env).unwrap_or_default();
        assert!(c
            .check()
            .iter()
            .any(|p| p.setting == "server.trusted_proxies"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("rw-config-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("redwall.toml");
        let _ = std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n");
        assert!(matches!(
            Config::load(Some(&file), no_env),
            Err(ConfigError::Parse { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}

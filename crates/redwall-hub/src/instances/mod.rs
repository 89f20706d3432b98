//! Managed Node-RED instances: the hub's side of `redwall-runtime`.
//!
//! `runner` turns stored instances into runtime specs (opening their sealed
//! keys) and drives the supervisor; `install` installs Node-RED once, in the
//! background; `keys` keeps instance secrets at rest; `options` holds the
//! validated shapes stored as JSON; `events` carries what the supervisor
//! reports into the audit log; `operations` are the hub's instance calls
//! (create, start, stop, delete), each with its audit entry; `rotation`
//! moves every sealed value to a new key version; `on_agents` are instances
//! whose Node-RED a remote agent runs, reached through its tunnel.

pub mod access;
pub mod events;
pub mod install;
pub mod keys;
pub mod on_agents;
pub mod operations;
pub mod options;
pub mod rotation;
pub mod runner;

use std::path::PathBuf;

use serde::Deserialize;

pub use runner::{BrokerEndpoint, ControlGuard, InstanceManager, Pending};

/// Managed Node-RED instances and the proxy in front of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstancesConfig {
    /// Instances are reached at `{name}.{domain}`, each its own origin in
    /// the browser. Empty: `localhost` when Redwall listens on loopback
    /// (browsers resolve `*.localhost` there), none otherwise.
    pub domain: String,
    /// Opt-in: instances are also reached at `/i/{name}/` on the console's
    /// own address, for machines only: no cookie is honoured there and every
    /// answer is sandboxed (`Content-Security-Policy: sandbox`), so nothing
    /// served there can act in the browser as the console's origin.
    pub path_routing: bool,
    /// Loopback ports handed to instances, inclusive.
    pub port_min: u16,
    pub port_max: u16,
    /// The Node-RED version installed with npm on first use.
    pub node_red_version: String,
    /// Use this Node-RED package directory instead of installing one.
    pub node_red_path: Option<PathBuf>,
    /// `serve` begins the npm install at start, in the background, so the
    /// first instance need not wait for it (off: at the first start of an
    /// instance).
    pub install_at_start: bool,
    pub node: PathBuf,
    pub npm: PathBuf,
    /// Run each instance as its own OS user (needs root). Off: the instance
    /// runs as Redwall's user, confined by Landlock only.
    pub os_users: bool,
    /// First uid/gid handed to instances (one per instance).
    pub uid_base: u32,
    pub memory_mb: u64,
    pub max_processes: u64,
    pub max_open_files: u64,
    /// Largest request body the proxy forwards to an instance.
    pub max_body_bytes: u64,
    /// Slowest restart backoff after a crash, in seconds.
    pub max_backoff_secs: u64,
    /// Refuse to start instances on a kernel without Landlock (ABI 4 or
    /// newer, which also confines TCP binds). Turning this off runs them
    /// with only rlimits and, as root, a user of their own.
    pub require_landlock: bool,
    /// How long an instance may take to answer an upgrade (WebSocket)
    /// request before Redwall answers 504 and closes the socket.
    pub upgrade_answer_secs: u64,
    /// Open connections to instances (requests in progress, streams,
    /// WebSockets) at most per instance, and per client address.
    pub max_upstream_per_instance: usize,
    pub max_upstream_per_client: usize,
    /// Run each instance in its own network, mount and PID namespaces (needs
    /// root, `ip` and `nft`): it reaches the outside network but no service
    /// of this host (loopback, Unix sockets, link-local and metadata
    /// addresses) unless an Owner's egress policy allows it. When the host
    /// cannot, instances do not start. Off: instances share the host's
    /// network and can reach every loopback service, Redwall's included.
    pub network_isolation: bool,
}

impl Default for InstancesConfig {
    fn default() -> Self {
        InstancesConfig {
            domain: String::new(),
            path_routing: false,
            port_min: 41000,
            port_max: 41999,
            node_red_version: redwall_runtime::DEFAULT_NODE_RED_VERSION.to_string(),
            node_red_path: None,
            install_at_start: true,
            node: PathBuf::from("node"),
            npm: PathBuf::from("npm"),
            os_users: true,
            uid_base: 61000,
            memory_mb: 1024,
            max_processes: 256,
            max_open_files: 4096,
            max_body_bytes: 5 * 1024 * 1024,
            max_backoff_secs: 30,
            require_landlock: true,
            upgrade_answer_secs: 10,
            max_upstream_per_instance: 1024,
            max_upstream_per_client: 256,
            network_isolation: true,
        }
    }
}

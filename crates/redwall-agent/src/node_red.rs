//! The Node-RED an agent runs, when enrolled with `--node-red-path`: one
//! instance under `redwall_runtime`'s [`Supervisor`], on `127.0.0.1:PORT`
//! only, with the runtime's generated `settings.js` and sandbox.
//!
//! Files, all under the agent's state directory `DIR` (mode 0700):
//!
//! - `DIR/node-red.secrets` (0600, created exclusively, never rewritten):
//!   the three keys of the instance ([`NodeRedSecrets`]): the editor and
//!   endpoint token keys that `settings.js` checks every request against,
//!   and Node-RED's `credentialSecret`, which seals `flows_cred.json` and so
//!   must outlive restarts. Made by the agent itself; none comes from the
//!   hub. `run` refuses the file when the group or others can read it.
//! - `DIR/node-red/settings.js`: generated at every start (holds no secret;
//!   they reach Node-RED in its environment and are removed from it there).
//! - `DIR/node-red/userdir/` (0700): Node-RED's user directory (flows,
//!   credentials, installed nodes), the only place it may write.
//! - `DIR/node-red/run/`: the supervisor's lock and pidfile. The lock keeps
//!   a second agent on the same directory from running Node-RED twice; the
//!   pidfile lets the next `run` stop a Node-RED that a killed agent left.
//!
//! # Sandbox
//!
//! Everything the runtime offers that needs nothing but the agent itself:
//! its own session and process group, rlimits ([`Limits::default`]),
//! `no_new_privs`, an empty capability bounding set, and Landlock
//! (read-only system paths and the Node-RED install, read-write only the
//! userdir, TCP bind only on its port). So Node-RED (and any flow) cannot
//! read `agent.key` or `node-red.secrets`, wherever Landlock is available.
//!
//! Not used: a uid of its own ([`SandboxIdentity::OsUser`]) and the
//! isolated network. Node-RED runs as the agent's own uid
//! ([`SandboxIdentity::Inherit`]), even as root (then without
//! capabilities): picking a uid on a host the agent does not manage could
//! collide with a real account, and the state directory would have to be
//! opened (0711) for that uid to reach its userdir. The isolated network
//! would make Node-RED listen on a link address instead of loopback, and
//! needs the hub's routing namespace. Where the kernel has no Landlock the
//! agent says so at start, since Node-RED could then read the agent's key.
//!
//! # Supervision
//!
//! Independent of the hub link: Node-RED is started before the first dial
//! and stopped only when `run` returns (SIGTERM, revocation), so a lost
//! connection never touches it. The supervisor restarts it after a crash
//! with backoff, and gives up after too many crashes in a row (`failed`
//! until the hub sends `restart`).
//!
//! Whatever changes Node-RED on purpose (the hub's `restart`, a snapshot's
//! deploy and its rollback) first takes [`NodeRed::control`], so a restart
//! never lands in the middle of a deploy's health check.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redwall_crypto::Secret;
use redwall_runtime::{
    encrypt_credentials, Installer, InstanceOptions, InstanceSpec, InstanceStatus, Limits, LogLine,
    NetworkMode, NodeRedAuditEvent, NodeRedInstall, Reporter, RuntimeError, SandboxIdentity,
    Supervisor,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{error, info, warn};
use zeroize::Zeroizing;

use crate::site_events::SiteEventSender;
use crate::state::{create_private, write_private_atomically, NodeRedConfig, NOT_PRIVATE};

/// The instance's id: its token audience, its pidfile's name.
pub const INSTANCE_ID: &str = "node-red";
/// Node-RED's directory in the state directory.
pub const NODE_RED_DIR: &str = "node-red";
/// The instance's keys, in the state directory.
pub const SECRETS_FILE: &str = "node-red.secrets";
/// Node-RED's user directory, in [`NODE_RED_DIR`] (the runtime's layout).
pub const USERDIR: &str = "userdir";
/// The flow files Node-RED loads at start (names set by the runtime's
/// generated `settings.js`: `flowFile`, and Node-RED's own `_cred` suffix).
const FLOWS_FILE: &str = "flows.json";
const CREDENTIALS_FILE: &str = "flows_cred.json";
/// How long a `restart` may take until Node-RED answers again: the
/// supervisor's own readiness limit (60 s) and its stop, with room.
const RESTART_TIMEOUT: Duration = Duration::from_secs(150);

/// What heartbeats say about Node-RED.
pub const STATE_RUNNING: &str = "running";
pub const STATE_STARTING: &str = "starting";
pub const STATE_STOPPED: &str = "stopped";
pub const STATE_FAILED: &str = "failed";

#[derive(Debug, thiserror::Error)]
pub enum NodeRedError {
    #[error("Node-RED: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("{path} can be read by other users (mode {mode:04o}); the agent refuses to use exposed keys. Fix it with `chmod 600 {path}`")]
    SecretsExposed { path: String, mode: u32 },
    #[error("{path}: {why}")]
    Secrets { path: String, why: String },
}

/// The instance's three keys, as stored in [`SECRETS_FILE`] (64 hex
/// characters each).
#[derive(Serialize, Deserialize)]
pub struct NodeRedSecrets {
    pub editor: String,
    pub endpoint: String,
    pub credential: String,
}

impl std::fmt::Debug for NodeRedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeRedSecrets([redacted])")
    }
}

impl Drop for NodeRedSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.editor.zeroize();
        self.endpoint.zeroize();
        self.credential.zeroize();
    }
}

fn random_key() -> String {
    hex::encode(Zeroizing::new(rand::random::<[u8; 32]>()).as_slice())
}

impl NodeRedSecrets {
    fn generate() -> Self {
        Self {
            editor: random_key(),
            endpoint: random_key(),
            credential: random_key(),
        }
    }

    /// Reads `dir/node-red.secrets`, or makes it (0600, exclusively) when
    /// it is missing. Call only while holding the supervisor's lock, so two
    /// agents never both make one.
    pub fn load_or_create(dir: &Path) -> Result<Self, NodeRedError> {
        let path = dir.join(SECRETS_FILE);
        let shown = path.display().to_string();
        let bad = |why: String| NodeRedError::Secrets {
            path: shown.clone(),
            why,
        };
        match File::open(&path) {
            Ok(mut file) => {
                let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
                let mode = meta.permissions().mode() & 0o7777;
                if mode & NOT_PRIVATE != 0 {
                    return Err(NodeRedError::SecretsExposed { path: shown, mode });
                }
                if !meta.is_file() || meta.len() > 4096 {
                    return Err(bad("not a small regular file".into()));
                }
                let mut text = Zeroizing::new(String::new());
                file.read_to_string(&mut text)
                    .map_err(|e| bad(e.to_string()))?;
                let secrets: Self =
                    serde_json::from_str(&text).map_err(|e| bad(format!("not the keys: {e}")))?;
                for key in [&secrets.editor, &secrets.endpoint, &secrets.credential] {
                    if key.len() < 32 {
                        return Err(bad("a key is shorter than 32 characters".into()));
                    }
                }
                Ok(secrets)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secrets = Self::generate();
                // Written whole to a private scratch file, then renamed: a
                // crash never leaves half a file (which would stop `run`).
                let scratch = dir.join(format!(".{SECRETS_FILE}.tmp"));
                let _ = std::fs::remove_file(&scratch);
                let json =
                    Zeroizing::new(serde_json::to_vec(&secrets).map_err(|e| bad(e.to_string()))?);
                let written = create_private(&scratch)
                    .map_err(|e| bad(e.to_string()))
                    .and_then(|mut f| {
                        f.write_all(&json)
                            .and_then(|()| f.sync_all())
                            .map_err(|e| bad(e.to_string()))
                    })
                    .and_then(|()| {
                        std::fs::rename(&scratch, &path).map_err(|e| bad(e.to_string()))
                    });
                if written.is_err() {
                    let _ = std::fs::remove_file(&scratch);
                }
                written?;
                info!("made Node-RED's keys in {shown}");
                Ok(secrets)
            }
            Err(e) => Err(bad(e.to_string())),
        }
    }
}

/// The instance the agent runs: on 127.0.0.1 only (the host network, so
/// [`InstanceSpec::address`] is loopback), as the agent's own uid, its
/// files under `dir/node-red/`.
pub fn instance_spec(
    dir: &Path,
    config: &NodeRedConfig,
    secrets: &NodeRedSecrets,
    install: &NodeRedInstall,
) -> InstanceSpec {
    InstanceSpec {
        id: INSTANCE_ID.to_owned(),
        port: config.port,
        dir: dir.join(NODE_RED_DIR),
        editor_secret: Secret::new(secrets.editor.clone()),
        endpoint_secret: Secret::new(secrets.endpoint.clone()),
        credential_secret: Secret::new(secrets.credential.clone()),
        env: Vec::new(),
        platform_env: Vec::new(),
        // No npm from the editor: what runs is what the host installed.
        options: InstanceOptions::default(),
        limits: Limits::default(),
        identity: SandboxIdentity::Inherit,
        read_only_paths: install.sandbox_read_paths(),
        network: NetworkMode::Host,
    }
}

/// Checks what `enrol` is given before anything is written: a real
/// Node-RED package, a recent enough `node`, an unprivileged port. Returns
/// the configuration with resolved paths.
pub fn check_config(config: &NodeRedConfig) -> Result<NodeRedConfig, String> {
    if config.port < 1024 {
        return Err(format!(
            "--port {}: Node-RED needs an unprivileged port (1024 or above)",
            config.port
        ));
    }
    let install =
        Installer::use_existing(&config.package_dir, &config.node).map_err(|e| e.to_string())?;
    if install.node.components().count() < 2 {
        return Err(format!(
            "--node {}: not found on PATH; give its full path",
            config.node.display()
        ));
    }
    Ok(NodeRedConfig {
        package_dir: install.package_dir,
        node: install.node,
        port: config.port,
    })
}

/// Status changes and Node-RED's audit events go to the agent's log, and
/// to the journal kept for the hub once [`NodeRed::report_to`] named it.
struct LogReporter {
    site: Arc<std::sync::OnceLock<SiteEventSender>>,
}

/// Node-RED's reads and its editor's own connection events say nothing
/// about who changed what (the hub leaves them out of its log too).
fn worth_keeping(event: &str) -> bool {
    !(event.ends_with(".get") || event.ends_with(".list") || event.starts_with("comms."))
}

impl Reporter for LogReporter {
    fn status_changed(&self, _instance_id: &str, status: &InstanceStatus) {
        let site = self.site.get();
        match status {
            InstanceStatus::Crashed {
                reason, restarts, ..
            } => {
                warn!("Node-RED crashed: {reason}");
                if let Some(site) = site {
                    let details = serde_json::json!({ "reason": reason, "restarts": restarts });
                    site.audit("agent", "node_red.crashed", None, Some(details));
                }
            }
            InstanceStatus::CrashLoop { reason } => {
                error!("Node-RED crashed too often and is not restarted: {reason}");
                if let Some(site) = site {
                    let details = serde_json::json!({ "reason": reason, "gave_up": true });
                    site.audit("agent", "node_red.crash_loop", None, Some(details));
                }
            }
            InstanceStatus::Running { pid, .. } => info!("Node-RED runs (pid {pid})"),
            other => info!("Node-RED: {}", state_of(other, false)),
        }
    }

    fn audit(&self, _instance_id: &str, event: NodeRedAuditEvent) {
        info!(
            event = %event.event,
            user = event.user.as_deref().unwrap_or("-"),
            "Node-RED audit event"
        );
        if let Some(site) = self.site.get() {
            if worth_keeping(&event.event) {
                site.audit(
                    "node-red",
                    &event.event,
                    event.user.as_deref(),
                    Some(event.raw),
                );
            }
        }
    }
}

/// The heartbeat's word for a status. A crash counts as `failed` until
/// the supervisor's next try is `starting`; `stopped` after a start that
/// could not even spawn the process (`start_failed`) is `failed` too.
pub fn state_of(status: &InstanceStatus, start_failed: bool) -> &'static str {
    match status {
        InstanceStatus::Running { .. } => STATE_RUNNING,
        InstanceStatus::Starting => STATE_STARTING,
        InstanceStatus::Crashed { .. } | InstanceStatus::CrashLoop { .. } => STATE_FAILED,
        InstanceStatus::Stopped if start_failed => STATE_FAILED,
        InstanceStatus::Stopped => STATE_STOPPED,
    }
}

/// The supervised Node-RED.
pub struct NodeRed {
    supervisor: Supervisor,
    /// What runs: the agent's own instance, or the hub's instance it is
    /// (see [`NodeRed::host`]); changed only under [`NodeRed::control`].
    spec: std::sync::RwLock<InstanceSpec>,
    /// The agent's own token keys, to go back to when it hosts nothing.
    own_keys: (Secret, Secret),
    dir: PathBuf,
    install: NodeRedInstall,
    /// Why the last start did not even spawn Node-RED, if it did not.
    start_failure: Mutex<Option<String>>,
    /// Held by [`Control`]: one deliberate change at a time.
    changing: tokio::sync::Mutex<()>,
    /// Where the reporter keeps events for the hub, once named.
    site: Arc<std::sync::OnceLock<SiteEventSender>>,
    /// Moves on after every start (which may be of another instance, with
    /// an output of its own), so whoever follows the output learns of it
    /// without polling.
    starts: tokio::sync::watch::Sender<u64>,
}

/// The right to change Node-RED (restart it, deploy to it), held by one
/// task at a time; see [`NodeRed::control`].
pub struct Control<'a> {
    node_red: &'a NodeRed,
    _held: tokio::sync::MutexGuard<'a, ()>,
}

impl NodeRed {
    /// Checks the install, takes the supervisor's lock on
    /// `dir/node-red/run`, stops what a killed agent left running, and
    /// loads (or makes) the keys. Starts nothing yet.
    pub fn open(dir: &Path, config: &NodeRedConfig) -> Result<Self, NodeRedError> {
        let install = Installer::use_existing(&config.package_dir, &config.node)?;
        let run_dir: PathBuf = dir.join(NODE_RED_DIR).join("run");
        let site = Arc::new(std::sync::OnceLock::new());
        let reporter = LogReporter { site: site.clone() };
        let supervisor = Supervisor::new(run_dir, Arc::new(reporter))?;
        let reaped = supervisor.reap_orphans();
        if !reaped.is_empty() {
            warn!("stopped the Node-RED an earlier agent left running");
        }
        let secrets = NodeRedSecrets::load_or_create(dir)?;
        let mut spec = instance_spec(dir, config, &secrets, &install);
        let own_keys = (spec.editor_secret.clone(), spec.endpoint_secret.clone());
        if let Some(hosted) =
            crate::hosting::HostedIdentity::load(dir).map_err(|why| NodeRedError::Secrets {
                path: dir.join(crate::hosting::HOSTED_FILE).display().to_string(),
                why,
            })?
        {
            hosted.apply_to(&mut spec);
        }
        spec.validate()?;
        if redwall_runtime::landlock_abi().is_none() {
            warn!("this kernel has no Landlock: Node-RED runs as the agent's user and could read the agent's files (its key included)");
        }
        Ok(Self {
            supervisor,
            spec: std::sync::RwLock::new(spec),
            own_keys,
            dir: dir.to_owned(),
            install,
            start_failure: Mutex::new(None),
            changing: tokio::sync::Mutex::new(()),
            site,
            starts: tokio::sync::watch::Sender::new(0),
        })
    }

    /// From now on, Node-RED's audit events and crashes are also kept for
    /// the hub (the first call counts).
    pub fn report_to(&self, site: SiteEventSender) {
        let _ = self.site.set(site);
    }

    /// The output lines of instance `id` from now on; `None` before its
    /// first start.
    pub fn subscribe_logs(&self, id: &str) -> Option<tokio::sync::broadcast::Receiver<LogLine>> {
        self.supervisor.subscribe_logs(id)
    }

    /// The output lines instance `id` printed so far (the supervisor keeps
    /// the last thousand), oldest first.
    pub fn logs(&self, id: &str) -> Vec<LogLine> {
        self.supervisor.logs(id, usize::MAX)
    }

    /// The variables the agent itself gives the flows (the site broker's
    /// `REDWALL_MQTT_*`, as the hub gives its instances theirs); set before
    /// [`NodeRed::start`], kept across restarts and hosting changes.
    pub fn set_platform_env(&self, vars: Vec<(&'static str, String)>) {
        let mut spec = self.spec.write().unwrap_or_else(|p| p.into_inner());
        spec.platform_env = vars
            .into_iter()
            .map(|(name, value)| redwall_runtime::EnvVar {
                name: name.to_owned(),
                value: Secret::new(value),
            })
            .collect();
    }

    /// Where Node-RED listens: always `127.0.0.1:PORT`.
    pub fn address(&self) -> std::net::SocketAddr {
        self.spec().address()
    }

    /// A copy of what runs now.
    pub(crate) fn spec(&self) -> InstanceSpec {
        self.spec.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The instance id Node-RED's tokens must name: the hub's instance it
    /// is, or [`INSTANCE_ID`].
    pub fn instance_id(&self) -> String {
        self.spec
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .id
            .clone()
    }

    /// Starts Node-RED; returns once its process runs (or could not be
    /// started, which is logged and reported as `failed`).
    pub async fn start(&self) {
        let started = self.supervisor.start(self.spec(), &self.install).await;
        self.record(started.as_ref().err());
        match started {
            Ok(()) => info!(
                "Node-RED {} starting on {}",
                self.install.version,
                self.address()
            ),
            Err(e) => error!("Node-RED could not be started: {e}"),
        }
    }

    /// Marks every start, whichever instance it was of.
    pub fn starts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.starts.subscribe()
    }

    fn record(&self, failure: Option<&RuntimeError>) {
        self.starts.send_modify(|n| *n = n.wrapping_add(1));
        *self.start_failure.lock().unwrap_or_else(|p| p.into_inner()) =
            failure.map(ToString::to_string);
    }

    pub fn status(&self) -> InstanceStatus {
        self.supervisor.status(&self.instance_id())
    }

    /// What heartbeats report.
    pub fn state(&self) -> &'static str {
        let failed = self
            .start_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        state_of(&self.status(), failed)
    }

    /// Stops and starts Node-RED again, and waits until it answers.
    pub async fn restart(&self) -> Result<(), String> {
        self.control().await.restart().await
    }

    /// Waits until no other restart or deploy is under way, and holds that
    /// until the [`Control`] is dropped.
    pub async fn control(&self) -> Control<'_> {
        Control {
            node_red: self,
            _held: self.changing.lock().await,
        }
    }

    /// Node-RED's user directory (flows, credentials, installed modules).
    pub fn userdir(&self) -> PathBuf {
        self.spec().dir.join(USERDIR)
    }

    /// The key of the editor tokens Node-RED accepts (the deploy API).
    pub(crate) fn editor_secret(&self) -> Secret {
        self.spec().editor_secret
    }

    /// Node-RED's `credentialSecret`, which seals `flows_cred.json`.
    pub(crate) fn credential_secret(&self) -> Secret {
        self.spec().credential_secret
    }

    /// Node-RED's pid while the supervisor reports it running.
    pub fn running_pid(&self) -> Option<u32> {
        match self.status() {
            InstanceStatus::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Stops Node-RED (SIGTERM, SIGKILL after the grace period) and gives
    /// up the supervisor's lock.
    pub async fn stop(&self) {
        info!("stopping Node-RED");
        self.supervisor.shutdown().await;
    }
}

impl Control<'_> {
    pub fn node_red(&self) -> &NodeRed {
        self.node_red
    }

    /// Stops and starts Node-RED again, and waits until it answers.
    pub async fn restart(&self) -> Result<(), String> {
        let n = self.node_red;
        let restarted = match n.supervisor.restart(&n.instance_id()).await {
            // The first start never got as far as the supervisor.
            Err(RuntimeError::UnknownInstance(_)) => n.supervisor.start(n.spec(), &n.install).await,
            other => other,
        };
        n.record(restarted.as_ref().err());
        restarted.map_err(|e| format!("Node-RED could not be restarted: {e}"))?;
        self.wait_until_running().await
    }

    /// Stops Node-RED, replaces the flows (and their credentials) it loads
    /// at start with `flows` and `credentials`, and starts it again. The
    /// way back when Node-RED no longer answers its deploy API (a flow that
    /// blocks its event loop): a plain restart would load the same flows
    /// from its userdir and hang again.
    pub async fn restart_with(
        &self,
        flows: &Value,
        credentials: &Map<String, Value>,
    ) -> Result<(), String> {
        let n = self.node_red;
        match n.supervisor.stop(&n.instance_id()).await {
            Ok(()) | Err(RuntimeError::UnknownInstance(_)) => {}
            Err(e) => return Err(format!("Node-RED could not be stopped: {e}")),
        }
        let userdir = n.userdir();
        let sealed = encrypt_credentials(n.credential_secret().expose(), credentials)
            .map_err(|e| format!("cannot seal the credentials for Node-RED: {e}"))?;
        // Node-RED is stopped, so nothing reads these halfway; each is
        // replaced whole all the same, so a crash here leaves a loadable
        // userdir.
        write_private_atomically(&userdir, FLOWS_FILE, flows.to_string().as_bytes())
            .and_then(|()| {
                write_private_atomically(&userdir, CREDENTIALS_FILE, sealed.to_string().as_bytes())
            })
            .map_err(|e| format!("cannot write Node-RED's flows: {e}"))?;
        let started = n.supervisor.start(n.spec(), &n.install).await;
        n.record(started.as_ref().err());
        started.map_err(|e| format!("Node-RED could not be started: {e}"))?;
        self.wait_until_running().await
    }

    /// Makes Node-RED the hub's instance `hosted` (its id and token keys,
    /// kept in [`crate::hosting::HOSTED_FILE`]), or the agent's own again
    /// with `None`, restarting it when that changes anything. Returns
    /// whether it did.
    pub async fn host(
        &self,
        hosted: Option<&crate::hosting::HostedIdentity>,
    ) -> Result<bool, String> {
        let n = self.node_red;
        let now = n.spec();
        let mut wanted = now.clone();
        match hosted {
            Some(h) => h.apply_to(&mut wanted),
            None => {
                wanted.id = INSTANCE_ID.to_owned();
                wanted.editor_secret = n.own_keys.0.clone();
                wanted.endpoint_secret = n.own_keys.1.clone();
            }
        }
        // Kept whatever else changes: the rules and keys the site's own
        // endpoints use must survive a restart without the hub.
        crate::hosting::HostedIdentity::store(&n.dir, hosted)?;
        if wanted.id == now.id
            && wanted.editor_secret.expose() == now.editor_secret.expose()
            && wanted.endpoint_secret.expose() == now.endpoint_secret.expose()
        {
            return Ok(false);
        }
        match n.supervisor.stop(&now.id).await {
            Ok(()) | Err(RuntimeError::UnknownInstance(_)) => {}
            Err(e) => return Err(format!("Node-RED could not be stopped: {e}")),
        }
        *n.spec.write().unwrap_or_else(|p| p.into_inner()) = wanted;
        let started = n.supervisor.start(n.spec(), &n.install).await;
        n.record(started.as_ref().err());
        started.map_err(|e| format!("Node-RED could not be started: {e}"))?;
        self.wait_until_running().await.map(|()| true)
    }

    async fn wait_until_running(&self) -> Result<(), String> {
        self.node_red
            .supervisor
            .wait_until_running(&self.node_red.instance_id(), RESTART_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|e| format!("Node-RED did not come back: {e}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn install() -> NodeRedInstall {
        NodeRedInstall {
            node: "/usr/bin/node".into(),
            red_js: "/opt/nr/node_modules/node-red/red.js".into(),
            package_dir: "/opt/nr/node_modules/node-red".into(),
            version: "4.1.8".into(),
        }
    }

    #[test]
    fn node_red_listens_on_loopback_only() {
        let config = NodeRedConfig {
            package_dir: "/opt/nr/node_modules/node-red".into(),
            node: "/usr/bin/node".into(),
            port: 18_765,
        };
        let spec = instance_spec(
            Path::new("/var/lib/agent"),
            &config,
            &NodeRedSecrets::generate(),
            &install(),
        );
        spec.validate().unwrap();
        assert_eq!(spec.network, NetworkMode::Host);
        assert_eq!(spec.identity, SandboxIdentity::Inherit);
        assert_eq!(spec.address().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(spec.address().port(), 18_765);
        let settings = redwall_runtime::render_settings(&spec);
        assert!(settings.contains("uiHost: \"127.0.0.1\","), "{settings}");
        assert!(settings.contains("uiPort: 18765,"));
        assert_eq!(spec.dir, Path::new("/var/lib/agent/node-red"));
        assert!(spec
            .read_only_paths
            .contains(&PathBuf::from("/opt/nr/node_modules")));
    }

    #[test]
    fn keys_are_made_once_private_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let first = NodeRedSecrets::load_or_create(dir).unwrap();
        let path = dir.join(SECRETS_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        let keys = [&first.editor, &first.endpoint, &first.credential];
        assert!(keys.iter().all(|k| k.len() == 64));
        assert!(first.editor != first.endpoint && first.endpoint != first.credential);
        let again = NodeRedSecrets::load_or_create(dir).unwrap();
        assert_eq!(again.credential, first.credential);
        assert_eq!(again.editor, first.editor);
        assert!(!format!("{again:?}").contains(&first.editor));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeRedSecrets::load_or_create(dir).unwrap_err();
        assert!(matches!(
            err,
            NodeRedError::SecretsExposed { mode: 0o644, .. }
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(
            NodeRedSecrets::load_or_create(dir),
            Err(NodeRedError::Secrets { .. })
        ));
    }

    #[test]
    fn statuses_map_to_the_heartbeats_words() {
        let running = InstanceStatus::Running {
            pid: 7,
            since_unix_ms: 1,
        };
        assert_eq!(state_of(&running, false), "running");
        assert_eq!(state_of(&InstanceStatus::Starting, false), "starting");
        assert_eq!(state_of(&InstanceStatus::Stopped, false), "stopped");
        assert_eq!(state_of(&InstanceStatus::Stopped, true), "failed");
        let crashed = InstanceStatus::Crashed {
            reason: "x".into(),
            at_unix_ms: 1,
            restarts: 1,
        };
        assert_eq!(state_of(&crashed, false), "failed");
        let looped = InstanceStatus::CrashLoop { reason: "x".into() };
        assert_eq!(state_of(&looped, false), "failed");
    }

    #[test]
    fn enrolment_refuses_a_privileged_port_and_a_missing_install() {
        let tmp = tempfile::tempdir().unwrap();
        let config = |port| NodeRedConfig {
            package_dir: tmp.path().to_path_buf(),
            node: "node".into(),
            port,
        };
        assert!(check_config(&config(80)).unwrap_err().contains("1024"));
        assert!(check_config(&config(1880))
            .unwrap_err()
            .contains("red.js not found"));
    }
}

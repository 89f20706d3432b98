//! Drives the runtime supervisor for the instances in the store.
//!
//! Only `redwall serve` builds a manager (it holds the supervisor's lock on
//! the data directory); offline commands never start instances.

use crate::instances::events::{forward_reports, ChannelReporter};
use crate::instances::install::{Phase, RuntimeInstall};
use crate::instances::keys::{env_aad, open, open_keys};
use crate::instances::options::InstanceOptions;
use crate::instances::InstancesConfig;
use crate::{Hub, HubError, HubResult};
use anyhow::Context;
use redwall_crypto::Secret;
use redwall_policy::egress::{self, EgressRule, EgressRuleInput};
use redwall_runtime::{
    EgressProtocol, EnvVar, InstanceSpec, InstanceStatus, Limits, LogLine, NetworkMode,
    NodeRedInstall, RuntimeError, SandboxIdentity, Supervisor, SupervisorOptions,
};
use redwall_store::Instance;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Why an instance is not (yet) with the supervisor, shown as its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Waiting for Node-RED's install; it starts when that is done.
    Installing,
    /// Could not be started; the reason says why (and what to do).
    Failed(String),
}

/// Proof that the caller holds an instance's control lock
/// ([`InstanceManager::control`]); released when dropped.
pub struct ControlGuard(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>);

pub struct InstanceManager {
    supervisor: Supervisor,
    install: Arc<RuntimeInstall>,
    pending: Mutex<HashMap<String, Pending>>,
    config: InstancesConfig,
    instances_dir: PathBuf,
    os_users: bool,
    /// What keeps this host from isolating instances' networks, found once.
    isolation_problems: OnceCell<Vec<String>>,
    /// Set once the team broker listens ([`InstanceManager::set_broker`]).
    broker: OnceLock<BrokerEndpoint>,
    /// One lock per instance: a start (also one that waited for the npm
    /// install) and a stop of the same instance never interleave, so a
    /// stop cannot slip between a start's check and its spawn and leave the
    /// instance running after the user stopped it.
    controls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// An instance's stored egress policy, validated again on the way out: a
/// stored rule that no longer validates stops the start rather than open
/// anything.
pub fn stored_egress(instance: &Instance) -> HubResult<Vec<EgressRule>> {
    let inputs: Vec<EgressRuleInput> =
        serde_json::from_str(&instance.egress).map_err(HubError::internal)?;
    egress::validate(&inputs).map_err(HubError::internal)
}

/// The runtime's form of validated rules.
pub fn runtime_egress(rules: &[EgressRule]) -> Vec<redwall_runtime::EgressRule> {
    rules
        .iter()
        .map(|r| redwall_runtime::EgressRule {
            network: r.network.network(),
            prefix_len: r.network.prefix_len(),
            protocol: match r.protocol {
                egress::Protocol::Tcp => EgressProtocol::Tcp,
                egress::Protocol::Udp => EgressProtocol::Udp,
            },
            ports: r.ports.map(|p| (p.start, p.end)),
        })
        .collect()
}

/// Exceptions Redwall itself opens for every isolated instance: the team
/// broker's plain listener on the host's end of the instances' link (every
/// connection to it must still log in, and sees only its own team).
fn platform_egress(broker: Option<SocketAddr>) -> Vec<redwall_runtime::EgressRule> {
    broker
        .map(|addr| redwall_runtime::EgressRule {
            network: addr.ip(),
            prefix_len: if addr.is_ipv4() { 32 } else { 128 },
            protocol: EgressProtocol::Tcp,
            ports: Some((addr.port(), addr.port())),
        })
        .into_iter()
        .collect()
}

/// Where an instance reaches the team broker, once it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokerEndpoint {
    /// For instances on the host's network: a loopback listener.
    pub loopback: SocketAddr,
    /// For isolated instances: the listener on the host's end of their link.
    pub isolated: Option<SocketAddr>,
    /// Topics carry the team's prefix in the clear (a managed Mosquitto,
    /// which cannot mount a tree per client): instances are told it in
    /// `REDWALL_MQTT_TOPIC_PREFIX` (empty with the embedded broker).
    pub topic_prefix: bool,
}

fn runtime_error(e: RuntimeError) -> HubError {
    match e {
        RuntimeError::PortInUse(port) => HubError::conflict(
            "port_in_use",
            format!("the instance's port {port} is taken by another program"),
        ),
        RuntimeError::AlreadyRunning(_) => {
            HubError::conflict("already_running", "the instance is already running")
        }
        RuntimeError::NodeVersion { .. } | RuntimeError::InvalidInstall { .. } => {
            HubError::unavailable("runtime_unavailable", e.to_string())
        }
        other => HubError::unavailable("runtime_failed", other.to_string()),
    }
}

fn install_error(phase: Phase) -> HubError {
    match phase {
        Phase::Failed {
            unavailable: true,
            message,
        } => HubError::unavailable("runtime_unavailable", message),
        Phase::Failed { message, .. } => HubError::unavailable("runtime_failed", message),
        other => HubError::internal(format!("the install ended as {other:?}")),
    }
}

impl InstanceManager {
    /// Takes the supervisor lock, reaps what a killed Redwall left running,
    /// and starts forwarding supervisor reports to the audit log.
    pub(crate) fn open(
        hub: &Hub,
        config: InstancesConfig,
        data_dir: &Path,
    ) -> anyhow::Result<Arc<InstanceManager>> {
        // Running as root lets each instance have its own uid; otherwise
        // Landlock alone confines it (`redwall doctor`-style checks warn).
        let os_users = config.os_users && running_as_root();
        if os_users {
            // Instances' uids must traverse the data dir to reach their own
            // directory, without listing it; the database and keys stay 0600.
            set_mode(data_dir, 0o711)?;
        }
        let instances_dir = data_dir.join("instances");
        let runtime_dir = data_dir.join("runtime");
        let run_dir = data_dir.join("run");
        for d in [&instances_dir, &runtime_dir, &run_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        set_mode(&instances_dir, 0o711)?;
        set_mode(&runtime_dir, 0o755)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let options = SupervisorOptions {
            backoff_max: Duration::from_secs(config.max_backoff_secs.max(1)),
            ..SupervisorOptions::default()
        };
        let supervisor = Supervisor::with_options(run_dir, Arc::new(ChannelReporter(tx)), options)
            .context("starting the instance supervisor")?;
        let reaped = supervisor.reap_orphans();
        if !reaped.is_empty() {
            tracing::warn!(
                count = reaped.len(),
                "stopped instances left running by an earlier Redwall"
            );
        }
        if config.network_isolation {
            // The host's one link to the instances' network is made now,
            // before anyone uses the console: a browser on this host aborts
            // its requests when the host's links change.
            // (Blocking for a few commands, once, while Redwall starts.)
            if redwall_runtime::isolation_problems().is_empty() {
                if let Err(e) = redwall_runtime::prepare_network() {
                    tracing::error!(error = %e, "preparing the instances' network failed");
                }
            }
        }
        tokio::spawn(forward_reports(hub.clone(), rx));
        let manager = Arc::new(InstanceManager {
            supervisor,
            install: RuntimeInstall::new(config.clone(), runtime_dir),
            pending: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
            config,
            instances_dir,
            os_users,
            isolation_problems: OnceCell::new(),
            broker: OnceLock::new(),
        });
        if let Some(reason) = manager.unreachable(&manager.instances_dir) {
            tracing::error!("instances cannot start: {reason}");
        }
        // The first instance should not wait for npm: begin now.
        if manager.config.install_at_start {
            manager.install.begin();
        }
        Ok(manager)
    }

    /// Node-RED, installed with npm on first use: waits for the install.
    pub async fn runtime(&self) -> HubResult<NodeRedInstall> {
        self.install.wait().await.map_err(install_error)
    }

    /// Whether Node-RED is adopted from `instances.node_red_path` (checked
    /// at once) rather than installed with npm (which can take minutes).
    pub fn adopts_runtime(&self) -> bool {
        self.install.adopts()
    }

    /// Why an instance's own uid could not reach `path`, when instances
    /// run as their own uids. Redwall, as root, passes every directory, so
    /// without this check they would fail out of sight.
    pub fn unreachable(&self, path: &Path) -> Option<String> {
        if !self.os_users {
            return None;
        }
        let id = self.config.uid_base;
        redwall_runtime::blocked_on_the_way(path, id, id).map(|blocked| {
            format!(
                "the instance's user cannot reach {}, because {blocked}; move data_dir under a directory others may pass (for example /var/lib/redwall), or chmod o+x {}",
                path.display(),
                blocked.dir.display()
            )
        })
    }

    /// Refuses (and shows in the status) an instance its uid cannot reach.
    fn check_reachable(&self, instance_id: &str, paths: &[&Path]) -> HubResult<()> {
        match paths.iter().find_map(|p| self.unreachable(p)) {
            None => Ok(()),
            Some(reason) => {
                self.set_pending(instance_id, Some(Pending::Failed(reason.clone())));
                Err(HubError::unavailable("instances_unreachable", reason))
            }
        }
    }

    fn set_pending(&self, instance_id: &str, pending: Option<Pending>) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending {
            Some(p) => map.insert(instance_id.to_string(), p),
            None => map.remove(instance_id),
        };
    }

    fn take_installing(&self, instance_id: &str) -> bool {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(instance_id) == Some(&Pending::Installing) {
            map.remove(instance_id);
            true
        } else {
            false
        }
    }

    /// Why the instance is not with the supervisor yet, if it is not.
    pub fn pending(&self, instance_id: &str) -> Option<Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(instance_id)
            .cloned()
    }

    /// npm's latest line while Node-RED installs.
    pub fn install_progress(&self) -> Option<String> {
        self.install.latest()
    }

    pub fn spec(
        &self,
        hub: &Hub,
        instance: &Instance,
        env: Vec<EnvVar>,
        install: &NodeRedInstall,
    ) -> HubResult<InstanceSpec> {
        let keys = open_keys(&hub.keyring, instance)?;
        let offset = u32::from(instance.port.saturating_sub(self.config.port_min));
        let identity = if self.os_users {
            let id = self.config.uid_base.saturating_add(offset);
            SandboxIdentity::OsUser { uid: id, gid: id }
        } else {
            SandboxIdentity::Inherit
        };
        Ok(InstanceSpec {
            id: instance.id.clone(),
            port: instance.port,
            dir: self.instances_dir.join(&instance.id),
            editor_secret: keys.editor,
            endpoint_secret: keys.endpoint,
            credential_secret: keys.credential,
            env,
            platform_env: Vec::new(),
            options: InstanceOptions::from_json(&instance.options).runtime(),
            limits: Limits {
                memory_bytes: self.config.memory_mb.saturating_mul(1024 * 1024),
                max_processes: self.config.max_processes,
                max_open_files: self.config.max_open_files,
            },
            identity,
            read_only_paths: install.sandbox_read_paths(),
            network: if self.config.network_isolation {
                let mut rules = platform_egress(self.broker_for_isolated());
                rules.extend(runtime_egress(&stored_egress(instance)?));
                NetworkMode::Isolated { egress: rules }
            } else {
                NetworkMode::Host
            },
        })
    }

    /// Tells the manager where instances reach the team broker; instances
    /// started from now on get its address and their own credentials.
    pub fn set_broker(&self, endpoint: BrokerEndpoint) {
        let _ = self.broker.set(endpoint);
    }

    /// Whether the host's end of the instances' link exists, so a broker
    /// can listen there: instances are isolated and the network is ready.
    pub fn isolated_broker_address(&self) -> Option<std::net::IpAddr> {
        (self.config.network_isolation && redwall_runtime::isolation_problems().is_empty())
            .then(|| std::net::IpAddr::V4(redwall_runtime::isolated_addresses(0).0))
    }

    fn broker_for_isolated(&self) -> Option<SocketAddr> {
        self.broker.get().and_then(|b| b.isolated)
    }

    /// `REDWALL_MQTT_URL`, `_USERNAME` and `_PASSWORD` for the instance's
    /// own broker identity, with a password new at every start (the old one
    /// stops working, and its connections close). None without a broker.
    async fn broker_env(&self, hub: &Hub, instance: &Instance) -> HubResult<Vec<EnvVar>> {
        let Some(endpoint) = self.broker.get() else {
            return Ok(Vec::new());
        };
        let addr = match (self.config.network_isolation, endpoint.isolated) {
            (true, Some(isolated)) => isolated,
            _ => endpoint.loopback,
        };
        let origin = crate::Origin::local("redwall-supervisor");
        let (username, password) = hub
            .instance_broker_identity(crate::Who::anonymous(&origin), instance)
            .await?;
        let var = |name: &str, value: String| EnvVar {
            name: name.to_string(),
            value: Secret::new(value),
        };
        let prefix = if endpoint.topic_prefix {
            redwall_policy::mqtt_acl::mount_prefix(&instance.team_id)
        } else {
            String::new()
        };
        Ok(vec![
            var("REDWALL_MQTT_URL", format!("mqtt://{addr}")),
            var("REDWALL_MQTT_TOPIC_PREFIX", prefix),
            var("REDWALL_MQTT_USERNAME", username),
            var("REDWALL_MQTT_PASSWORD", password.expose().to_string()),
        ])
    }

    /// The instance's environment, opened for its process.
    pub async fn env(&self, hub: &Hub, instance: &Instance) -> HubResult<Vec<EnvVar>> {
        let entries = hub.store.list_instance_env(&instance.id).await?;
        entries
            .into_iter()
            .map(|e| {
                let plain = open(&hub.keyring, &e.value, &env_aad(&instance.id, &e.name))
                    .map_err(HubError::internal)?;
                Ok(EnvVar {
                    name: e.name,
                    value: Secret::new(String::from_utf8_lossy(&plain).into_owned()),
                })
            })
            .collect()
    }

    /// Starts the instance, or, while npm installs Node-RED, marks it
    /// `installing` and starts it when the install is done (the caller
    /// does not wait for npm).
    pub async fn start(
        self: &Arc<Self>,
        hub: &Hub,
        instance: &Instance,
        _held: &ControlGuard,
    ) -> HubResult<()> {
        if self.config.require_landlock
            && redwall_runtime::landlock_abi().is_none_or(|abi| abi < MIN_LANDLOCK_ABI)
        {
            return Err(HubError::unavailable(
                "sandbox_unavailable",
                "this kernel lacks Landlock (ABI 4 or newer), so instances cannot be confined; see `redwall config check`",
            ));
        }
        if self.config.network_isolation {
            let problems = self
                .isolation_problems
                .get_or_init(|| async {
                    tokio::task::spawn_blocking(redwall_runtime::isolation_problems)
                        .await
                        .unwrap_or_else(|e| vec![e.to_string()])
                })
                .await;
            if !problems.is_empty() {
                return Err(HubError::unavailable(
                    "sandbox_unavailable",
                    format!(
                        "instances cannot be isolated from this host's network here ({}); see `redwall config check`",
                        problems.join("; ")
                    ),
                ));
            }
        }
        self.check_reachable(&instance.id, &[&self.instances_dir])?;
        if self.install.ready().is_none() && !self.install.adopts() {
            if self.pending(&instance.id) != Some(Pending::Installing) {
                self.set_pending(&instance.id, Some(Pending::Installing));
                let (me, hub, id) = (self.clone(), hub.clone(), instance.id.clone());
                tokio::spawn(async move { me.start_after_install(&hub, &id).await });
            }
            self.install.begin();
            return Ok(());
        }
        self.start_now(hub, instance).await
    }

    /// The instance's control lock: held from a start's or stop's decision
    /// to its end, including the caller's record of the desired state, so
    /// two controls of one instance never interleave.
    pub async fn control(&self, instance_id: &str) -> ControlGuard {
        let lock = self
            .controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(instance_id.to_string())
            .or_default()
            .clone();
        ControlGuard(lock.lock_owned().await)
    }

    async fn start_now(&self, hub: &Hub, instance: &Instance) -> HubResult<()> {
        self.set_pending(&instance.id, None);
        let install = self.runtime().await?;
        let read = install.sandbox_read_paths();
        let mut needed: Vec<&Path> = read.iter().map(PathBuf::as_path).collect();
        needed.push(&install.node);
        self.check_reachable(&instance.id, &needed)?;
        let env = self.env(hub, instance).await?;
        let mut spec = self.spec(hub, instance, env, &install)?;
        spec.platform_env = self.broker_env(hub, instance).await?;
        self.supervisor
            .start(spec, &install)
            .await
            .map_err(runtime_error)
    }

    /// The rest of a start that waited for the install; nobody waits for
    /// its answer, so a failure becomes the instance's status.
    async fn start_after_install(&self, hub: &Hub, instance_id: &str) {
        let installed = self.install.wait().await;
        // Under the control lock from the check of the desired state to the
        // spawn: a stop either comes first (and the check sees it) or waits
        // and stops what this started.
        let _control = self.control(instance_id).await;
        // Taken, not read: of two waiters for one instance (a restart during
        // the install), only one goes on.
        if !self.take_installing(instance_id) {
            return; // stopped, deleted or started meanwhile
        }
        let instance = match hub.store.get_instance_by_id(instance_id).await {
            Ok(Some(i)) if i.desired_state == "running" => i,
            Ok(_) => return self.set_pending(instance_id, None),
            Err(e) => {
                let reason = format!("could not read the instance: {e}");
                return self.set_pending(instance_id, Some(Pending::Failed(reason)));
            }
        };
        let result = match installed {
            Ok(_) => self.start_now(hub, &instance).await,
            Err(phase) => Err(install_error(phase)),
        };
        if let Err(e) = result {
            tracing::warn!(instance = %instance.name, error = %e, "could not start an instance");
            let reason = match e.code() {
                Some("runtime_failed" | "runtime_unavailable") => {
                    format!("installing Node-RED failed: {e}; start the instance to try again")
                }
                _ => e.to_string(),
            };
            self.set_pending(instance_id, Some(Pending::Failed(reason)));
        }
    }

    /// Stops the instance; one that is not running is already stopped.
    pub async fn stop(&self, instance_id: &str, _held: &ControlGuard) -> HubResult<()> {
        self.set_pending(instance_id, None);
        match self.supervisor.stop(instance_id).await {
            Ok(()) | Err(RuntimeError::UnknownInstance(_)) => Ok(()),
            Err(e) => Err(runtime_error(e)),
        }
    }

    pub async fn restart(
        self: &Arc<Self>,
        hub: &Hub,
        instance: &Instance,
        held: &ControlGuard,
    ) -> HubResult<()> {
        self.stop(&instance.id, held).await?;
        self.start(hub, instance, held).await
    }

    /// Applies an instance's new egress policy at once when it runs (and to
    /// its restarts); a stopped instance gets it at its next start.
    pub async fn set_egress(&self, instance: &Instance, rules: &[EgressRule]) -> HubResult<()> {
        if !self.config.network_isolation {
            return Ok(());
        }
        let mut all = platform_egress(self.broker_for_isolated());
        all.extend(runtime_egress(rules));
        self.supervisor
            .set_egress(&instance.id, all)
            .await
            .map_err(runtime_error)
    }

    /// What the sandbox of the instance's last start achieved.
    /// The instance's own directory of Node-RED files (flows, credentials,
    /// modules), written by the instance.
    pub fn userdir(&self, instance_id: &str) -> PathBuf {
        self.instances_dir.join(instance_id).join("userdir")
    }

    /// Where Redwall reaches the instance.
    pub fn address(&self, instance: &Instance) -> SocketAddr {
        redwall_runtime::instance_address(instance.port, self.config.network_isolation)
    }

    pub fn sandbox_report(&self, instance_id: &str) -> Option<redwall_runtime::SandboxReport> {
        self.supervisor.sandbox_report(instance_id)
    }

    pub fn status(&self, instance_id: &str) -> InstanceStatus {
        self.supervisor.status(instance_id)
    }

    /// The instance's last lines; while it waits for Node-RED's install
    /// (or that failed), npm's.
    pub fn logs(&self, instance_id: &str, lines: usize) -> Vec<LogLine> {
        match self.pending(instance_id) {
            Some(Pending::Installing) => self.install.lines(lines),
            Some(Pending::Failed(_)) if self.supervisor.logs(instance_id, 1).is_empty() => {
                self.install.lines(lines)
            }
            _ => self.supervisor.logs(instance_id, lines),
        }
    }

    /// Lines as they come: npm's while the instance waits for the install
    /// (that stream ends with the install), then the instance's own.
    pub fn subscribe_logs(
        &self,
        instance_id: &str,
    ) -> Option<tokio::sync::broadcast::Receiver<LogLine>> {
        if self.pending(instance_id) == Some(Pending::Installing) {
            if let Some(rx) = self.install.subscribe() {
                return Some(rx);
            }
        }
        self.supervisor.subscribe_logs(instance_id)
    }

    /// Removes the instance's files after it stopped.
    pub fn remove_files(&self, instance_id: &str) {
        self.set_pending(instance_id, None);
        let dir = self.instances_dir.join(instance_id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove an instance directory");
            }
        }
    }

    /// Starts every instance that was running when Redwall stopped.
    pub async fn start_desired(self: &Arc<Self>, hub: &Hub) {
        let Ok(instances) = hub.store.list_all_instances().await else {
            return;
        };
        for instance in instances.iter().filter(|i| i.desired_state == "running") {
            let held = self.control(&instance.id).await;
            if let Err(e) = self.start(hub, instance, &held).await {
                tracing::warn!(instance = %instance.name, error = %e, "could not start an instance");
                self.set_pending(&instance.id, Some(Pending::Failed(e.to_string())));
            }
        }
    }

    pub async fn shutdown(&self) {
        self.supervisor.shutdown().await;
    }

    /// The loopback ports handed to instances, inclusive.
    pub fn port_range(&self) -> (u16, u16) {
        (self.config.port_min, self.config.port_max)
    }

    pub fn os_users(&self) -> bool {
        self.os_users
    }
}

/// Landlock ABI 4 is the first to confine TCP binds.
pub const MIN_LANDLOCK_ABI: u32 = 4;

/// The effective uid is root (std offers no euid call; /proc names it).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .map(|v| v == "0")
        })
        .unwrap_or(false)
}

fn set_mode(path: &std::path::Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

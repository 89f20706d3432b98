//! Drives the runtime supervisor for the instances in the store.
//!
//! Only `redwall serve` builds a manager (it holds the supervisor's lock on
//! the data directory); offline commands never start instances.

use crate::config::InstancesConfig;
use crate::error::{ApiError, ApiResult};
use crate::instances::events::{forward_reports, ChannelReporter};
use crate::instances::model::InstanceOptions;
use crate::instances::sealing;
use crate::state::AppState;
use anyhow::Context;
use axum::http::StatusCode;
use rand::RngCore;
use redwall_crypto::keyring::Keyring;
use redwall_crypto::Secret;
use redwall_policy::egress::{self, EgressRule, EgressRuleInput};
use redwall_runtime::{
    EgressProtocol, EnvVar, Installer, InstanceSpec, InstanceStatus, Limits, LogLine, NetworkMode,
    NodeRedInstall, RuntimeError, SandboxIdentity, Supervisor, SupervisorOptions,
};
use redwall_store::Instance;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The three per-instance keys, sealed together in `instances.secrets`.
pub struct InstanceKeys {
    pub admin: Secret,
    pub endpoint: Secret,
    pub credential: Secret,
}

const KEY_BYTES: usize = 32;

fn encode(bytes: &[u8]) -> Secret {
    use base64::Engine;
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub fn secrets_aad(instance_id: &str) -> String {
    format!("instance/{instance_id}/keys")
}

pub fn env_aad(instance_id: &str, name: &str) -> String {
    format!("instance/{instance_id}/env/{name}")
}

/// Fresh random keys for a new instance, sealed.
pub fn new_sealed_keys(keyring: &Keyring, version: u32, instance_id: &str) -> String {
    let mut raw = zeroize::Zeroizing::new([0u8; KEY_BYTES * 3]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut_slice());
    sealing::seal(keyring, version, raw.as_slice(), &secrets_aad(instance_id))
}

pub fn open_keys(keyring: &Keyring, instance: &Instance) -> ApiResult<InstanceKeys> {
    let raw = sealing::open(keyring, &instance.secrets, &secrets_aad(&instance.id))
        .map_err(ApiError::internal)?;
    if raw.len() != KEY_BYTES * 3 {
        return Err(ApiError::internal("instance keys have the wrong length"));
    }
    Ok(InstanceKeys {
        admin: encode(&raw[..KEY_BYTES]),
        endpoint: encode(&raw[KEY_BYTES..KEY_BYTES * 2]),
        credential: encode(&raw[KEY_BYTES * 2..]),
    })
}

pub struct InstanceManager {
    supervisor: Supervisor,
    install: OnceCell<NodeRedInstall>,
    config: InstancesConfig,
    instances_dir: PathBuf,
    runtime_dir: PathBuf,
    os_users: bool,
    /// What keeps this host from isolating instances' networks, found once.
    isolation_problems: OnceCell<Vec<String>>,
}

/// An instance's stored egress policy, validated again on the way out: a
/// stored rule that no longer validates stops the start rather than open
/// anything.
pub fn stored_egress(instance: &Instance) -> ApiResult<Vec<EgressRule>> {
    let inputs: Vec<EgressRuleInput> =
        serde_json::from_str(&instance.egress).map_err(ApiError::internal)?;
    egress::validate(&inputs).map_err(ApiError::internal)
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

/// Exceptions Redwall itself opens for every isolated instance. The team's
/// MQTT broker goes here once it exists (its address and port, for the
/// instance's own team only); today there are none.
fn platform_egress(_instance: &Instance) -> Vec<redwall_runtime::EgressRule> {
    Vec::new()
}

fn runtime_error(e: RuntimeError) -> ApiError {
    match e {
        RuntimeError::PortInUse(port) => ApiError::conflict(
            "port_in_use",
            format!("the instance's port {port} is taken by another program"),
        ),
        RuntimeError::AlreadyRunning(_) => {
            ApiError::conflict("already_running", "the instance is already running")
        }
        RuntimeError::NodeVersion { .. } | RuntimeError::InvalidInstall { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "runtime_unavailable",
            e.to_string(),
        ),
        other => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "runtime_failed",
            other.to_string(),
        ),
    }
}

impl InstanceManager {
    /// Takes the supervisor lock, reaps what a killed Redwall left running,
    /// and starts forwarding supervisor reports to the audit log.
    pub fn open(state: &AppState) -> anyhow::Result<Arc<InstanceManager>> {
        let data_dir = &state.config.data_dir;
        let config = state.config.instances.clone();
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
        tokio::spawn(forward_reports(state.clone(), rx));
        Ok(Arc::new(InstanceManager {
            supervisor,
            install: OnceCell::new(),
            config,
            instances_dir,
            runtime_dir,
            os_users,
            isolation_problems: OnceCell::new(),
        }))
    }

    /// Node-RED, installed with npm on first use (progress goes to the log).
    pub async fn runtime(&self) -> ApiResult<&NodeRedInstall> {
        self.install
            .get_or_try_init(|| async {
                let config = self.config.clone();
                let runtime_dir = self.runtime_dir.clone();
                tokio::task::spawn_blocking(move || match &config.node_red_path {
                    Some(path) => Installer::use_existing(path, &config.node),
                    None => {
                        let mut installer = Installer::new(runtime_dir);
                        installer.version = config.node_red_version.clone();
                        installer.node = config.node.clone();
                        installer.npm = config.npm.clone();
                        installer.ensure(&mut |line| {
                            tracing::info!(target: "redwall::install", "{line}");
                        })
                    }
                })
                .await
                .map_err(ApiError::internal)?
                .map_err(runtime_error)
            })
            .await
    }

    pub fn spec(
        &self,
        state: &AppState,
        instance: &Instance,
        env: Vec<EnvVar>,
        install: &NodeRedInstall,
    ) -> ApiResult<InstanceSpec> {
        let keys = open_keys(&state.keyring, instance)?;
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
            admin_secret: keys.admin,
            endpoint_secret: keys.endpoint,
            credential_secret: keys.credential,
            env,
            options: InstanceOptions::from_json(&instance.options).runtime(),
            limits: Limits {
                memory_bytes: self.config.memory_mb.saturating_mul(1024 * 1024),
                max_processes: self.config.max_processes,
                max_open_files: self.config.max_open_files,
            },
            identity,
            read_only_paths: install.sandbox_read_paths(),
            network: if self.config.network_isolation {
                let mut rules = platform_egress(instance);
                rules.extend(runtime_egress(&stored_egress(instance)?));
                NetworkMode::Isolated { egress: rules }
            } else {
                NetworkMode::Host
            },
        })
    }

    /// The instance's environment, opened for its process.
    pub async fn env(&self, state: &AppState, instance: &Instance) -> ApiResult<Vec<EnvVar>> {
        let entries = state.store.list_instance_env(&instance.id).await?;
        entries
            .into_iter()
            .map(|e| {
                let plain =
                    sealing::open(&state.keyring, &e.value, &env_aad(&instance.id, &e.name))
                        .map_err(ApiError::internal)?;
                Ok(EnvVar {
                    name: e.name,
                    value: Secret::new(String::from_utf8_lossy(&plain).into_owned()),
                })
            })
            .collect()
    }

    pub async fn start(&self, state: &AppState, instance: &Instance) -> ApiResult<()> {
        if self.config.require_landlock
            && redwall_runtime::landlock_abi().is_none_or(|abi| abi < MIN_LANDLOCK_ABI)
        {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
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
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "sandbox_unavailable",
                    format!(
                        "instances cannot be isolated from this host's network here ({}); see `redwall config check`",
                        problems.join("; ")
                    ),
                ));
            }
        }
        let install = self.runtime().await?;
        let env = self.env(state, instance).await?;
        let spec = self.spec(state, instance, env, install)?;
        self.supervisor
            .start(spec, install)
            .await
            .map_err(runtime_error)
    }

    /// Stops the instance; one that is not running is already stopped.
    pub async fn stop(&self, instance_id: &str) -> ApiResult<()> {
        match self.supervisor.stop(instance_id).await {
            Ok(()) | Err(RuntimeError::UnknownInstance(_)) => Ok(()),
            Err(e) => Err(runtime_error(e)),
        }
    }

    pub async fn restart(&self, state: &AppState, instance: &Instance) -> ApiResult<()> {
        self.stop(&instance.id).await?;
        self.start(state, instance).await
    }

    /// Applies an instance's new egress policy at once when it runs (and to
    /// its restarts); a stopped instance gets it at its next start.
    pub async fn set_egress(&self, instance: &Instance, rules: &[EgressRule]) -> ApiResult<()> {
        if !self.config.network_isolation {
            return Ok(());
        }
        let mut all = platform_egress(instance);
        all.extend(runtime_egress(rules));
        self.supervisor
            .set_egress(&instance.id, all)
            .await
            .map_err(runtime_error)
    }

    /// What the sandbox of the instance's last start achieved.
    pub fn sandbox_report(&self, instance_id: &str) -> Option<redwall_runtime::SandboxReport> {
        self.supervisor.sandbox_report(instance_id)
    }

    pub fn status(&self, instance_id: &str) -> InstanceStatus {
        self.supervisor.status(instance_id)
    }

    pub fn logs(&self, instance_id: &str, lines: usize) -> Vec<LogLine> {
        self.supervisor.logs(instance_id, lines)
    }

    pub fn subscribe_logs(
        &self,
        instance_id: &str,
    ) -> Option<tokio::sync::broadcast::Receiver<LogLine>> {
        self.supervisor.subscribe_logs(instance_id)
    }

    /// Removes the instance's files after it stopped.
    pub fn remove_files(&self, instance_id: &str) {
        let dir = self.instances_dir.join(instance_id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove an instance directory");
            }
        }
    }

    /// Starts every instance that was running when Redwall stopped.
    pub async fn start_desired(&self, state: &AppState) {
        let Ok(instances) = state.store.list_all_instances().await else {
            return;
        };
        for instance in instances.iter().filter(|i| i.desired_state == "running") {
            if let Err(e) = self.start(state, instance).await {
                tracing::warn!(instance = %instance.name, error = %e.message, "could not start an instance");
            }
        }
    }

    pub async fn shutdown(&self) {
        self.supervisor.shutdown().await;
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

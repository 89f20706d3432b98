//! Starts, watches and stops instance processes.

mod output;
mod pidfile;
mod runner;
mod spawner;
mod types;

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

pub use types::{
    InstanceStatus, LogLine, LogStream, NodeRedAuditEvent, Reporter, SupervisorOptions,
};

use crate::install::{create_dir_0755, NodeRedInstall};
use crate::sandbox::SandboxReport;
use crate::spec::{EgressRule, InstanceSpec, NetworkMode};
use crate::RuntimeError;
use spawner::Spawner;
pub(crate) use types::now_unix_ms;

/// Runs instances on this machine. One per run directory: a second one on
/// the same directory is refused, so two Redwalls never fight over ports and
/// pidfiles.
pub struct Supervisor {
    shared: Arc<Shared>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    // Held until shutdown; the kernel drops the flock when it is closed.
    lock_file: Mutex<Option<File>>,
}

/// What runner tasks need; deliberately not the whole supervisor, so
/// dropping the supervisor still ends them.
pub(crate) struct Shared {
    run_dir: PathBuf,
    reporter: Arc<dyn Reporter>,
    options: SupervisorOptions,
    spawner: Spawner,
}

/// One instance's state, kept after it stops so its logs stay readable.
pub(crate) struct Slot {
    id: String,
    status: watch::Sender<InstanceStatus>,
    logs: Mutex<VecDeque<LogLine>>,
    log_tx: broadcast::Sender<LogLine>,
    control: Mutex<Control>,
    /// Held while the instance's network is set up, changed or removed.
    network: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Control {
    /// Present while a runner task owns the instance.
    stop: Option<watch::Sender<bool>>,
    last_start: Option<(InstanceSpec, NodeRedInstall)>,
    sandbox: Option<SandboxReport>,
    /// The egress rules in force, when changed since the start.
    egress: Option<Vec<EgressRule>>,
}

/// How much longer than its grace periods a stop may take (tearing down
/// the instance's network, flushing its output) before it is an error.
const STOP_MARGIN: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind,
    // still consistent enough to read and overwrite.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Supervisor {
    /// Takes the run directory's lock and starts the spawner thread. Must be
    /// called inside a tokio runtime.
    pub fn new(run_dir: PathBuf, reporter: Arc<dyn Reporter>) -> Result<Self, RuntimeError> {
        Self::with_options(run_dir, reporter, SupervisorOptions::default())
    }

    pub fn with_options(
        run_dir: PathBuf,
        reporter: Arc<dyn Reporter>,
        options: SupervisorOptions,
    ) -> Result<Self, RuntimeError> {
        create_dir_0755(&run_dir)?;
        let lock_path = run_dir.join("supervisor.lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(RuntimeError::io(format!("opening {}", lock_path.display())))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(RuntimeError::SupervisorLocked { path: lock_path });
        }
        // Redwall's memory and environment hold keys. A non-dumpable process
        // has root-owned /proc files that only CAP_SYS_PTRACE can read, and
        // instances run without capabilities.
        // SAFETY: prctl with plain integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        Ok(Self {
            shared: Arc::new(Shared {
                run_dir,
                reporter,
                options,
                spawner: Spawner::new()?,
            }),
            slots: Mutex::new(HashMap::new()),
            lock_file: Mutex::new(Some(lock_file)),
        })
    }

    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        lock(&self.slots).get(id).cloned()
    }

    fn slot_or_new(&self, id: &str) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        slots
            .entry(id.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    id: id.to_owned(),
                    status: watch::Sender::new(InstanceStatus::Stopped),
                    logs: Mutex::new(VecDeque::new()),
                    log_tx: broadcast::channel(1024).0,
                    control: Mutex::new(Control::default()),
                    network: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Starts an instance and returns once its process runs (status
    /// `Starting`); it turns `Running` when the editor answers. See
    /// [`Supervisor::wait_until_running`].
    pub async fn start(
        &self,
        spec: InstanceSpec,
        install: &NodeRedInstall,
    ) -> Result<(), RuntimeError> {
        spec.validate()?;
        let slot = self.slot_or_new(&spec.id);
        let (stop_tx, stop_rx) = watch::channel(false);
        {
            let mut control = lock(&slot.control);
            if control.stop.is_some() {
                return Err(RuntimeError::AlreadyRunning(spec.id.clone()));
            }
            control.stop = Some(stop_tx);
            control.last_start = Some((spec.clone(), install.clone()));
            control.egress = None;
        }
        let owner = runner::Owner::new(self.shared.clone(), slot);
        let install = install.clone();
        // On a task of its own: a caller that gives up half-way (a client
        // that disconnects drops its request's future) must not leave the
        // instance claimed with nobody to run or stop it.
        tokio::spawn(async move {
            let first =
                match runner::spawn_instance(owner.shared(), owner.slot(), &spec, &install).await {
                    Ok(child) => child,
                    Err(e) => {
                        owner.release();
                        return Err(e);
                    }
                };
            runner::set_status(owner.shared(), owner.slot(), InstanceStatus::Starting);
            tokio::spawn(runner::supervise(owner, spec, install, first, stop_rx));
            Ok(())
        })
        .await
        .map_err(|e| RuntimeError::Sandbox(format!("starting the instance failed: {e}")))?
    }

    /// Stops an instance: SIGTERM to its process group, SIGKILL after the
    /// grace period. It is not restarted.
    pub async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let slot = self
            .slot(id)
            .ok_or_else(|| RuntimeError::UnknownInstance(id.to_owned()))?;
        let stop = lock(&slot.control).stop.clone();
        match stop {
            Some(stop) => {
                let _ = stop.send(true);
                // The runner clears `stop` last, after the process is gone.
                // Bounded all the same: the runner escalates to SIGKILL after
                // the grace period, so waiting much longer means something
                // is wrong, and the caller gets an error rather than a hang.
                let deadline = tokio::time::Instant::now()
                    + self.shared.options.stop_timeout * 2
                    + STOP_MARGIN;
                let mut rx = slot.status.subscribe();
                // Until the runner that got this stop is gone (it holds the
                // only receiver). Not until nobody claims the instance: a
                // start that raced with this stop (the one queued behind
                // Node-RED's install) claims it anew and would be waited
                // for forever.
                while !stop.is_closed() {
                    if tokio::time::Instant::now() >= deadline {
                        tracing::error!(instance = %id, "the instance did not stop in time");
                        return Err(RuntimeError::Timeout {
                            id: id.to_owned(),
                            detail: "it did not stop in time".into(),
                        });
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
                }
            }
            None => runner::set_status(&self.shared, &slot, InstanceStatus::Stopped),
        }
        Ok(())
    }

    /// Stops and starts again with the spec of the last start.
    pub async fn restart(&self, id: &str) -> Result<(), RuntimeError> {
        let slot = self
            .slot(id)
            .ok_or_else(|| RuntimeError::UnknownInstance(id.to_owned()))?;
        let last = lock(&slot.control).last_start.clone();
        let (spec, install) = last.ok_or_else(|| RuntimeError::UnknownInstance(id.to_owned()))?;
        self.stop(id).await?;
        self.start(spec, &install).await
    }

    /// Stops every instance and gives up the run directory, so another
    /// supervisor (a restarted Redwall in the same process) may take it.
    pub async fn shutdown(&self) {
        self.stop_all().await;
        lock(&self.lock_file).take();
    }

    /// Stops every instance (for shutdown), all at once.
    pub async fn stop_all(&self) {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        for slot in &slots {
            if let Some(stop) = lock(&slot.control).stop.as_ref() {
                let _ = stop.send(true);
            }
        }
        for slot in &slots {
            if let Err(e) = self.stop(&slot.id).await {
                tracing::warn!(instance = %slot.id, error = %e, "stopping an instance failed");
            }
        }
    }

    pub fn status(&self, id: &str) -> InstanceStatus {
        self.slot(id)
            .map(|s| s.status.borrow().clone())
            .unwrap_or(InstanceStatus::Stopped)
    }

    /// What the sandbox of the instance's last start achieved.
    pub fn sandbox_report(&self, id: &str) -> Option<SandboxReport> {
        self.slot(id).and_then(|s| lock(&s.control).sandbox.clone())
    }

    /// The last `n` lines the instance wrote (audit lines excluded).
    pub fn logs(&self, id: &str, n: usize) -> Vec<LogLine> {
        let Some(slot) = self.slot(id) else {
            return Vec::new();
        };
        let logs = lock(&slot.logs);
        logs.iter()
            .skip(logs.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    pub fn subscribe_logs(&self, id: &str) -> Option<broadcast::Receiver<LogLine>> {
        self.slot(id).map(|s| s.log_tx.subscribe())
    }

    /// Waits until `done` accepts the instance's status; errors after
    /// `timeout` with the last status seen.
    pub async fn wait_for_status(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&InstanceStatus) -> bool,
    ) -> Result<InstanceStatus, RuntimeError> {
        let slot = self
            .slot(id)
            .ok_or_else(|| RuntimeError::UnknownInstance(id.to_owned()))?;
        let mut rx = slot.status.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let current = rx.borrow_and_update().clone();
                if done(&current) {
                    return Ok(current);
                }
                if rx.changed().await.is_err() {
                    return Err(current);
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(status)) => Err(RuntimeError::Timeout {
                id: id.to_owned(),
                detail: format!("status channel closed at {status:?}"),
            }),
            Err(_) => Err(RuntimeError::Timeout {
                id: id.to_owned(),
                detail: format!("still {:?}", self.status(id)),
            }),
        }
    }

    /// Waits for `Running`; fails early if the instance gives up
    /// (`CrashLoop`) or is stopped.
    pub async fn wait_until_running(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<InstanceStatus, RuntimeError> {
        let status = self
            .wait_for_status(id, timeout, |s| {
                matches!(
                    s,
                    InstanceStatus::Running { .. }
                        | InstanceStatus::CrashLoop { .. }
                        | InstanceStatus::Stopped
                )
            })
            .await?;
        if status.is_running() {
            Ok(status)
        } else {
            Err(RuntimeError::Timeout {
                id: id.to_owned(),
                detail: format!("ended {status:?} instead of running"),
            })
        }
    }

    /// Kills instances that a previous, killed supervisor left running on
    /// this run directory (their process groups, found through the
    /// pidfiles) and returns their ids. Call once at start, before starting
    /// instances.
    pub fn reap_orphans(&self) -> Vec<String> {
        let own: Vec<String> = lock(&self.slots)
            .values()
            .filter(|s| lock(&s.control).stop.is_some())
            .map(|s| s.id.clone())
            .collect();
        let reaped = pidfile::reap(&self.shared.run_dir, &own);
        pidfile::reap_networks(&self.shared.run_dir, &own);
        reaped
    }

    /// Replaces the egress exceptions of an isolated instance: applied at
    /// once (one nftables transaction) when it runs, and kept for its
    /// restarts. An instance on the host network has nothing to apply.
    pub async fn set_egress(&self, id: &str, egress: Vec<EgressRule>) -> Result<(), RuntimeError> {
        let Some(slot) = self.slot(id) else {
            return Ok(());
        };
        let port = {
            let mut control = lock(&slot.control);
            let Some((spec, _)) = control.last_start.as_mut() else {
                return Ok(());
            };
            let NetworkMode::Isolated { egress: current } = &mut spec.network else {
                return Ok(());
            };
            *current = egress.clone();
            let port = spec.port;
            control.egress = Some(egress.clone());
            control.stop.is_some().then_some(port)
        };
        if let Some(port) = port {
            let _guard = slot.network.lock().await;
            tokio::task::spawn_blocking(move || crate::netns::apply_rules(port, &egress))
                .await
                .map_err(|e| RuntimeError::Sandbox(e.to_string()))?
                .map_err(|e| RuntimeError::Sandbox(format!("network isolation: {e}")))?;
        }
        Ok(())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for slot in lock(&self.slots).values() {
            if let Some(stop) = lock(&slot.control).stop.as_ref() {
                let _ = stop.send(true);
            }
        }
        // Ending the spawner thread makes the kernel SIGKILL every instance
        // (parent-death signal), even if no runtime is left to stop them.
        self.shared.spawner.shut_down();
        // Their runner tasks may never run again to remove their networks.
        for slot in lock(&self.slots).values() {
            let control = lock(&slot.control);
            if let (Some(_), Some((spec, _))) = (&control.stop, &control.last_start) {
                if spec.is_isolated() {
                    crate::netns::tear_down(spec.port);
                    pidfile::remove_network(&self.shared.run_dir, &spec.id);
                }
            }
        }
    }
}

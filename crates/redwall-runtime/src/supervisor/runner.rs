//! The task that owns one running instance: spawn, readiness, exit, crash
//! accounting and restarts.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::Child;
use tokio::sync::watch;

use super::output::{pump, LastLines};
use super::types::{now_unix_ms, InstanceStatus, LogStream};
use super::{lock, pidfile, Shared, Slot};
use crate::install::NodeRedInstall;
use crate::spec::{InstanceSpec, NetworkMode};
use crate::token::{mint_editor_token, EditorPermission, EDITOR_TOKEN_HEADER};
use crate::{http, netns, sandbox, RuntimeError};

pub(crate) fn set_status(shared: &Shared, slot: &Slot, status: InstanceStatus) {
    shared.reporter.status_changed(&slot.id, &status);
    slot.status.send_replace(status);
}

fn port_free(port: u16) -> Result<(), RuntimeError> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(RuntimeError::PortInUse(port)),
        Err(e) => Err(RuntimeError::Io {
            context: format!("checking port {port}"),
            source: e,
        }),
    }
}

/// Prepares the sandbox and starts Node-RED on the spawner thread.
pub(crate) async fn spawn_instance(
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
    spec: &InstanceSpec,
    install: &NodeRedInstall,
) -> Result<Child, RuntimeError> {
    if spec.is_isolated() {
        set_up_network(shared, slot, spec).await?;
    } else {
        port_free(spec.port)?;
    }
    let spawned = spawn_process(shared, slot, spec, install).await;
    if spawned.is_err() && spec.is_isolated() {
        tear_down_network(shared, slot, spec).await;
    }
    spawned
}

async fn set_up_network(
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
    spec: &InstanceSpec,
) -> Result<(), RuntimeError> {
    let egress = match &spec.network {
        NetworkMode::Isolated { egress } => lock(&slot.control)
            .egress
            .clone()
            .unwrap_or_else(|| egress.clone()),
        NetworkMode::Host => return Ok(()),
    };
    let _guard = slot.network.lock().await;
    let port = spec.port;
    tokio::task::spawn_blocking(move || netns::set_up(port, &egress))
        .await
        .map_err(|e| RuntimeError::Sandbox(e.to_string()))??;
    if let Err(e) = pidfile::write_network(&shared.run_dir, &spec.id, port) {
        tracing::warn!(instance = %spec.id, error = %e, "recording the instance's network failed");
    }
    Ok(())
}

async fn tear_down_network(shared: &Arc<Shared>, slot: &Arc<Slot>, spec: &InstanceSpec) {
    let _guard = slot.network.lock().await;
    let port = spec.port;
    let _ = tokio::task::spawn_blocking(move || netns::tear_down(port)).await;
    pidfile::remove_network(&shared.run_dir, &spec.id);
}

async fn spawn_process(
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
    spec: &InstanceSpec,
    install: &NodeRedInstall,
) -> Result<Child, RuntimeError> {
    let spec_owned = spec.clone();
    let install = install.clone();
    let handle = tokio::runtime::Handle::current();
    let (child, report) = shared
        .spawner
        .run(move || {
            let spec = spec_owned;
            let prepared = sandbox::prepare(&spec, &install)?;
            let heap_mib = (spec.limits.memory_bytes / 4 * 3 / (1 << 20)).max(64);
            let userdir = spec.userdir();
            let mut cmd = tokio::process::Command::new(&install.node);
            cmd.arg(format!("--max-old-space-size={heap_mib}"))
                .arg(&install.red_js)
                .arg("--userDir")
                .arg(&userdir)
                .arg("--settings")
                .arg(spec.settings_path())
                .current_dir(&userdir)
                .env_clear()
                .envs(prepared.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(false);
            let setup = prepared.setup.clone();
            // SAFETY: `apply` only makes async-signal-safe syscalls on
            // values copied before the fork.
            unsafe {
                cmd.pre_exec(move || setup.apply());
            }
            let _runtime = handle.enter();
            let child = cmd.spawn().map_err(RuntimeError::io("starting node"))?;
            // `prepared` (and the ruleset descriptor) lives until here.
            Ok::<_, RuntimeError>((child, prepared.report.clone()))
        })
        .await??;
    if let Some(pid) = child.id() {
        if let Err(e) = pidfile::write(&shared.run_dir, &spec.id, pid) {
            tracing::warn!(instance = %spec.id, error = %e, "writing the pidfile failed");
        }
    }
    lock(&slot.control).sandbox = Some(report);
    Ok(child)
}

enum Outcome {
    Stopped,
    Exited(String),
}

/// The claim a runner holds on its instance (the slot's `stop` sender).
/// Whatever ends the runner gives the claim up, so a stop never waits for a
/// runner that is gone: a task that panicked or was dropped leaves the
/// instance in `CrashLoop` with the reason, never claimed forever.
pub(crate) struct Owner {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    done: bool,
}

impl Owner {
    pub(crate) fn new(shared: Arc<Shared>, slot: Arc<Slot>) -> Self {
        Self {
            shared,
            slot,
            done: false,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    /// Gives the claim up with the status the instance ended in. Under the
    /// control lock, so that whoever sees the final status can start the
    /// instance again at once, and a new start cannot be overwritten by it.
    pub(crate) fn finish(mut self, status: InstanceStatus) {
        self.done = true;
        let mut control = lock(&self.slot.control);
        control.stop = None;
        set_status(&self.shared, &self.slot, status);
    }

    /// Gives the claim up without a status: the start failed and said why.
    pub(crate) fn release(mut self) {
        self.done = true;
        lock(&self.slot.control).stop = None;
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let reason = "its supervising task ended unexpectedly".to_owned();
        tracing::error!(instance = %self.slot.id, "{reason}");
        let mut control = lock(&self.slot.control);
        control.stop = None;
        set_status(
            &self.shared,
            &self.slot,
            InstanceStatus::CrashLoop { reason },
        );
    }
}

pub(crate) async fn supervise(
    owner: Owner,
    spec: InstanceSpec,
    install: NodeRedInstall,
    first: Child,
    mut stop_rx: watch::Receiver<bool>,
) {
    let (shared, slot) = (owner.shared.clone(), owner.slot.clone());
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut restarts = 0u32;
    let mut next = Some(first);
    let final_status = loop {
        let outcome = match next.take() {
            Some(child) => run_once(&shared, &slot, &spec, child, &mut stop_rx).await,
            None => match spawn_instance(&shared, &slot, &spec, &install).await {
                Ok(child) => {
                    set_status(&shared, &slot, InstanceStatus::Starting);
                    run_once(&shared, &slot, &spec, child, &mut stop_rx).await
                }
                Err(e) => Outcome::Exited(e.to_string()),
            },
        };
        let reason = match outcome {
            Outcome::Stopped => break InstanceStatus::Stopped,
            Outcome::Exited(_) if *stop_rx.borrow() => break InstanceStatus::Stopped,
            Outcome::Exited(reason) => reason,
        };
        let now = Instant::now();
        crashes.push_back(now);
        while crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > shared.options.crash_window)
        {
            crashes.pop_front();
        }
        tracing::warn!(instance = %spec.id, %reason, "instance crashed");
        if crashes.len() >= shared.options.crash_limit {
            break InstanceStatus::CrashLoop { reason };
        }
        restarts += 1;
        set_status(
            &shared,
            &slot,
            InstanceStatus::Crashed {
                reason,
                at_unix_ms: now_unix_ms(),
                restarts,
            },
        );
        let delay = shared.options.backoff(crashes.len());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop_requested(&mut stop_rx) => break InstanceStatus::Stopped,
        }
    };
    owner.finish(final_status);
}

async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn run_once(
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
    spec: &InstanceSpec,
    mut child: Child,
    stop_rx: &mut watch::Receiver<bool>,
) -> Outcome {
    let pid = child.id().unwrap_or(0);
    let last = Arc::new(Mutex::new(LastLines::default()));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(pump(
            shared.clone(),
            slot.clone(),
            LogStream::Stdout,
            out,
            last.clone(),
        ));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(pump(
            shared.clone(),
            slot.clone(),
            LogStream::Stderr,
            err,
            last.clone(),
        ));
    }
    let ready = wait_ready(shared, spec);
    tokio::pin!(ready);
    let mut is_ready = false;
    let outcome = loop {
        tokio::select! {
            status = child.wait() => {
                let how = match status {
                    Ok(s) => match (s.code(), s.signal()) {
                        (Some(code), _) => format!("exited with code {code}"),
                        (None, Some(sig)) => format!("killed by signal {sig}"),
                        _ => s.to_string(),
                    },
                    Err(e) => format!("could not be waited for: {e}"),
                };
                break Outcome::Exited(how);
            }
            _ = stop_requested(stop_rx) => {
                terminate(&mut child, pid, shared.options.stop_timeout).await;
                break Outcome::Stopped;
            }
            ok = &mut ready, if !is_ready => {
                if ok {
                    is_ready = true;
                    set_status(shared, slot, InstanceStatus::Running { pid, since_unix_ms: now_unix_ms() });
                } else {
                    signal_group(pid, libc::SIGKILL);
                    let _ = child.wait().await;
                    break Outcome::Exited(format!(
                        "did not answer on {} within {:?}",
                        spec.address(), shared.options.ready_timeout
                    ));
                }
            }
        }
    };
    // Processes the instance started (exec nodes) share its group and would
    // otherwise outlive it.
    signal_group(pid, libc::SIGKILL);
    pidfile::remove(&shared.run_dir, &spec.id);
    if spec.is_isolated() {
        tear_down_network(shared, slot, spec).await;
    }
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(1), p).await;
    }
    match outcome {
        Outcome::Exited(how) => {
            let last = lock(&last);
            let detail = last.stderr.as_ref().or(last.stdout.as_ref());
            Outcome::Exited(match detail {
                Some(line) => format!("{how}: {line}"),
                None => how,
            })
        }
        stopped => stopped,
    }
}

fn signal_group(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 1 {
            // SAFETY: kill has no memory preconditions; the child called
            // setsid, so its pid is its process group id.
            unsafe { libc::kill(-pid, signal) };
        }
    }
}

async fn terminate(child: &mut Child, pid: u32, grace: Duration) {
    signal_group(pid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pid, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

/// Resolves true once the editor answers an authenticated request, false
/// after the ready timeout.
async fn wait_ready(shared: &Shared, spec: &InstanceSpec) -> bool {
    let options = &shared.options;
    let deadline = Instant::now() + options.ready_timeout;
    let expires =
        now_unix_ms() / 1000 + i64::try_from(options.ready_timeout.as_secs()).unwrap_or(60) + 60;
    let token = mint_editor_token(
        &spec.editor_secret,
        &spec.id,
        "redwall-supervisor",
        EditorPermission::Read,
        expires,
    );
    loop {
        let answer = http::request(
            spec.address(),
            "GET",
            "/editor/",
            &[(EDITOR_TOKEN_HEADER, &token)],
            None,
            Duration::from_secs(5),
        )
        .await;
        if answer.is_ok_and(|r| r.status == 200) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(options.ready_poll).await;
    }
}

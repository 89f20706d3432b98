//! Node-RED for the instances: adopted from `instances.node_red_path`, or
//! installed with npm once, in the background, and shared by every start
//! that needs it.
//!
//! A cold npm install takes minutes, so no request waits for it: `serve`
//! begins it at start, a create or start during it answers at once (the
//! instance shows `installing` with npm's latest line), and npm's output is
//! kept for the instances' logs. The install runs on a thread of its own,
//! not in a request: a client that gives up cannot cancel it halfway, and
//! two requests can never run two npm processes into the same directory.

use crate::instances::InstancesConfig;
use redwall_runtime::{Installer, LogLine, LogStream, NodeRedInstall, RuntimeError};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, watch};

/// npm lines kept for the logs of instances waiting for the install.
const KEPT_LINES: usize = 500;

#[derive(Clone, Debug)]
pub enum Phase {
    NotStarted,
    Installing,
    Ready(NodeRedInstall),
    /// The install or the configured one is unusable; the next start tries
    /// again. `unavailable` marks a configuration problem (missing package,
    /// Node.js too old) rather than a failed run.
    Failed {
        unavailable: bool,
        message: String,
    },
}

pub struct RuntimeInstall {
    config: InstancesConfig,
    runtime_dir: PathBuf,
    phase: watch::Sender<Phase>,
    lines: Mutex<VecDeque<LogLine>>,
    /// Live npm lines; dropped when the install ends, which ends the
    /// streams of whoever followed it.
    live: Mutex<Option<broadcast::Sender<LogLine>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

impl RuntimeInstall {
    pub fn new(config: InstancesConfig, runtime_dir: PathBuf) -> Arc<Self> {
        Arc::new(RuntimeInstall {
            config,
            runtime_dir,
            phase: watch::Sender::new(Phase::NotStarted),
            lines: Mutex::new(VecDeque::new()),
            live: Mutex::new(None),
        })
    }

    /// A configured Node-RED is only checked (quick); otherwise npm installs one.
    pub fn adopts(&self) -> bool {
        self.config.node_red_path.is_some()
    }

    pub fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    pub fn ready(&self) -> Option<NodeRedInstall> {
        match &*self.phase.borrow() {
            Phase::Ready(install) => Some(install.clone()),
            _ => None,
        }
    }

    /// Begins the install unless it runs or is done; a failed one is tried
    /// again.
    pub fn begin(self: &Arc<Self>) {
        let mut begin = false;
        self.phase.send_if_modified(|phase| match phase {
            Phase::NotStarted | Phase::Failed { .. } => {
                *phase = Phase::Installing;
                begin = true;
                true
            }
            Phase::Installing | Phase::Ready(_) => false,
        });
        if !begin {
            return;
        }
        lock(&self.lines).clear();
        *lock(&self.live) = Some(broadcast::channel(1024).0);
        tracing::info!(target: "redwall::install", "preparing Node-RED in the background");
        let me = self.clone();
        // A plain thread, not `spawn_blocking`: the runtime would wait for a
        // blocking task at shutdown, and npm can take minutes. npm itself
        // dies with this thread (PR_SET_PDEATHSIG, see the installer).
        let spawned = std::thread::Builder::new()
            .name("node-red-install".into())
            .spawn(move || me.run());
        if let Err(e) = spawned {
            self.finish(Phase::Failed {
                unavailable: false,
                message: format!("could not start the install: {e}"),
            });
        }
    }

    fn run(&self) {
        let started = std::time::Instant::now();
        let result = match &self.config.node_red_path {
            Some(path) => Installer::use_existing(path, &self.config.node),
            None => {
                let mut installer = Installer::new(self.runtime_dir.clone());
                installer.version = self.config.node_red_version.clone();
                installer.node = self.config.node.clone();
                installer.npm = self.config.npm.clone();
                installer.ensure(&mut |line| self.progress(line))
            }
        };
        let phase = match result {
            Ok(install) => {
                tracing::info!(
                    target: "redwall::install",
                    version = %install.version,
                    secs = started.elapsed().as_secs(),
                    "Node-RED is ready"
                );
                Phase::Ready(install)
            }
            Err(e) => {
                let unavailable = matches!(
                    e,
                    RuntimeError::NodeVersion { .. } | RuntimeError::InvalidInstall { .. }
                );
                tracing::error!(target: "redwall::install", error = %e, "Node-RED is not usable");
                self.progress(&format!("error: {e}"));
                Phase::Failed {
                    unavailable,
                    message: e.to_string(),
                }
            }
        };
        self.finish(phase);
    }

    fn finish(&self, phase: Phase) {
        self.phase.send_replace(phase);
        lock(&self.live).take();
    }

    fn progress(&self, line: &str) {
        // One line per package fetched: the instances' logs show them, the
        // server's log only at debug level.
        tracing::debug!(target: "redwall::install", "{line}");
        let line = LogLine {
            at_unix_ms: now_unix_ms(),
            stream: LogStream::Stdout,
            text: format!("[install] {line}"),
        };
        {
            let mut lines = lock(&self.lines);
            if lines.len() == KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        if let Some(tx) = lock(&self.live).as_ref() {
            let _ = tx.send(line);
        }
    }

    /// Waits for the install (beginning it if needed).
    pub async fn wait(self: &Arc<Self>) -> Result<NodeRedInstall, Phase> {
        self.begin();
        let mut rx = self.phase.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Phase::Ready(install) => return Ok(install.clone()),
                failed @ Phase::Failed { .. } => return Err(failed.clone()),
                Phase::NotStarted | Phase::Installing => {}
            }
            if rx.changed().await.is_err() {
                return Err(Phase::Failed {
                    unavailable: false,
                    message: "the install was abandoned".into(),
                });
            }
        }
    }

    /// npm's latest non-empty line, as progress.
    pub fn latest(&self) -> Option<String> {
        lock(&self.lines)
            .iter()
            .rev()
            .find(|l| !l.text.trim().is_empty())
            .map(|l| l.text.clone())
    }

    /// The last `n` lines of the current or last install.
    pub fn lines(&self, n: usize) -> Vec<LogLine> {
        let lines = lock(&self.lines);
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// npm's lines as they come, until the install ends (`None` if none runs).
    pub fn subscribe(&self) -> Option<broadcast::Receiver<LogLine>> {
        lock(&self.live).as_ref().map(|tx| tx.subscribe())
    }
}

//! The site's own MQTT broker, so a site needs no Mosquitto: the site's
//! flows publish to it as usual, and the store-and-forward bridge
//! ([`crate::bridge`]) carries their messages to the team broker.
//!
//! Turned on by `DIR/site-broker.toml` ([`SiteBrokerConfig`]; an empty file
//! means the defaults: plain MQTT on `127.0.0.1:1883` only, no anonymous
//! login). Plain listeners are loopback only; the site's network may get
//! MQTT over TLS (`[tls]`, [`tls`]: the operator's certificate or a
//! self-signed one kept in `DIR/site-broker/`), and the operator may add
//! users (`[[users]]`, passwords in 0600 files).
//!
//! ```text
//! agent (run.rs)                      child: `redwall-agent site-broker`
//!   supervisor.rs: a thread  -- JSON on stdin (listeners, user digests) -->
//!     spawns, restarts with      binds, drops to uid/gid 65534, no new
//!     backoff, kills on drop  <-- {"ready":true} on stdout ---  privileges,
//!   Node-RED: REDWALL_MQTT_*          SIGKILL when the agent's thread ends
//!   bridge: user `bridge`             front (CONNECT deadline) -> rmqtt
//! ```
//!
//! The broker runs in a child process ([`child`]) on purpose: it is the
//! part the site's software talks to, and its crash or overload must not
//! stall the agent's hub link or its systemd watchdog; and the agent's
//! own memory stays small. The agent supervises it ([`supervisor`]):
//! started before Node-RED and the bridge, started again after a growing
//! delay whenever it exits, killed when the agent stops (and, through
//! `PR_SET_PDEATHSIG`, when the agent dies). A broker that restarts loses
//! its sessions and the messages it held for clients (the bridge takes
//! what it was handed on disk first, so only messages not yet handed
//! over are at risk).
//!
//! Users and rights: [`auth`]. The passwords are made at each start of
//! the agent and never written anywhere; the child sees only digests.
//!
//! One known difference from Mosquitto, for the bridge: when a client's
//! connection drops while messages are in flight to it and it resumes its
//! session, rmqtt 0.24 sends those messages again (DUP, same packet ids,
//! which the bridge's outbox recognises) but newest first
//! (`transfer_session_state` pops them from the end). A message the
//! bridge never received before the drop can then be stored out of order.
//! The bridge's hop is loopback, so it drops only with one of the two
//! processes, and the broker's restart loses its sessions anyway.

pub mod auth;
pub mod child;
pub mod config;
mod supervisor;
pub mod tls;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use zeroize::Zeroizing;

pub use auth::{Credentials, BRIDGE_USER, NODE_RED_USER};
pub use config::{ChildConfig, SiteBrokerConfig, CONFIG_FILE};

/// What the supervisor reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteBrokerState {
    /// Spawned, not yet listening.
    Starting,
    Running {
        pid: u32,
        listen: Vec<SocketAddr>,
    },
    /// It exited (or never got ready); started again after a delay.
    Restarting {
        why: String,
        failures: u32,
    },
    /// The handle was dropped or shut down; the child is gone.
    Stopped,
}

/// How the agent runs the child.
#[derive(Clone, Debug)]
pub struct SiteBrokerOptions {
    /// The `redwall-agent` executable to run as `site-broker`. `None`: this
    /// process's own ([`std::env::current_exe`]), right for the binary; a
    /// program that runs the agent as a library (a test) names it.
    pub executable: Option<PathBuf>,
    /// Delay before the first restart, doubled after each exit in a row.
    pub restart_base: Duration,
    pub restart_max: Duration,
    /// Where a self-signed certificate for the TLS listener is kept (the
    /// agent's directory; `None`: made anew at each start).
    pub state_dir: Option<PathBuf>,
}

impl Default for SiteBrokerOptions {
    fn default() -> Self {
        SiteBrokerOptions {
            executable: None,
            restart_base: Duration::from_millis(500),
            restart_max: Duration::from_secs(30),
            state_dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SiteBrokerError {
    #[error("site broker: {0}")]
    Config(String),
    #[error("site broker: {0}")]
    Start(String),
}

/// The running site broker. Dropping it kills the child.
pub struct SiteBroker {
    config: SiteBrokerConfig,
    /// The TLS listener's certificate SHA-256 (hex), what clients pin.
    tls_sha256: Option<String>,
    credentials: Credentials,
    state: watch::Receiver<SiteBrokerState>,
    /// Closing it tells the supervising thread to stop.
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long [`SiteBroker::start`] waits for the first child to listen.
const FIRST_START: Duration = Duration::from_secs(15);

impl SiteBroker {
    /// Makes the built-in users' passwords, starts the supervising thread
    /// and waits (up to 15 s) until the first child listens. A child that
    /// cannot start is logged and retried, not an error: the agent runs on
    /// without its broker meanwhile.
    pub async fn start(
        config: &SiteBrokerConfig,
        options: SiteBrokerOptions,
    ) -> Result<SiteBroker, SiteBrokerError> {
        config
            .check()
            .map_err(|e| SiteBrokerError::Config(e.to_string()))?;
        let executable = match options.executable {
            Some(path) => path,
            None => std::env::current_exe().map_err(|e| {
                SiteBrokerError::Start(format!("cannot find the agent's executable: {e}"))
            })?,
        };
        let credentials = Credentials::generate();
        let mut users = credentials.digests();
        users.extend(
            config
                .operator_digests()
                .map_err(|e| SiteBrokerError::Config(e.to_string()))?,
        );
        let mut child_config = ChildConfig::new(config, users);
        let tls_sha256 = match &config.tls {
            Some(tls) => {
                let (child, sha256) = tls
                    .material(options.state_dir.as_deref())
                    .map_err(|e| SiteBrokerError::Config(e.to_string()))?;
                tracing::info!(
                    listen = %tls.listen,
                    sha256 = %sha256,
                    "the site broker's TLS listener: its certificate"
                );
                child_config.tls = Some(child);
                Some(sha256)
            }
            None => None,
        };
        let json = Zeroizing::new(
            serde_json::to_vec(&child_config).map_err(|e| SiteBrokerError::Start(e.to_string()))?,
        );
        let (state_tx, state) = watch::channel(SiteBrokerState::Starting);
        let (stop_read, stop_write) =
            supervisor::stop_pipe().map_err(|e| SiteBrokerError::Start(e.to_string()))?;
        let plan = supervisor::Plan {
            executable,
            config: json,
            restart_base: options.restart_base,
            restart_max: options.restart_max.max(options.restart_base),
            state: state_tx,
        };
        let thread = std::thread::Builder::new()
            .name("site-broker".into())
            .spawn(move || supervisor::supervise(plan, stop_read))
            .map_err(|e| SiteBrokerError::Start(e.to_string()))?;
        let broker = SiteBroker {
            config: config.clone(),
            tls_sha256,
            credentials,
            state,
            stop: Some(stop_write),
            thread: Some(thread),
        };
        if broker.wait_running(FIRST_START).await.is_none() {
            tracing::warn!(
                "the site broker is not listening yet; Node-RED and the bridge start anyway and connect once it does"
            );
        }
        Ok(broker)
    }

    /// Where Node-RED and the bridge connect (the first listener).
    pub fn address(&self) -> SocketAddr {
        self.config.address()
    }

    /// The TLS listener's address and its certificate's SHA-256 (hex).
    pub fn tls(&self) -> Option<(SocketAddr, &str)> {
        match (&self.config.tls, &self.tls_sha256) {
            (Some(tls), Some(sha256)) => Some((tls.listen, sha256.as_str())),
            _ => None,
        }
    }

    /// The built-in users' passwords (this run only).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn state(&self) -> SiteBrokerState {
        self.state.borrow().clone()
    }

    /// The child's pid while it is listening.
    pub fn running_pid(&self) -> Option<u32> {
        match &*self.state.borrow() {
            SiteBrokerState::Running { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// Waits until a child listens (its pid), at most `within`.
    pub async fn wait_running(&self, within: Duration) -> Option<u32> {
        let mut state = self.state.clone();
        let running = state.wait_for(|s| {
            matches!(
                s,
                SiteBrokerState::Running { .. } | SiteBrokerState::Stopped
            )
        });
        let _ = tokio::time::timeout(within, async { running.await.is_ok() }).await;
        self.running_pid()
    }

    /// Waits until the running child is another than `pid` (a restart).
    pub async fn wait_restarted(&self, pid: u32, within: Duration) -> Option<u32> {
        let mut state = self.state.clone();
        let restarted = state.wait_for(|s| match s {
            SiteBrokerState::Running { pid: now, .. } => *now != pid,
            SiteBrokerState::Stopped => true,
            _ => false,
        });
        let _ = tokio::time::timeout(within, async { restarted.await.is_ok() }).await;
        self.running_pid().filter(|now| *now != pid)
    }

    /// The variables the site's Node-RED gets, as the hub's instances get
    /// theirs (`REDWALL_MQTT_URL`, `_TOPIC_PREFIX` (empty: the site's tree
    /// is its own), `_USERNAME`, `_PASSWORD`), so one flow runs on both.
    pub fn node_red_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REDWALL_MQTT_URL", format!("mqtt://{}", self.address())),
            ("REDWALL_MQTT_TOPIC_PREFIX", String::new()),
            ("REDWALL_MQTT_USERNAME", NODE_RED_USER.to_owned()),
            (
                "REDWALL_MQTT_PASSWORD",
                self.credentials.node_red_password().to_owned(),
            ),
        ]
    }

    /// Kills the child and waits until it is gone.
    pub async fn shutdown(mut self) {
        tracing::info!("stopping the site broker");
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Starts the site broker when `dir/site-broker.toml` asks for it.
pub(crate) async fn start_in(
    dir: &std::path::Path,
    options: &SiteBrokerOptions,
) -> Result<Option<SiteBroker>, crate::run::RunError> {
    let Some(config) = SiteBrokerConfig::load(dir)
        .map_err(|e| crate::run::RunError::SiteBroker(format!("site broker: {e}")))?
    else {
        return Ok(None);
    };
    tracing::info!(listen = ?config.listen, "starting the site broker");
    let options = SiteBrokerOptions {
        state_dir: Some(dir.to_owned()),
        ..options.clone()
    };
    SiteBroker::start(&config, options)
        .await
        .map(Some)
        .map_err(|e| crate::run::RunError::SiteBroker(e.to_string()))
}

impl Drop for SiteBroker {
    fn drop(&mut self) {
        // Closing the pipe wakes the thread, which kills and reaps the
        // child; not waited for here (a drop must not block).
        self.stop.take();
    }
}

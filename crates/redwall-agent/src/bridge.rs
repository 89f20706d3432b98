//! The store-and-forward bridge: the site's local MQTT broker to the team
//! broker, through the [`outbox`](crate::outbox), so flows keep publishing
//! locally while the link is down and every message queued meanwhile
//! arrives once the link returns, in order, QoS 1 and 2 never duplicated.
//!
//! ```text
//! flows -> local broker (127.0.0.1)
//!       -> local_link.rs: rumqttc, QoS 1, persistent session,
//!          PUBACK only after the outbox synced the message
//!       -> outbox: priorities, bound, drop policy, crash-safe
//!       -> team_link.rs: one message in flight, QoS 2, persistent session,
//!          packet id and phase kept in the outbox, PUBCOMP completes it
//!       -> team broker (TLS)
//! ```
//!
//! [`Bridge::start`] runs both links on the current tokio runtime and
//! returns a [`BridgeHandle`]: [`BridgeHandle::stats`] for status and
//! heartbeats, [`BridgeHandle::shutdown`] to stop. Only one bridge may use
//! a state directory at a time (the outbox holds a lock on it).
//!
//! Exactly-once holds across link cuts, broker restarts that keep the
//! session, and agent crashes at any point (the tests cut and restart at
//! every step of the QoS 2 exchange). Where it does not hold:
//!
//! - the team broker loses the bridge's session while a message is in
//!   flight: that message is sent again as new and may arrive twice
//!   (counted, `resent_after_session_loss`; see `team_link.rs`);
//! - the local broker redelivers a message without DUP, with another
//!   packet id, or after 1024 newer ones were stored: it is stored twice
//!   (see `local_link.rs`; Mosquitto does none of these);
//! - a disk write fails (EIO, disk full) in the middle of a batch: the
//!   batch is retried and what was written of it may be stored twice;
//! - `outbox/delivery.log` is damaged (not torn: that is repaired): the
//!   delivered position is lost and the messages still on disk are sent
//!   again.
//!
//! Every message crosses the team hop with QoS 2, QoS 0 ones too (still in
//! order). Not carried: the retain flag of live messages (MQTT 3.1.1
//! clears it on delivery to the bridge's subscription; retain-as-published
//! needs MQTT 5). Nothing flows from the team broker to the local one.

mod config;
mod local_link;
mod team_link;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use config::{BridgeConfig, LocalBrokerConfig, TeamBrokerConfig};

use crate::outbox::{Outbox, OutboxError, OutboxStats};
use crate::tls::{self, HubTrust};

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("bridge configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("bridge: {0}")]
    Tls(#[from] tls::TlsSetupError),
}

/// What the bridge reports (status, heartbeats).
#[derive(Clone, Debug, Serialize)]
pub struct BridgeStats {
    pub local_connected: bool,
    pub team_connected: bool,
    /// Connections made to the team broker since start.
    pub team_sessions: u64,
    /// Team broker connections that failed or dropped since start (TLS
    /// refused, broker unreachable, link cut).
    pub team_failures: u64,
    /// DUP deliveries from the local broker recognised as messages already
    /// stored, and not stored again.
    pub redeliveries_ignored: u64,
    pub outbox: OutboxStats,
}

/// State both links share.
pub(crate) struct Shared {
    outbox: Arc<Mutex<Outbox>>,
    /// The outbox's figures after its last operation, so reading them
    /// never waits behind a write that syncs.
    outbox_stats: Arc<Mutex<OutboxStats>>,
    /// Rung after every stored batch: the team link wakes if idle.
    appended: Notify,
    local_connected: AtomicBool,
    team_connected: AtomicBool,
    team_sessions: AtomicU64,
    team_failures: AtomicU64,
    redeliveries_ignored: AtomicU64,
}

impl Shared {
    /// Runs `op` on the outbox on a blocking thread (every write syncs).
    async fn outbox<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Outbox) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let outbox = self.outbox.clone();
        let stats = self.outbox_stats.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = outbox.lock().unwrap_or_else(PoisonError::into_inner);
            let result = op(&mut guard);
            *stats.lock().unwrap_or_else(PoisonError::into_inner) = guard.stats();
            result
        })
        .await
        .map_err(|_| OutboxError::State("an outbox operation was cancelled"))?
    }
}

/// The running bridge. Dropping it stops both links at once (as a crash
/// would: nothing is flushed, nothing needs to be); [`BridgeHandle::shutdown`]
/// stops them politely and waits.
pub struct BridgeHandle {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Bridge;

/// The agent's own site broker as the bridge's local broker (a
/// `bridge.toml` without `[local]`): where it listens and the password of
/// its built-in user `bridge` for this run.
#[derive(Clone)]
pub struct SiteBrokerLink {
    pub address: std::net::SocketAddr,
    pub username: String,
    pub password: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for SiteBrokerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteBrokerLink")
            .field("address", &self.address)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// Checks `config`, opens the outbox in `state_dir/outbox` (repairing a
    /// torn tail), reads the password files, and starts both links on the
    /// current tokio runtime. Fails only for what retrying cannot fix; an
    /// unreachable broker is retried, never an error.
    pub fn start(config: &BridgeConfig, state_dir: &Path) -> Result<BridgeHandle, BridgeError> {
        Self::start_with(config, state_dir, None)
    }

    /// [`Bridge::start`], with the agent's site broker as the local broker
    /// when `config` has no `[local]` (then `site` is required).
    pub fn start_with(
        config: &BridgeConfig,
        state_dir: &Path,
        site: Option<&SiteBrokerLink>,
    ) -> Result<BridgeHandle, BridgeError> {
        config.check()?;
        let endpoint = config.team_endpoint()?;
        let tls = match &endpoint.tls {
            None => None,
            Some(_) => {
                let ca = match &config.team.ca_file {
                    Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                        BridgeError::Config(format!("team.ca_file {}: {e}", path.display()))
                    })?),
                    None => None,
                };
                let trust = HubTrust::new(config.team.cert_sha256.as_deref(), ca.as_deref());
                let mut client = tls::client_config(&trust)?;
                // MQTT over TLS names no application protocol.
                client.alpn_protocols.clear();
                Some(Arc::new(client))
            }
        };
        let read = |path: &Option<std::path::PathBuf>| {
            path.as_deref().map(config::read_password).transpose()
        };
        // (host, port, username, password, keep-alive) of the local hop.
        let (local_host, local_port, local_username, local_password, local_keep_alive) =
            match (&config.local, site) {
                (Some(local), _) => (
                    local.host,
                    local.port,
                    local.username.clone(),
                    read(&local.password_file)?,
                    local.keep_alive_secs,
                ),
                (None, Some(site)) => (
                    site.address.ip(),
                    site.address.port(),
                    Some(site.username.clone()),
                    Some(site.password.clone()),
                    30,
                ),
                (None, None) => {
                    return Err(BridgeError::Config(format!(
                        "bridge.toml has no [local] and the agent runs no site broker (no {}): name the site's broker in [local], or turn the site broker on",
                        crate::site_broker::CONFIG_FILE
                    )))
                }
            };
        let team_password = read(&config.team.password_file)?;
        let outbox = Outbox::open(state_dir, &config.outbox)?;
        let shared = Arc::new(Shared {
            outbox_stats: Arc::new(Mutex::new(outbox.stats())),
            outbox: Arc::new(Mutex::new(outbox)),
            appended: Notify::new(),
            local_connected: AtomicBool::new(false),
            team_connected: AtomicBool::new(false),
            team_sessions: AtomicU64::new(0),
            team_failures: AtomicU64::new(0),
            redeliveries_ignored: AtomicU64::new(0),
        });
        let (shutdown, watcher) = watch::channel(false);
        let team = team_link::TeamLink {
            endpoint,
            tls,
            client_id: config.client_id.clone(),
            username: config.team.username.clone(),
            password: team_password,
            topic_prefix: config.team.topic_prefix.clone(),
            keep_alive: Duration::from_secs(config.team.keep_alive_secs.into()),
            reconnect_base_ms: config.reconnect_base_ms,
            reconnect_max_ms: config.reconnect_max_ms,
        };
        let local = local_link::LocalLink {
            // rumqttc joins host and port with a colon: brackets for IPv6.
            host: match local_host {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            },
            port: local_port,
            client_id: config.client_id.clone(),
            username: local_username,
            password: local_password,
            forward: config.forward_filters(),
            keep_alive: Duration::from_secs(local_keep_alive.into()),
            reconnect_base_ms: config.reconnect_base_ms,
            reconnect_max_ms: config.reconnect_max_ms,
        };
        let tasks = vec![
            tokio::spawn(team_link::run(team, shared.clone(), watcher.clone())),
            tokio::spawn(local_link::run(local, shared.clone(), watcher)),
        ];
        Ok(BridgeHandle {
            shared,
            shutdown,
            tasks,
        })
    }
}

/// Reads the bridge's figures apart from its handle (which stopping
/// consumes): what the heartbeats report.
#[derive(Clone)]
pub struct StatsReader(Arc<Shared>);

impl StatsReader {
    /// The links' state and the outbox's figures; never waits for a disk
    /// write.
    pub fn stats(&self) -> BridgeStats {
        let shared = &self.0;
        let outbox = shared
            .outbox_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        BridgeStats {
            local_connected: shared.local_connected.load(Ordering::Relaxed),
            team_connected: shared.team_connected.load(Ordering::Relaxed),
            team_sessions: shared.team_sessions.load(Ordering::Relaxed),
            team_failures: shared.team_failures.load(Ordering::Relaxed),
            redeliveries_ignored: shared.redeliveries_ignored.load(Ordering::Relaxed),
            outbox,
        }
    }

    /// The figures as a heartbeat carries them.
    pub fn report(&self) -> redwall_policy::site_events::BridgeReport {
        let s = self.stats();
        redwall_policy::site_events::BridgeReport {
            local_connected: s.local_connected,
            team_connected: s.team_connected,
            queued: s.outbox.queued.iter().sum::<u64>(),
            queued_bytes: s.outbox.queued_bytes,
            max_bytes: s.outbox.max_bytes,
            in_flight: s.outbox.in_flight,
            delivered: s.outbox.delivered,
            dropped: s.outbox.dropped.iter().sum::<u64>(),
            refused: s.outbox.refused.iter().sum::<u64>() + s.outbox.too_large,
            resent_after_session_loss: s.outbox.resent_after_session_loss,
        }
    }
}

impl BridgeHandle {
    /// The links' state and the outbox's figures; never waits for a disk
    /// write.
    pub fn stats(&self) -> BridgeStats {
        self.stats_reader().stats()
    }

    /// A reader of the figures that outlives no one: it only holds them.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.shared.clone())
    }

    /// Stops both links (the local one after storing and acknowledging
    /// what it received), then releases the outbox.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.release().await;
    }

    /// Stops both links where they are, as a crash would (for tests of
    /// recovery), then releases the outbox once any write under way ended.
    pub async fn abort(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.release().await;
    }

    /// Waits until no blocking outbox operation holds the outbox any more,
    /// so that a new bridge can open it.
    async fn release(&self) {
        while Arc::strong_count(&self.shared) > 1 || Arc::strong_count(&self.shared.outbox) > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

//! Redwall's hub: every operation on its data, as plain async functions.
//!
//! Each operation validates everything first, then makes one change (one
//! transaction) that carries its audit entry, then clears what the caches
//! hold about it. Nothing here knows HTTP: the API, the console, the proxy,
//! the CLI (and the broker and agent gateway to come) turn their requests
//! into these calls and the results into their answers.

pub mod accounts;
pub mod activity;
mod agent_dials;
pub mod agent_site;
pub mod agent_updates;
pub mod agents;
pub mod audit;
pub mod broker;
pub mod caches;
pub mod clock;
pub mod credentials;
pub mod error;
pub mod hash_gate;
pub mod identity;
pub mod ids;
pub mod instances;
pub mod invitations;
pub mod metrics;
pub mod mfa;
pub mod passwords;
pub mod pipelines;
pub mod refusals;
pub mod relay;
pub mod retention;
pub mod sessions;
pub mod settings;
pub mod sign_in;
pub mod snapshots;
pub mod sso_login;
pub mod sso_mapping;
pub mod teams;
pub mod throttle;
pub mod tokens;
pub mod ttl_cache;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use redwall_crypto::keyring::Keyring;
use redwall_crypto::password::{Argon2Params, PasswordHasher};
use redwall_policy::session_rules::SessionLifetimes;

use redwall_policy::Micros;
use redwall_store::{AuditWriter, Change, Store};

pub use audit::{Actor, Origin, Who};
pub use caches::Caches;
pub use error::{HubError, HubResult, Refused};

/// Password checks of unknown clients that may wait per core (a few tenths
/// of a second of argon2 each); more are refused at once as busy.
const UNKNOWN_HASHES_QUEUED_PER_CORE: usize = 16;

/// The hub's handle: the store, the audit writer, the master keyring, the
/// clock, the caches of what requests resolve, what sign-in needs (password
/// hashing, its gate, the throttle, platform settings) and, in `redwall
/// serve`, the instance manager. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    pub store: Store,
    pub audit: AuditWriter,
    pub keyring: Keyring,
    pub clock: Arc<dyn clock::Clock>,
    pub caches: Arc<Caches>,
    pub hasher: Arc<PasswordHasher>,
    /// Password hashing is slow on purpose; at most one per core runs at
    /// once, known clients first, so a flood of wrong passwords can neither
    /// starve the other requests of CPU nor make the owner's login wait.
    pub hash_gate: Arc<hash_gate::HashGate>,
    pub throttle: Arc<throttle::LoginThrottle>,
    /// Last-seen times of sessions and keys, written in batches.
    pub activity: Arc<activity::ActivityBuffer>,
    pub settings: Arc<settings::SettingsCache>,
    pub metrics: Arc<metrics::Metrics>,
    /// Refusals counted per source and minute ([`Hub::record_refusal`]).
    pub refusals: Arc<refusals::RefusalTable>,
    /// Broker clients whose connections must close ([`Hub::broker_revocations`]).
    revocations: tokio::sync::broadcast::Sender<String>,
    /// Agent connections to close or to send commands to ([`Hub::agent_events`]).
    agent_events: tokio::sync::broadcast::Sender<agents::AgentEvent>,
    /// How often each agent may connect, in this process.
    agent_dials: Arc<agent_dials::AgentDials>,
    /// Snapshots checked and ready to seal for agents (a rollout's).
    ready_snapshots: Arc<snapshots::to_agents::ReadySnapshots>,
    /// The agent build a rollout sends, ready.
    ready_builds: Arc<agent_updates::ReadyBuilds>,
    /// This process among the hubs sharing the database (revocations it
    /// announced itself come back from PostgreSQL and are skipped).
    node: Arc<str>,
    /// Mosquitto, when Redwall manages it instead of embedding a broker.
    external_broker: Arc<OnceLock<Arc<dyn broker::ExternalBroker>>>,
    instances: Arc<OnceLock<Arc<instances::InstanceManager>>>,
    recorded: Arc<AtomicU64>,
}

/// What the hub is built from besides its store.
pub struct HubParts {
    pub store: Store,
    pub audit: AuditWriter,
    pub keyring: Keyring,
    pub clock: Arc<dyn clock::Clock>,
    pub passwords: Argon2Params,
    /// Session lifetimes until an admin sets others.
    pub sessions: SessionLifetimes,
    /// Sources of refusals counted apart each minute before they are
    /// counted more coarsely.
    pub refusal_sources: usize,
}

impl Hub {
    pub fn new(parts: HubParts) -> anyhow::Result<Hub> {
        let permits = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(Hub {
            store: parts.store,
            audit: parts.audit,
            keyring: parts.keyring,
            clock: parts.clock,
            caches: Arc::new(Caches::new()),
            hasher: Arc::new(PasswordHasher::new(parts.passwords)?),
            hash_gate: Arc::new(hash_gate::HashGate::new(
                permits,
                permits * UNKNOWN_HASHES_QUEUED_PER_CORE,
            )),
            throttle: Arc::default(),
            activity: Arc::default(),
            settings: Arc::new(settings::SettingsCache::new(
                settings::PlatformSettings::from_config(parts.sessions),
            )),
            metrics: Arc::default(),
            refusals: Arc::new(refusals::RefusalTable::new(parts.refusal_sources)),
            revocations: tokio::sync::broadcast::channel(1024).0,
            agent_events: tokio::sync::broadcast::channel(4096).0,
            agent_dials: Arc::default(),
            ready_snapshots: Arc::default(),
            ready_builds: Arc::default(),
            node: ids::new_id().into(),
            external_broker: Arc::default(),
            instances: Arc::default(),
            recorded: Arc::default(),
        })
    }

    /// The instance manager, once `redwall serve` has started one (offline
    /// commands never run instances).
    pub fn instance_manager(&self) -> Option<&Arc<instances::InstanceManager>> {
        self.instances.get()
    }

    /// Starts running instances in this process: takes the supervisor's
    /// lock on `data_dir` and reaps what a killed Redwall left running.
    pub fn run_instances(
        &self,
        config: instances::InstancesConfig,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Arc<instances::InstanceManager>> {
        let manager = instances::InstanceManager::open(self, config, data_dir)?;
        let _ = self.instances.set(manager.clone());
        Ok(manager)
    }

    pub fn now(&self) -> Micros {
        self.clock.now()
    }

    /// Audit entries recorded by this process (for `/metrics`).
    pub fn entries_recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    pub(crate) fn count_recorded(&self, n: usize) {
        self.recorded
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Begins a change; see [`Hub::commit`].
    pub async fn begin(&self) -> HubResult<Change> {
        Ok(self.store.begin_change().await?)
    }

    /// Commits a change with its audit entries, then waits until they are
    /// chained into the log so that whoever asked sees them. The change and
    /// its entries are stored together or not at all; if chaining is late
    /// (the database faltered just after the commit), the entries are safe
    /// as pending and the writer chains them with its next group.
    pub async fn commit(&self, change: Change, entries: usize) -> HubResult<()> {
        change.commit().await?;
        self.count_recorded(entries);
        if let Err(e) = self.audit.flush().await {
            tracing::warn!(error = %e, "a committed change's audit entry waits to be chained");
        }
        Ok(())
    }
}

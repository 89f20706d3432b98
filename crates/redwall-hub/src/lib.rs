//! Redwall's hub: every operation on its data, as plain async functions.
//!
//! Each operation validates everything first, then makes one change (one
//! transaction) that carries its audit entry, then clears what the caches
//! hold about it. Nothing here knows HTTP: the API, the console, the proxy,
//! the CLI (and the broker and agent gateway to come) turn their requests
//! into these calls and the results into their answers.

pub mod accounts;
pub mod audit;
pub mod caches;
pub mod clock;
pub mod error;
pub mod identity;
pub mod ids;
pub mod instances;
pub mod invitations;
pub mod sso_mapping;
pub mod teams;
pub mod tokens;
pub mod ttl_cache;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use redwall_crypto::keyring::Keyring;

use redwall_policy::Micros;
use redwall_store::{AuditWriter, Change, Store};

pub use audit::{Actor, Origin, Who};
pub use caches::Caches;
pub use error::{HubError, HubResult, Refused};

/// The hub's handle: the store, the audit writer, the master keyring, the
/// clock, the caches of what requests resolve and, in `redwall serve`, the
/// instance manager. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    pub store: Store,
    pub audit: AuditWriter,
    pub keyring: Keyring,
    pub clock: Arc<dyn clock::Clock>,
    pub caches: Arc<Caches>,
    instances: Arc<OnceLock<Arc<instances::InstanceManager>>>,
    recorded: Arc<AtomicU64>,
}

impl Hub {
    pub fn new(
        store: Store,
        audit: AuditWriter,
        keyring: Keyring,
        clock: Arc<dyn clock::Clock>,
    ) -> Hub {
        Hub {
            store,
            audit,
            keyring,
            clock,
            caches: Arc::new(Caches::new()),
            instances: Arc::default(),
            recorded: Arc::default(),
        }
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

//! What every request handler can reach.

use crate::auth::activity::ActivityBuffer;
use crate::auth::hash_gate::HashGate;
use crate::auth::throttle::LoginThrottle;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::upstream::Upstream;
use crate::settings::SettingsCache;
use crate::ttl_cache::TtlCache;
use redwall_crypto::chain::ChainKey;
use redwall_crypto::keyring::Keyring;
use redwall_crypto::password::PasswordHasher;
use redwall_hub::Hub;
use redwall_policy::{Micros, MICROS_PER_SECOND};
use redwall_store::{AuditWriter, Store};
use std::ops::Deref;
use std::sync::Arc;

pub use redwall_hub::caches::{
    CachedKey, CachedSession, CachedTeam, CachedToken, CachedUser, InstanceTarget,
    GRANT_CACHE_MICROS,
};

/// Password checks of unknown clients that may wait per core (a few tenths
/// of a second of argon2 each); more are refused at once as busy.
const UNKNOWN_HASHES_QUEUED_PER_CORE: usize = 16;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub audit_writer: AuditWriter,
    pub keyring: Keyring,
    pub chain_key: ChainKey,
    pub hasher: PasswordHasher,
    /// Password hashing is slow on purpose; at most one per core runs at
    /// once, known clients first, so a flood of wrong passwords can neither
    /// starve the other requests of CPU nor make the owner's login wait.
    pub hash_gate: HashGate,
    pub clock: Arc<dyn Clock>,
    pub settings: SettingsCache,
    /// The hub's operations and the caches they clear.
    pub hub: Hub,
    pub throttle: LoginThrottle,
    pub activity: ActivityBuffer,
    /// Refusals counted per source and minute (`audit::record_refusal`).
    pub refusals: crate::audit::refusals::RefusalTable,
    pub metrics: Metrics,
    /// Clients reach us over TLS (ours, not a proxy's).
    pub tls: bool,
    pub upstream: Upstream,
    /// (instance, token kind, user) -> a token minted for the instance, reused for a minute.
    pub minted_tokens: TtlCache<String, String>,
    /// Instance handover codes already redeemed (single use).
    pub used_handoff_codes: TtlCache<String, ()>,
    /// OpenID Connect: HTTP clients, cached discovery and keys, used states.
    pub oidc: crate::sso::oidc::OidcState,
}

pub struct StateParts {
    pub config: Config,
    pub store: Store,
    pub keyring: Keyring,
    pub clock: Arc<dyn Clock>,
    pub tls: bool,
}

impl AppState {
    pub fn new(parts: StateParts) -> anyhow::Result<AppState> {
        let StateParts {
            config,
            store,
            keyring,
            clock,
            tls,
        } = parts;
        let hasher = PasswordHasher::new(config.passwords)?;
        let audit_writer = AuditWriter::spawn(store.clone(), ChainKey::from_keyring(&keyring));
        let settings = SettingsCache::new(crate::settings::PlatformSettings::from_config(
            config.sessions,
        ));
        let permits = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(AppState(Arc::new(Inner {
            chain_key: ChainKey::from_keyring(&keyring),
            hasher,
            hash_gate: HashGate::new(permits, permits * UNKNOWN_HASHES_QUEUED_PER_CORE),
            hub: Hub::new(
                store.clone(),
                audit_writer.clone(),
                keyring.clone(),
                clock.clone(),
            ),
            audit_writer,
            settings,
            throttle: LoginThrottle::default(),
            activity: ActivityBuffer::default(),
            refusals: crate::audit::refusals::RefusalTable::new(config.audit.refusal_sources),
            metrics: Metrics::default(),
            upstream: Upstream::new(config.instances.network_isolation),
            minted_tokens: TtlCache::new(60 * MICROS_PER_SECOND, 100_000),
            used_handoff_codes: TtlCache::new(120 * MICROS_PER_SECOND, 100_000),
            oidc: crate::sso::oidc::OidcState::default(),
            config,
            store,
            keyring,
            clock,
            tls,
        })))
    }

    pub fn now(&self) -> Micros {
        self.clock.now()
    }

    /// Forgets everything cached about a user (after suspend, delete, role or MFA change).
    pub fn forget_user(&self, user_id: &str) {
        self.hub.caches.forget_user(user_id);
    }

    /// After an instance's rules change or it is deleted.
    pub fn forget_instance(&self, name: &str) {
        self.hub.caches.forget_instance(name);
    }

    /// After a key is revoked.
    pub fn forget_instance_keys(&self) {
        self.hub.caches.forget_instance_keys();
    }

    /// After a role change, a removal, or a join.
    pub fn forget_membership(&self, team_id: &str, user_id: &str) {
        self.hub.caches.forget_membership(team_id, user_id);
    }

    /// After a settings change or deletion of a team.
    pub fn forget_team(&self, team_id: &str) {
        self.hub.caches.forget_team(team_id);
    }

    pub fn forget_session(&self, session_id: &str) {
        self.hub.caches.forget_session(session_id);
    }

    pub fn forget_token(&self, token_id: &str) {
        self.hub.caches.forget_token(token_id);
    }
}

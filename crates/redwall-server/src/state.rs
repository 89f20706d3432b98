//! What every request handler can reach.

use crate::auth::activity::ActivityBuffer;
use crate::auth::hash_gate::HashGate;
use crate::auth::throttle::LoginThrottle;
use crate::clock::Clock;
use crate::config::Config;
use crate::instances::InstanceManager;
use crate::metrics::Metrics;
use crate::proxy::credentials::CachedKey;
use crate::proxy::upstream::Upstream;
use crate::proxy::ProxyTarget;
use crate::settings::SettingsCache;
use crate::ttl_cache::TtlCache;
use redwall_crypto::chain::ChainKey;
use redwall_crypto::keyring::Keyring;
use redwall_crypto::password::PasswordHasher;
use redwall_crypto::token::TokenDigest;
use redwall_policy::permission::{Permission, TeamRole};
use redwall_policy::{Micros, MICROS_PER_SECOND};
use redwall_store::{AuditWriter, Store};
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

/// A grant may be served from memory for at most this long after a change
/// made on another node.
pub const GRANT_CACHE_MICROS: Micros = MICROS_PER_SECOND;

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
    pub sessions: TtlCache<TokenDigest, CachedSession>,
    pub tokens: TtlCache<TokenDigest, CachedToken>,
    pub users: TtlCache<String, CachedUser>,
    /// (team id, user id) -> role, or `None` for "not a member".
    pub memberships: TtlCache<(String, String), Option<TeamRole>>,
    /// team id -> what the guard needs of the team, or `None` for "no such team".
    pub teams: TtlCache<String, Option<CachedTeam>>,
    pub throttle: LoginThrottle,
    pub activity: ActivityBuffer,
    /// Refusals counted per source and minute (`audit::record_refusal`).
    pub refusals: crate::audit::refusals::RefusalTable,
    pub metrics: Metrics,
    /// Clients reach us over TLS (ours, not a proxy's).
    pub tls: bool,
    /// Set by `serve` only: offline commands never run instances.
    pub instances: OnceLock<Arc<InstanceManager>>,
    /// instance name -> what the proxy needs, or `None` for "no such instance".
    pub proxy_targets: TtlCache<String, Option<Arc<ProxyTarget>>>,
    /// API key digest -> the key, or `None` for "unknown".
    pub instance_keys: TtlCache<TokenDigest, Option<CachedKey>>,
    /// Keyed digest of a verified basic credential -> user id, so argon2
    /// runs once per credential a minute, not once per request.
    pub basic_auth: TtlCache<[u8; 32], String>,
    pub upstream: Upstream,
    /// (instance, token kind, user) -> a token minted for the instance, reused for a minute.
    pub minted_tokens: TtlCache<String, String>,
    /// Instance handover codes already redeemed (single use).
    pub used_handoff_codes: TtlCache<String, ()>,
    /// OpenID Connect: HTTP clients, cached discovery and keys, used states.
    pub oidc: crate::sso::oidc::OidcState,
}

#[derive(Clone, Debug)]
pub struct CachedSession {
    pub id: String,
    pub user_id: String,
    pub expires_at: Micros,
    pub last_seen_at: Micros,
}

#[derive(Clone, Debug)]
pub struct CachedToken {
    pub id: String,
    pub user_id: String,
    pub scope: redwall_policy::access::TokenScope,
    pub expires_at: Option<Micros>,
    pub team_id: Option<String>,
    /// When limited to some permissions.
    pub permissions: Option<Vec<Permission>>,
}

#[derive(Clone, Debug)]
pub struct CachedTeam {
    pub require_mfa: bool,
}

#[derive(Clone, Debug)]
pub struct CachedUser {
    pub username: String,
    pub is_admin: bool,
    pub suspended: bool,
    pub mfa_enabled: bool,
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
            audit_writer,
            settings,
            sessions: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            tokens: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            users: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            memberships: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            teams: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            throttle: LoginThrottle::default(),
            activity: ActivityBuffer::default(),
            refusals: crate::audit::refusals::RefusalTable::new(config.audit.refusal_sources),
            metrics: Metrics::default(),
            instances: OnceLock::new(),
            proxy_targets: TtlCache::new(GRANT_CACHE_MICROS, 10_000),
            instance_keys: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            basic_auth: TtlCache::new(60 * MICROS_PER_SECOND, 10_000),
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
        self.users.remove(&user_id.to_string());
        self.sessions.retain(|_, s| s.user_id != user_id);
        self.tokens.retain(|_, t| t.user_id != user_id);
        self.memberships.retain(|(_, u), _| u != user_id);
        self.basic_auth.retain(|_, u| u != user_id);
    }

    /// After an instance's rules change or it is deleted.
    pub fn forget_instance(&self, name: &str) {
        self.proxy_targets.remove(&name.to_string());
    }

    /// After a key is revoked (rare; clearing all is simplest).
    pub fn forget_instance_keys(&self) {
        self.instance_keys.retain(|_, _| false);
    }

    /// After a role change, a removal, or a join.
    pub fn forget_membership(&self, team_id: &str, user_id: &str) {
        self.memberships
            .remove(&(team_id.to_string(), user_id.to_string()));
    }

    /// After a settings change or deletion of a team.
    pub fn forget_team(&self, team_id: &str) {
        self.teams.remove(&team_id.to_string());
        self.proxy_targets
            .retain(|_, t| t.as_ref().is_none_or(|t| t.team_id != team_id));
        self.memberships.retain(|(t, _), _| t != team_id);
        self.tokens
            .retain(|_, tok| tok.team_id.as_deref() != Some(team_id));
    }

    pub fn forget_session(&self, session_id: &str) {
        self.sessions.retain(|_, s| s.id != session_id);
    }

    pub fn forget_token(&self, token_id: &str) {
        self.tokens.retain(|_, t| t.id != token_id);
    }
}

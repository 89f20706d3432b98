//! What every request handler can reach.

use crate::clock::Clock;
use crate::config::Config;
use crate::proxy::upstream::Upstream;
use crate::ttl_cache::TtlCache;
use redwall_crypto::chain::ChainKey;
use redwall_crypto::keyring::Keyring;
use redwall_hub::Hub;
use redwall_policy::{Micros, MICROS_PER_SECOND};
use redwall_store::{AuditWriter, Store};
use std::ops::Deref;
use std::sync::Arc;

pub use redwall_hub::caches::{
    CachedKey, CachedSession, CachedTeam, CachedToken, CachedUser, InstanceTarget,
    GRANT_CACHE_MICROS,
};

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
    pub keyring: Keyring,
    pub clock: Arc<dyn Clock>,
    /// The hub's operations and the caches they clear.
    pub hub: Hub,
    /// Clients reach us over TLS (ours, not a proxy's).
    pub tls: bool,
    pub upstream: Upstream,
    /// The tunnels of the agents connected to this process.
    pub tunnels: crate::proxy::tunnels::Tunnels,
    /// (instance, token kind, user) -> a token minted for the instance, as
    /// its header value, reused for a minute.
    pub minted_tokens: TtlCache<crate::proxy::MintKey, axum::http::HeaderValue>,
    /// Instance handover codes already redeemed (single use).
    pub used_handoff_codes: TtlCache<String, ()>,
    /// OpenID Connect: HTTP clients, cached discovery and keys, used states.
    pub oidc: crate::sso::oidc::OidcState,
    /// The team MQTT broker, once `serve` started it (for `/mqtt`).
    pub broker: std::sync::OnceLock<redwall_broker::Broker>,
    /// SHA-256 (hex) of the self-signed certificate `serve` made, which
    /// agents' provisioning bundles pin; unset with a CA's certificate.
    pub tls_pin: std::sync::OnceLock<String>,
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
        let audit_writer = AuditWriter::spawn(store.clone(), ChainKey::from_keyring(&keyring));
        let hub = Hub::new(redwall_hub::HubParts {
            store: store.clone(),
            audit: audit_writer.clone(),
            keyring: keyring.clone(),
            clock: clock.clone(),
            passwords: config.passwords,
            sessions: config.sessions,
            refusal_sources: config.audit.refusal_sources,
        })?;
        Ok(AppState(Arc::new(Inner {
            hub,
            upstream: Upstream::new(config.instances.network_isolation),
            tunnels: Default::default(),
            minted_tokens: TtlCache::new(60 * MICROS_PER_SECOND, 100_000),
            used_handoff_codes: TtlCache::new(120 * MICROS_PER_SECOND, 100_000),
            oidc: crate::sso::oidc::OidcState::default(),
            broker: std::sync::OnceLock::new(),
            tls_pin: std::sync::OnceLock::new(),
            config,
            keyring,
            clock,
            tls,
        })))
    }

    pub fn now(&self) -> Micros {
        self.clock.now()
    }
}

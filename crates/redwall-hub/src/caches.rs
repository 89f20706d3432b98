//! What requests resolve, kept for at most a second (a change on another
//! node shows within that), and cleared at once by the operations of this
//! node that change it. Only the hub's operations clear them.

use std::sync::Arc;

use redwall_crypto::token::TokenDigest;
use redwall_crypto::Secret;
use redwall_policy::permission::{Permission, TeamRole};
use redwall_policy::route_policy::RouteRule;
use redwall_policy::team_rules::TeamRanges;
use redwall_policy::{Micros, MICROS_PER_SECOND};

use crate::ttl_cache::TtlCache;

/// A grant may be served from memory for at most this long after a change
/// made on another node.
pub const GRANT_CACHE_MICROS: Micros = MICROS_PER_SECOND;

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

/// What the proxy needs of an instance to judge and forward a request.
pub struct InstanceTarget {
    pub id: String,
    pub name: String,
    pub team_id: String,
    pub port: u16,
    /// The agent whose Node-RED this instance is (reached through its
    /// tunnel), or `None` when this hub runs it.
    pub agent_id: Option<String>,
    pub rules: Vec<RouteRule>,
    /// The team's allowed client ranges, failing closed.
    pub team_ranges: TeamRanges,
    pub editor_secret: Secret,
    pub endpoint_secret: Secret,
}

/// An instance API key, as checking one needs it.
#[derive(Clone, Debug)]
pub struct CachedKey {
    pub id: String,
    pub instance_id: String,
    pub path_prefix: Option<String>,
    pub expires_at: Option<Micros>,
    pub revoked: bool,
}

pub struct Caches {
    pub sessions: TtlCache<TokenDigest, CachedSession>,
    pub tokens: TtlCache<TokenDigest, CachedToken>,
    pub users: TtlCache<String, CachedUser>,
    /// (team id, user id) -> role, or `None` for "not a member".
    pub memberships: TtlCache<(String, String), Option<TeamRole>>,
    /// team id -> what the guard needs of the team, or `None` for "no such team".
    pub teams: TtlCache<String, Option<CachedTeam>>,
    /// instance name -> what the proxy needs, or `None` for "no such instance".
    pub instance_targets: TtlCache<String, Option<Arc<InstanceTarget>>>,
    /// API key digest -> the key, or `None` for "unknown".
    /// Shared, so a hit clones no string (it runs on every request with a key).
    pub instance_keys: TtlCache<TokenDigest, Option<Arc<CachedKey>>>,
    /// Keyed digest of a verified basic credential -> user id, so argon2
    /// runs once per credential a minute, not once per request.
    pub basic_auth: TtlCache<[u8; 32], String>,
}

impl Default for Caches {
    fn default() -> Self {
        Caches::new()
    }
}

impl Caches {
    pub fn new() -> Caches {
        Caches {
            sessions: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            tokens: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            users: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            memberships: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            teams: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            instance_targets: TtlCache::new(GRANT_CACHE_MICROS, 10_000),
            instance_keys: TtlCache::new(GRANT_CACHE_MICROS, 100_000),
            basic_auth: TtlCache::new(60 * MICROS_PER_SECOND, 10_000),
        }
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
        self.instance_targets.remove(&name.to_string());
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
        self.instance_targets
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

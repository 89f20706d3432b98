//! Turning a presented credential into who it is: the one resolver the API's
//! guard and the proxy use (and the broker and the agent gateway will).
//!
//! Every lookup is a digest lookup (never a password hash), served from the
//! hub's one-second caches, which this node's changes clear at once. What a
//! credential names is returned only while it is valid; the account behind
//! it is checked by [`Hub::active_user`], the one suspended-user check.

use redwall_crypto::token::{self, PERSONAL_ACCESS_PREFIX, SESSION_PREFIX};
use redwall_policy::access::TokenScope;
use redwall_policy::permission::{Permission, TeamRole};

use std::sync::Arc;

use redwall_policy::team_rules::TeamRanges;

use crate::caches::{CachedSession, CachedTeam, CachedToken, CachedUser, InstanceTarget};
use crate::{Hub, HubResult};

/// What a personal access token (`rwp_...`) turned out to be.
pub enum TokenCheck {
    Valid(CachedToken),
    /// Malformed, unknown or revoked: all answered alike.
    Invalid,
    Expired,
}

/// The bearer credential of an `Authorization` header value: the one
/// parser, for every place that reads a bearer token.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// A stored permission list. A name this version does not know is dropped:
/// the token then grants less, never more.
fn parse_permissions(json: &str) -> Vec<Permission> {
    serde_json::from_str::<Vec<String>>(json)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| Permission::from_name(n))
        .collect()
}

impl Hub {
    /// The stored session a cookie value names, if any (its lifetimes are
    /// the caller's to judge: they depend on the platform's settings).
    pub async fn session_by_cookie(&self, cookie_value: &str) -> HubResult<Option<CachedSession>> {
        let Some(valid) = token::parse_token(SESSION_PREFIX, cookie_value) else {
            return Ok(None);
        };
        let digest = token::token_digest(valid);
        let now = self.now();
        if let Some(s) = self.caches.sessions.get(&digest, now) {
            return Ok(Some(s));
        }
        let Some(s) = self.store.get_session_by_digest(&digest).await? else {
            return Ok(None);
        };
        let cached = CachedSession {
            id: s.id,
            user_id: s.user_id,
            expires_at: s.expires_at,
            last_seen_at: s.last_seen_at,
        };
        self.caches.sessions.insert(digest, cached.clone(), now);
        Ok(Some(cached))
    }

    /// A personal access token, as presented.
    pub async fn token_by_bearer(&self, presented: &str) -> HubResult<TokenCheck> {
        let Some(valid) = token::parse_token(PERSONAL_ACCESS_PREFIX, presented) else {
            return Ok(TokenCheck::Invalid);
        };
        let digest = token::token_digest(valid);
        let now = self.now();
        let cached = match self.caches.tokens.get(&digest, now) {
            Some(t) => t,
            None => match self.store.get_api_token_by_digest(&digest).await? {
                None => return Ok(TokenCheck::Invalid),
                Some(t) => {
                    // A scope this version does not know grants nothing.
                    let Some(scope) = TokenScope::parse(&t.scope) else {
                        tracing::error!(token = %t.id, "a token has an unknown scope");
                        return Ok(TokenCheck::Invalid);
                    };
                    let c = CachedToken {
                        id: t.id,
                        user_id: t.user_id,
                        scope,
                        expires_at: t.expires_at,
                        team_id: t.team_id,
                        permissions: t.permissions.as_deref().map(parse_permissions),
                    };
                    self.caches.tokens.insert(digest, c.clone(), now);
                    c
                }
            },
        };
        if cached.expires_at.is_some_and(|e| now >= e) {
            return Ok(TokenCheck::Expired);
        }
        Ok(TokenCheck::Valid(cached))
    }

    /// The account, if it exists.
    pub async fn user(&self, user_id: &str) -> HubResult<Option<CachedUser>> {
        let now = self.now();
        let key = user_id.to_string();
        if let Some(u) = self.caches.users.get(&key, now) {
            return Ok(Some(u));
        }
        let Some(user) = self.store.get_user(user_id).await? else {
            return Ok(None);
        };
        let cached = CachedUser {
            username: user.username,
            is_admin: user.is_admin,
            suspended: user.suspended,
            mfa_enabled: user.mfa_enabled,
        };
        self.caches.users.insert(key, cached.clone(), now);
        Ok(Some(cached))
    }

    /// The account behind a credential, only if it may act: the one check
    /// that a suspended (or deleted) account's credentials no longer work.
    /// `None` when the account is gone or suspended.
    pub async fn active_user(&self, user_id: &str) -> HubResult<Option<CachedUser>> {
        Ok(self.user(user_id).await?.filter(|u| !u.suspended))
    }

    /// The user's role in the team (`None`: not a member).
    pub async fn membership(&self, team_id: &str, user_id: &str) -> HubResult<Option<TeamRole>> {
        let now = self.now();
        let key = (team_id.to_string(), user_id.to_string());
        if let Some(role) = self.caches.memberships.get(&key, now) {
            return Ok(role);
        }
        let role = self
            .store
            .get_member_role(team_id, user_id)
            .await?
            .and_then(|r| TeamRole::parse(&r));
        self.caches.memberships.insert(key, role, now);
        Ok(role)
    }

    /// What the guard needs of a team (`None`: no such team).
    pub async fn team_facts(&self, team_id: &str) -> HubResult<Option<CachedTeam>> {
        let now = self.now();
        let key = team_id.to_string();
        if let Some(t) = self.caches.teams.get(&key, now) {
            return Ok(t);
        }
        let team = self.store.get_team(team_id).await?.map(|t| CachedTeam {
            require_mfa: t.require_mfa,
        });
        self.caches.teams.insert(key, team.clone(), now);
        Ok(team)
    }

    /// What the proxy needs of the instance called `name`: where it
    /// listens, who may reach it, and its keys (cached briefly; forgotten
    /// when its rules change or it is deleted). `None`: no such instance.
    pub async fn instance_target(&self, name: &str) -> HubResult<Option<Arc<InstanceTarget>>> {
        let now = self.now();
        if let Some(t) = self.caches.instance_targets.get(name, now) {
            return Ok(t);
        }
        let target = match self.store.get_instance_by_name(name).await? {
            None => None,
            Some(i) => {
                let keys = crate::instances::keys::open_keys(&self.keyring, &i)?;
                let team = self.store.get_team(&i.team_id).await?;
                Some(Arc::new(InstanceTarget {
                    // An instance whose team is gone admits no address.
                    team_ranges: team.map_or(TeamRanges::Only(Vec::new()), |t| {
                        TeamRanges::from_stored(&t.allowed_cidrs)
                    }),
                    rules: crate::instances::options::rules_from_json(&i.routes),
                    id: i.id,
                    name: i.name,
                    team_id: i.team_id,
                    port: i.port,
                    agent_id: i.agent_id,
                    editor_secret: keys.editor,
                    endpoint_secret: keys.endpoint,
                }))
            }
        };
        self.caches
            .instance_targets
            .insert(name.to_string(), target.clone(), now);
        Ok(target)
    }

    /// A user by login name, for the proxy's `basic` routes.
    pub async fn user_by_name(&self, username: &str) -> HubResult<Option<redwall_store::User>> {
        Ok(self.store.find_user_by_username(username).await?)
    }
}

//! The credentials an endpoint rule may ask for: instance API keys and HTTP
//! basic auth with a Redwall account. Neither puts a slow hash on the hot
//! path: API keys are 256-bit random, found by their SHA-256 digest; a basic
//! credential is verified with argon2 once and then remembered under a keyed
//! digest for a minute (a password change forgets it at once).

use crate::throttle::{subject_key, Attempt, Channel, Device};
use crate::{Hub, HubResult};
use redwall_crypto::token::{self, INSTANCE_KEY_PREFIX};
use redwall_policy::permission::TeamRole;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub enum KeyCheck {
    /// The key as cached, shared: its id and the path prefix it is kept to.
    Valid(Arc<CachedKey>),
    Invalid,
}

pub use crate::caches::CachedKey;

pub async fn check_api_key(hub: &Hub, instance_id: &str, presented: &str) -> HubResult<KeyCheck> {
    let Some(valid) = token::parse_token(INSTANCE_KEY_PREFIX, presented) else {
        return Ok(KeyCheck::Invalid);
    };
    let digest = token::token_digest(valid);
    let now = hub.now();
    let cached = match hub.caches.instance_keys.get(&digest, now) {
        Some(c) => c,
        None => {
            let found = hub
                .store
                .get_instance_api_key_by_digest(&digest)
                .await?
                .map(|k| {
                    Arc::new(CachedKey {
                        id: k.id,
                        instance_id: k.instance_id,
                        path_prefix: k.path_prefix,
                        expires_at: k.expires_at,
                        revoked: k.revoked_at.is_some(),
                    })
                });
            hub.caches.instance_keys.insert(digest, found.clone(), now);
            found
        }
    };
    Ok(match cached {
        Some(k)
            if k.instance_id == instance_id
                && !k.revoked
                && k.expires_at.is_none_or(|e| e > now) =>
        {
            hub.activity.instance_key_used(&k.id, now);
            KeyCheck::Valid(k)
        }
        _ => KeyCheck::Invalid,
    })
}

/// A right basic credential: the user and their role in the team (`None`
/// for a non-member).
pub struct BasicUser {
    pub user_id: String,
    pub username: String,
    pub role: Option<TeamRole>,
}

pub enum BasicCheck {
    Valid(BasicUser),
    Invalid,
    /// The account (for this client) must wait this many seconds.
    Throttled(i64),
}

/// Checks a basic credential. Once the account is known (from the cache of
/// verified credentials or the user table) the throttle judges `attempt` by
/// it, before any password is hashed; a device known for it goes first.
pub async fn check_basic(
    hub: &Hub,
    team_id: &str,
    username: &str,
    password: &str,
    attempt: &mut Attempt,
    device: Option<&Device>,
) -> HubResult<BasicCheck> {
    let now = hub.now();
    let mut material = Vec::with_capacity(username.len() + password.len() + 1);
    material.extend_from_slice(username.as_bytes());
    material.push(0);
    material.extend_from_slice(password.as_bytes());
    let digest = hub.keyring.keyed_digest("basic-auth", &material);
    let cached = hub.caches.basic_auth.get(&digest, now);
    let found = match &cached {
        Some(_) => None,
        None => hub.user_by_name(username).await?,
    };
    let account = cached
        .clone()
        .or_else(|| found.as_ref().map(|u| u.id.clone()));
    if let Some(id) = &account {
        attempt.resolved(
            subject_key(Channel::Endpoint, "local", id),
            device.and_then(|d| d.known_for(id)),
        );
    }
    if let Err(wait) = hub.throttle.check(attempt, now) {
        return Ok(BasicCheck::Throttled(wait));
    }
    let user_id = match cached {
        Some(id) => id,
        None => {
            let stored = found.as_ref().and_then(|u| u.password_hash.clone());
            let verdict = hub
                .verify_password(password, stored.as_deref(), attempt.priority())
                .await?;
            let valid = matches!(
                verdict,
                redwall_crypto::password::Verification::Valid { .. }
            );
            let Some(user) = found.filter(|_| valid) else {
                return Ok(BasicCheck::Invalid);
            };
            hub.caches.basic_auth.insert(digest, user.id.clone(), now);
            user.id
        }
    };
    let Some(user) = hub.active_user(&user_id).await? else {
        return Ok(BasicCheck::Invalid);
    };
    Ok(BasicCheck::Valid(BasicUser {
        role: hub.membership(team_id, &user_id).await?,
        user_id,
        username: user.username,
    }))
}

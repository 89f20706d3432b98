//! Personal access tokens (`rwp_...`): checked by a SHA-256 lookup, never a
//! password hash, and remembered for at most a second.

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, CachedToken};
use axum::http::StatusCode;
use redwall_crypto::token::{self, PERSONAL_ACCESS_PREFIX};
use redwall_policy::access::TokenScope;
use redwall_policy::permission::Permission;

pub enum TokenCheck {
    Valid(CachedToken),
    Invalid,
    Expired,
}

pub async fn lookup(state: &AppState, presented: &str) -> ApiResult<TokenCheck> {
    let Some(valid) = token::parse_token(PERSONAL_ACCESS_PREFIX, presented) else {
        return Ok(TokenCheck::Invalid);
    };
    let digest = token::token_digest(valid);
    let now = state.now();
    let cached = match state.hub.caches.tokens.get(&digest, now) {
        Some(t) => t,
        None => match state.store.get_api_token_by_digest(&digest).await? {
            Some(t) => {
                let scope = TokenScope::parse(&t.scope).ok_or_else(|| {
                    ApiError::internal(format!("token {} has an unknown scope", t.id))
                })?;
                let c = CachedToken {
                    id: t.id,
                    user_id: t.user_id,
                    scope,
                    expires_at: t.expires_at,
                    team_id: t.team_id,
                    permissions: t.permissions.as_deref().map(parse_permissions),
                };
                state.hub.caches.tokens.insert(digest, c.clone(), now);
                c
            }
            None => return Ok(TokenCheck::Invalid),
        },
    };
    if cached.expires_at.is_some_and(|e| now >= e) {
        return Ok(TokenCheck::Expired);
    }
    state.activity.token_used(&cached.id, now);
    Ok(TokenCheck::Valid(cached))
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

/// The bearer credential of an `Authorization` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

pub fn invalid_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "the access token is invalid, expired or revoked",
    )
}

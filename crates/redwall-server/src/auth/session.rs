//! Server-side sessions: an opaque 256-bit id in a cookie, stored only as its
//! SHA-256 digest, with absolute and idle expiry.

use crate::audit::{self, Actor};
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::{AppState, CachedSession};
use axum::http::{HeaderMap, HeaderValue};
use redwall_crypto::token::{self, SESSION_PREFIX};
use redwall_crypto::Secret;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::session_rules::SessionState;
use redwall_store::{Session, User};

/// Under HTTPS the `__Host-` prefix makes browsers refuse the cookie unless it
/// is Secure, host-only and for path `/`.
pub const SECURE_COOKIE: &str = "__Host-redwall_session";
/// Plain HTTP is only allowed on loopback; browsers drop Secure cookies there.
pub const PLAIN_COOKIE: &str = "redwall_session";

/// The session id from the Cookie headers: over HTTPS only from the
/// `__Host-` cookie, which no other host (a sibling subdomain, an
/// instance) and no plain-HTTP page can set, so a planted session cannot
/// log a browser in as someone else. Works on bytes, so another
/// application's non-ASCII cookie on the same host cannot hide ours.
pub fn cookie_token(headers: &HeaderMap, https: bool) -> Option<String> {
    let wanted = if https { SECURE_COOKIE } else { PLAIN_COOKIE };
    crate::net::cookies::value(headers, wanted)
}

pub fn set_cookie(token: &str, https: bool, max_age_secs: i64) -> ApiResult<HeaderValue> {
    let text = if https {
        format!("{SECURE_COOKIE}={token}; Path=/; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite=Lax")
    } else {
        format!("{PLAIN_COOKIE}={token}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax")
    };
    HeaderValue::from_str(&text).map_err(ApiError::internal)
}

/// Carries an MFA challenge from a single sign-on callback to the console's
/// code step, so the challenge never appears in a URL.
pub fn mfa_challenge_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-redwall_mfa"
    } else {
        "redwall_mfa"
    }
}

pub fn mfa_challenge_cookie(token: &str, https: bool, max_age_secs: i64) -> ApiResult<HeaderValue> {
    let secure = if https { "; Secure" } else { "" };
    let text = format!(
        "{}={token}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}",
        mfa_challenge_cookie_name(https)
    );
    HeaderValue::from_str(&text).map_err(ApiError::internal)
}

pub fn clear_cookie(https: bool) -> HeaderValue {
    if https {
        HeaderValue::from_static(
            "__Host-redwall_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
        )
    } else {
        HeaderValue::from_static("redwall_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
    }
}

pub struct StartedSession {
    pub token: Secret,
    pub session: Session,
    pub csrf_token: String,
}

pub async fn start(
    state: &AppState,
    user: &User,
    client: &ClientInfo,
) -> ApiResult<StartedSession> {
    let now = state.now();
    let settings = state.settings.get(&state.store, now).await?;
    let token = token::new_token(SESSION_PREFIX);
    let csrf_token = crate::auth::csrf::token_for_session(&state.keyring, token.expose());
    let session = Session {
        id: crate::ids::new_id(),
        token_digest: token::token_digest(token.expose()).to_vec(),
        user_id: user.id.clone(),
        created_at: now,
        last_seen_at: now,
        expires_at: settings.lifetimes().absolute_expiry(now),
        client_ip: Some(client.ip.to_string()),
        user_agent: client.user_agent.clone(),
        csrf_token_digest: token::token_digest(&csrf_token).to_vec(),
        mfa_verified: user.mfa_enabled,
    };
    state.store.create_session(&session).await?;
    Ok(StartedSession {
        token,
        session,
        csrf_token,
    })
}

/// The live session for a cookie value, or `None` when it is unknown or
/// expired (an expired one is deleted and the expiry audited).
pub async fn lookup(
    state: &AppState,
    cookie_value: &str,
    client: &ClientInfo,
) -> ApiResult<Option<CachedSession>> {
    let Some(cached) = state.hub.session_by_cookie(cookie_value).await? else {
        return Ok(None);
    };
    let now = state.now();
    let last_seen = state
        .activity
        .session_last_seen(&cached.id)
        .map_or(cached.last_seen_at, |t| t.max(cached.last_seen_at));
    let lifetimes = state.settings.get(&state.store, now).await?.lifetimes();
    match lifetimes.state(cached.expires_at, last_seen, now) {
        SessionState::Active => {
            state.activity.session_seen(&cached.id, now);
            Ok(Some(cached))
        }
        ended => {
            end(state, &cached.id).await?;
            let reason = if ended == SessionState::IdleExpired {
                "idle"
            } else {
                "absolute"
            };
            audit::record(
                state,
                Some(&Actor::user_id(&cached.user_id)),
                client,
                AuditEvent::SessionExpired,
                Outcome::Success,
                Some(format!("session:{}", cached.id)),
                serde_json::json!({ "reason": reason }),
            )
            .await?;
            Ok(None)
        }
    }
}

/// Ends one session everywhere it could be remembered.
pub async fn end(state: &AppState, session_id: &str) -> ApiResult<bool> {
    let deleted = state.store.delete_session(session_id).await?;
    state.forget_session(session_id);
    state.activity.forget_session(session_id);
    Ok(deleted)
}

/// Ends all sessions of a user, except `keep` when given. Returns how many ended.
pub async fn end_all_of_user(
    state: &AppState,
    user_id: &str,
    keep: Option<&str>,
) -> ApiResult<usize> {
    let ended = state.store.delete_sessions_of_user(user_id, keep).await?;
    for id in &ended {
        state.forget_session(id);
        state.activity.forget_session(id);
    }
    Ok(ended.len())
}

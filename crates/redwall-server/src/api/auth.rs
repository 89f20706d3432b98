//! Logging in and out.
//!
//! Unknown user, wrong password and suspended account answer the same error
//! after the same amount of work; every failure is audited and counted by the
//! per-account and per-address throttle.

use crate::accounts::{hash_password, verify_password};
use crate::api::body::Body;
use crate::audit::{self, Actor};
use crate::auth::device::{self, Channel, Device};
use crate::auth::principal::Principal;
use crate::auth::session;
use crate::auth::throttle::{name_key, subject_key, Attempt};
use crate::error::{ApiError, ApiResult};
use crate::login::{
    challenge, finish_login_on, open_challenge, refuse_if_throttled, second_factor_step_on,
};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use redwall_crypto::password::Verification;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_store::User;
use serde::Deserialize;
use serde_json::json;

const MAX_PASSWORD_BYTES: usize = 4096;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// A TOTP code or a recovery code, for users with MFA (optional: without
    /// it the answer is an MFA challenge).
    #[serde(default, alias = "code")]
    pub totp: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaStepRequest {
    pub mfa_token: String,
    /// A TOTP code or a recovery code.
    pub code: String,
}

pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Response> {
    let device = device::read(
        &state,
        &headers,
        Channel::Console,
        client.https,
        state.now(),
    );
    let (user, attempt) = password_step(
        &state,
        &client,
        device.as_ref(),
        &req.username,
        &req.password,
    )
    .await?;
    if user.mfa_enabled {
        match req.totp.as_deref() {
            None => return Ok(Json(challenge(&state, &user)?).into_response()),
            Some(code) => {
                second_factor_step_on(&state, &client, device.as_ref(), &user, code).await?
            }
        }
    }
    state.throttle.record_success(&attempt);
    finish_login_on(&state, &client, device.as_ref(), &user, None).await
}

pub async fn login_mfa(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    Body(req): Body<MfaStepRequest>,
) -> ApiResult<Response> {
    let now = state.now();
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_mfa_token",
            "the MFA challenge is invalid or expired; log in again",
        )
    };
    let (user_id, sso) = open_challenge(&state, &req.mfa_token, now).ok_or_else(invalid)?;
    let user = state
        .store
        .get_user(&user_id)
        .await?
        .filter(|u| !u.suspended && u.mfa_enabled)
        .ok_or_else(invalid)?;
    let device = device::read(&state, &headers, Channel::Console, client.https, now);
    second_factor_step_on(&state, &client, device.as_ref(), &user, &req.code).await?;
    let Some(sso) = sso else {
        return finish_login_on(&state, &client, device.as_ref(), &user, None).await;
    };
    // Only now may the SSO login change the user (roles, local password).
    let user = crate::sso::login::apply_after_second_factor(&sso, &state, &client, user).await?;
    finish_login_on(&state, &client, device.as_ref(), &user, Some(&sso.provider)).await
}

/// The password step. Throttled by the name (normalised as the user table
/// matches it) before anything is looked up, unless the client holds a
/// device cookie; then by the account found, where a device known for it
/// counts on its own record instead.
async fn password_step(
    state: &AppState,
    client: &ClientInfo,
    device: Option<&Device>,
    username: &str,
    password: &str,
) -> ApiResult<(User, Attempt)> {
    let now = state.now();
    let account = username.chars().take(64).collect::<String>();
    let mut attempt = Attempt::new(client.ip, name_key(Channel::Console, "local", username));
    if device.is_none() {
        refuse_if_throttled(state, client, &attempt, &account, None).await?;
    }
    let plausible = redwall_policy::username::check_username(username).is_ok()
        && password.len() <= MAX_PASSWORD_BYTES;
    let user = if plausible {
        state.store.find_user_by_username(username).await?
    } else {
        None
    };
    if let Some(u) = &user {
        let known = device.and_then(|d| d.known_for(&u.id));
        attempt.resolved(subject_key(Channel::Console, "local", &u.id), known);
    }
    refuse_if_throttled(state, client, &attempt, &account, None).await?;
    let verification = if plausible {
        let stored = user.as_ref().and_then(|u| u.password_hash.as_deref());
        verify_password(state, password, stored, attempt.priority()).await?
    } else {
        Verification::Invalid
    };
    let failure = match (&user, verification) {
        (None, _) => Some("unknown_user"),
        (Some(_), Verification::Invalid) => Some("wrong_password"),
        (Some(u), _) if u.suspended => Some("suspended"),
        _ => None,
    };
    match (user, failure) {
        (Some(user), None) => {
            if let Verification::Valid { needs_rehash: true } = verification {
                rehash(state, client, &user, password).await?;
            }
            Ok((user, attempt))
        }
        (user, reason) => {
            state.throttle.record_failure(&attempt, now);
            state.metrics.login_failed();
            let actor = match &user {
                Some(u) => Actor::user(&u.id, &u.username),
                None => Actor::attempted(&account),
            };
            audit::record(
                state,
                Some(&actor),
                client,
                AuditEvent::LoginFailed,
                Outcome::Failure,
                None,
                json!({ "reason": reason.unwrap_or("unknown") }),
            )
            .await?;
            Err(ApiError::invalid_credentials())
        }
    }
}

/// Imported (bcrypt) or outdated hashes become argon2id with current parameters.
async fn rehash(
    state: &AppState,
    client: &ClientInfo,
    user: &User,
    password: &str,
) -> ApiResult<()> {
    let was_bcrypt = user
        .password_hash
        .as_deref()
        .is_some_and(redwall_crypto::password::is_bcrypt_hash);
    let hash = hash_password(state, password).await?;
    state
        .store
        .set_password_hash(&user.id, &hash, state.now())
        .await?;
    audit::record(
        state,
        Some(&Actor::user(&user.id, &user.username)),
        client,
        AuditEvent::PasswordRehashed,
        Outcome::Success,
        Some(format!("user:{}", user.id)),
        json!({ "from": if was_bcrypt { "bcrypt" } else { "argon2" } }),
    )
    .await
}

/// Ends the caller's browser session, audited with `details`.
pub(crate) async fn end_current_session(
    state: &AppState,
    principal: &Principal,
    client: &ClientInfo,
    details: serde_json::Value,
) -> ApiResult<()> {
    let Some(session_id) = principal.session_id() else {
        return Err(ApiError::bad_request(
            "not_a_session",
            "logout ends a browser session; revoke a token at /api/v1/me/tokens instead",
        ));
    };
    session::end(state, session_id).await?;
    audit::record(
        state,
        Some(&principal.actor()),
        client,
        AuditEvent::Logout,
        Outcome::Success,
        Some(format!("session:{session_id}")),
        details,
    )
    .await
}

pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
) -> ApiResult<Response> {
    end_current_session(&state, &principal, &client, json!({})).await?;
    Ok((
        [(header::SET_COOKIE, session::clear_cookie(client.https))],
        StatusCode::NO_CONTENT,
    )
        .into_response())
}

pub async fn logout_everywhere(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
) -> ApiResult<Response> {
    let ended = session::end_all_of_user(&state, &principal.user_id, None).await?;
    audit::record(
        &state,
        Some(&principal.actor()),
        &client,
        AuditEvent::LogoutEverywhere,
        Outcome::Success,
        Some(format!("user:{}", principal.user_id)),
        json!({ "sessions_ended": ended }),
    )
    .await?;
    Ok((
        [(header::SET_COOKIE, session::clear_cookie(client.https))],
        Json(json!({ "sessions_ended": ended })),
    )
        .into_response())
}

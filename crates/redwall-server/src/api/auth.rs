//! Logging in and out.
//!
//! Unknown user, wrong password and suspended account answer the same error
//! after the same amount of work; every failure is audited and counted by the
//! per-account and per-address throttle.

use crate::accounts::{hash_password, verify_password};
use crate::api::body::Body;
use crate::api::mfa::{verify_second_factor, SecondFactor};
use crate::api::users::UserView;
use crate::audit::{self, Actor};
use crate::auth::device::{self, Channel, Device};
use crate::auth::principal::Principal;
use crate::auth::session;
use crate::auth::throttle::{name_key, subject_key, Attempt};
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::sso::login::AfterSecondFactor;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use redwall_crypto::password::Verification;
use redwall_crypto::token::MFA_CHALLENGE_PREFIX;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::{Micros, MICROS_PER_SECOND};
use redwall_store::User;
use serde::{Deserialize, Serialize};
use serde_json::json;

const MFA_CHALLENGE_SECS: i64 = 300;
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

#[derive(Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// "ok" (a session cookie is set) or "mfa_required" (answer at /api/v1/auth/mfa).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserView>,
    /// Send this as X-CSRF-Token on state-changing requests made with the cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// MFA is required on this platform and the user must enrol first.
    pub mfa_enrolment_required: bool,
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
    let user = sso.apply(&state, &client, user).await?;
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

/// A 429 (audited) when `attempt` must wait; `provider` names the SSO
/// provider the login went to, if any.
pub(crate) async fn refuse_if_throttled(
    state: &AppState,
    client: &ClientInfo,
    attempt: &Attempt,
    attempted: &str,
    provider: Option<&str>,
) -> ApiResult<()> {
    let Err(wait) = state.throttle.check(attempt, state.now()) else {
        return Ok(());
    };
    state.metrics.login_throttled();
    let details = match provider {
        None => json!({ "retry_after_secs": wait }),
        Some(p) => json!({ "retry_after_secs": wait, "provider": p }),
    };
    audit::record(
        state,
        Some(&Actor::attempted(attempted)),
        client,
        AuditEvent::LoginThrottled,
        Outcome::Denied,
        provider.map(|p| format!("provider:{p}")),
        details,
    )
    .await?;
    Err(ApiError::throttled(wait))
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

pub(crate) async fn second_factor_step(
    state: &AppState,
    client: &ClientInfo,
    user: &User,
    code: &str,
) -> ApiResult<()> {
    second_factor_step_on(state, client, None, user, code).await
}

/// The second factor, throttled on the Redwall account (a device known for
/// it has its own allowance).
pub(crate) async fn second_factor_step_on(
    state: &AppState,
    client: &ClientInfo,
    device: Option<&Device>,
    user: &User,
    code: &str,
) -> ApiResult<()> {
    let now = state.now();
    let mut attempt = Attempt::new(client.ip, subject_key(Channel::Console, "local", &user.id));
    attempt.device = device.and_then(|d| d.known_for(&user.id));
    if let Err(wait) = state.throttle.check(&attempt, now) {
        return Err(ApiError::throttled(wait));
    }
    match verify_second_factor(state, user, code).await? {
        Some(SecondFactor::Totp) => {
            state.throttle.record_success(&attempt);
            Ok(())
        }
        Some(SecondFactor::RecoveryCode { remaining }) => {
            state.throttle.record_success(&attempt);
            audit::record(
                state,
                Some(&Actor::user(&user.id, &user.username)),
                client,
                AuditEvent::MfaRecoveryCodeUsed,
                Outcome::Success,
                Some(format!("user:{}", user.id)),
                json!({ "remaining": remaining }),
            )
            .await
        }
        None => {
            state.throttle.record_failure(&attempt, now);
            state.metrics.login_failed();
            audit::record(
                state,
                Some(&Actor::user(&user.id, &user.username)),
                client,
                AuditEvent::MfaVerifyFailed,
                Outcome::Failure,
                Some(format!("user:{}", user.id)),
                json!({ "step": "login" }),
            )
            .await?;
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_mfa_code",
                "the code is incorrect or was already used",
            ))
        }
    }
}

/// Starts the session of a user who passed every step (`provider`: the SSO
/// provider that vouched for them, if any).
pub(crate) async fn finish_login(
    state: &AppState,
    client: &ClientInfo,
    user: &User,
    provider: Option<&str>,
) -> ApiResult<Response> {
    finish_login_on(state, client, None, user, provider).await
}

/// [`finish_login`] for a client that presented `device`: its device cookie
/// is renewed (same device id) when it is this user's; any other client gets
/// a new one, so next time it is a known client for this account.
pub(crate) async fn finish_login_on(
    state: &AppState,
    client: &ClientInfo,
    device: Option<&Device>,
    user: &User,
    provider: Option<&str>,
) -> ApiResult<Response> {
    let started = session::start(state, user, client).await?;
    state.metrics.login_succeeded();
    audit::record(
        state,
        Some(&Actor::user(&user.id, &user.username)),
        client,
        AuditEvent::LoginSucceeded,
        Outcome::Success,
        Some(format!("session:{}", started.session.id)),
        json!({ "mfa": user.mfa_enabled, "provider": provider }),
    )
    .await?;
    let settings = state.settings.get(&state.store, state.now()).await?;
    let max_age = (started.session.expires_at - state.now()) / MICROS_PER_SECOND;
    let cookie = session::set_cookie(started.token.expose(), client.https, max_age)?;
    let body = LoginResponse {
        status: "ok",
        mfa_token: None,
        user: Some(UserView::from(user)),
        csrf_token: Some(started.csrf_token),
        expires_at: Some(rfc3339(started.session.expires_at)),
        mfa_enrolment_required: settings.require_mfa && !user.mfa_enabled,
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::SET_COOKIE, cookie);
    let now = state.now();
    if let Some(c) = device::issue(state, Channel::Console, client.https, &user.id, device, now) {
        headers.append(header::SET_COOKIE, c);
    }
    Ok((headers, Json(body)).into_response())
}

/// A sealed, short-lived statement "this user passed the password step":
/// stateless, so any node can check it, and useless without the second factor.
pub(crate) fn challenge(state: &AppState, user: &User) -> ApiResult<LoginResponse> {
    sealed_challenge(state, user, None)
}

/// [`challenge`] for an SSO login, carrying what the login will change once
/// the second factor succeeds.
pub(crate) fn challenge_after_sso(
    state: &AppState,
    user: &User,
    after: &AfterSecondFactor,
) -> ApiResult<LoginResponse> {
    sealed_challenge(state, user, Some(after))
}

fn sealed_challenge(
    state: &AppState,
    user: &User,
    sso: Option<&AfterSecondFactor>,
) -> ApiResult<LoginResponse> {
    let expires = state.now() + MFA_CHALLENGE_SECS * MICROS_PER_SECOND;
    let payload = json!({ "u": user.id, "e": expires, "s": sso }).to_string();
    let sealed = state
        .keyring
        .sealer("mfa-challenge")
        .seal(payload.as_bytes(), b"mfa-challenge");
    let token = format!(
        "{MFA_CHALLENGE_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
    );
    Ok(LoginResponse {
        status: "mfa_required",
        mfa_token: Some(token),
        user: None,
        csrf_token: None,
        expires_at: Some(rfc3339(expires)),
        mfa_enrolment_required: false,
    })
}

fn open_challenge(
    state: &AppState,
    token: &str,
    now: Micros,
) -> Option<(String, Option<AfterSecondFactor>)> {
    let body = token.strip_prefix(MFA_CHALLENGE_PREFIX)?;
    // Room for an SSO login's matched groups.
    if body.len() > 3072 {
        return None;
    }
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .ok()?;
    let plain = state
        .keyring
        .sealer("mfa-challenge")
        .open(&sealed, b"mfa-challenge")
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&plain).ok()?;
    let expires = v.get("e")?.as_i64()?;
    if now >= expires {
        return None;
    }
    let sso = match v.get("s") {
        None | Some(serde_json::Value::Null) => None,
        Some(s) => Some(serde_json::from_value(s.clone()).ok()?),
    };
    Some((v.get("u")?.as_str()?.to_string(), sso))
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

//! The steps of signing in, shared by the password login (`api::auth`),
//! the end of every SSO login (`sso::login`) and so the console: the
//! throttle check, the second factor (TOTP or a recovery code), the sealed
//! MFA challenge that carries a login between its two steps, and the start
//! of the session.

use crate::accounts::UserView;
use crate::audit::{self, Actor};
use crate::auth::device::{self, Channel, Device};
use crate::auth::session;
use crate::auth::throttle::{subject_key, Attempt};
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use redwall_crypto::recovery::normalize_recovery_code;
use redwall_crypto::token::MFA_CHALLENGE_PREFIX;
use redwall_crypto::totp::TotpSecret;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::{Micros, MICROS_PER_SECOND};
use redwall_store::User;
use serde::{Deserialize, Serialize};
use serde_json::json;

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

const MFA_CHALLENGE_SECS: i64 = 300;

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

pub(crate) fn open_challenge(
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

/// What an SSO login changes about the user, applied only once Redwall's
/// second factor (when asked) has succeeded: until then the login has only
/// shown the provider's credential, which must not change stored roles or
/// the local password. Carried sealed in the MFA challenge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AfterSecondFactor {
    #[serde(rename = "p")]
    pub provider: String,
    /// Only the reported groups some mapping rule matches (the mapping's
    /// outcome is the same), so the challenge stays small.
    #[serde(rename = "g")]
    pub groups: Vec<String>,
    /// The provider is SSO-only: remove the user's local password.
    #[serde(rename = "c")]
    pub clear_password: bool,
}

pub enum SecondFactor {
    Totp,
    RecoveryCode { remaining: i64 },
}

/// Checks a TOTP code (once per time step, atomically) or a recovery code
/// (once each). `None` when neither matches.
pub async fn verify_second_factor(
    state: &AppState,
    user: &User,
    code: &str,
) -> ApiResult<Option<SecondFactor>> {
    if code.len() > 64 {
        return Ok(None);
    }
    let Some(sealed) = user.mfa_secret_sealed.as_deref() else {
        return Ok(None);
    };
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() == 6 && compact.bytes().all(|b| b.is_ascii_digit()) {
        let secret = open_secret(state, &user.id, sealed)?;
        let last = user.mfa_last_step.and_then(|s| u64::try_from(s).ok());
        let Some(step) = secret.verify(&compact, now_secs(state), last) else {
            return Ok(None);
        };
        let step = i64::try_from(step).map_err(ApiError::internal)?;
        // The compare-and-set refuses a code that a concurrent request just used.
        return Ok(state
            .store
            .advance_mfa_step(&user.id, step)
            .await?
            .then_some(SecondFactor::Totp));
    }
    let Some(normalized) = normalize_recovery_code(code) else {
        return Ok(None);
    };
    let digest = state
        .keyring
        .keyed_digest("recovery-code", normalized.as_bytes());
    if state
        .store
        .use_recovery_code(&user.id, &digest, state.now())
        .await?
    {
        let remaining = state.store.count_recovery_codes(&user.id).await?;
        return Ok(Some(SecondFactor::RecoveryCode { remaining }));
    }
    Ok(None)
}

pub(crate) fn seal_aad(user_id: &str) -> Vec<u8> {
    format!("totp:{user_id}").into_bytes()
}

pub(crate) fn open_secret(state: &AppState, user_id: &str, sealed: &[u8]) -> ApiResult<TotpSecret> {
    let plain = state
        .keyring
        .sealer("totp")
        .open(sealed, &seal_aad(user_id))
        .map_err(|_| {
            ApiError::internal(format!("the TOTP secret of user {user_id} does not open"))
        })?;
    TotpSecret::from_bytes(plain.to_vec()).map_err(ApiError::from)
}

pub(crate) fn now_secs(state: &AppState) -> u64 {
    u64::try_from(state.now() / MICROS_PER_SECOND).unwrap_or(0)
}

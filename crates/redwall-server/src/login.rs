//! The HTTP side of signing in, shared by the password login (`api::auth`),
//! the end of every SSO login (`sso::login`) and so the console: the hub's
//! steps (throttle, second factor, MFA challenge, session) turned into
//! answers, cookies and device cookies.

use crate::accounts::UserView;
use crate::auth::device::{self, Channel, Device};
use crate::auth::session;
use crate::auth::throttle::Attempt;
use crate::clock::rfc3339;
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use redwall_hub::Who;
use redwall_policy::MICROS_PER_SECOND;
use redwall_store::User;
use serde::Serialize;

pub use redwall_hub::sign_in::AfterSecondFactor;

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

/// A 429 (audited) when `attempt` must wait; `provider` names the SSO
/// provider the login went to, if any.
pub(crate) async fn refuse_if_throttled(
    state: &AppState,
    client: &ClientInfo,
    attempt: &Attempt,
    attempted: &str,
    provider: Option<&str>,
) -> ApiResult<()> {
    let origin = client.origin();
    let who = Who::anonymous(&origin);
    Ok(state
        .hub
        .refuse_if_throttled(who, attempt, attempted, provider)
        .await?)
}

/// The second factor, throttled on the Redwall account (a device known for
/// it has its own allowance).
pub(crate) async fn second_factor_step(
    state: &AppState,
    client: &ClientInfo,
    device: Option<&Device>,
    user: &User,
    code: &str,
) -> ApiResult<()> {
    let origin = client.origin();
    let who = Who::anonymous(&origin);
    let known = device.and_then(|d| d.known_for(&user.id));
    Ok(state.hub.second_factor_step(who, known, user, code).await?)
}

/// Starts the session of a user who passed every step (`provider`: the SSO
/// provider that vouched for them, if any). The client's device cookie is
/// renewed (same device id) when it is this user's; any other client gets
/// a new one, so next time it is a known client for this account.
pub(crate) async fn finish_login(
    state: &AppState,
    client: &ClientInfo,
    device: Option<&Device>,
    user: &User,
    provider: Option<&str>,
) -> ApiResult<Response> {
    let origin = client.origin();
    let who = Who::anonymous(&origin);
    let started = state.hub.start_session(who, user, provider).await?;
    let now = state.now();
    let settings = state.hub.platform_settings().await?;
    let max_age = (started.session.expires_at - now) / MICROS_PER_SECOND;
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
    if let Some(c) = device::issue(state, Channel::Console, client.https, &user.id, device, now) {
        headers.append(header::SET_COOKIE, c);
    }
    Ok((headers, Json(body)).into_response())
}

/// The answer "now the second factor": a sealed challenge naming the user
/// (and, after SSO, what the login is to change).
pub(crate) fn challenge(
    state: &AppState,
    user: &User,
    after: Option<&AfterSecondFactor>,
) -> LoginResponse {
    let challenge = state.hub.mfa_challenge(user, after);
    LoginResponse {
        status: "mfa_required",
        mfa_token: Some(challenge.token),
        user: None,
        csrf_token: None,
        expires_at: Some(rfc3339(challenge.expires_at)),
        mfa_enrolment_required: false,
    }
}

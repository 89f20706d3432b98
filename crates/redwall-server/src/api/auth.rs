//! Logging in and out.
//!
//! Unknown user, wrong password and suspended account answer the same error
//! after the same amount of work; every failure is audited and counted by the
//! per-account and per-address throttle.

use crate::api::body::Body;
use crate::audit::Caller;
use crate::auth::device;
use crate::auth::principal::Principal;
use crate::auth::session;
use crate::error::{ApiError, ApiResult};
use crate::login::{challenge, finish_login, second_factor_step};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use redwall_hub::Who;
use redwall_policy::audit_event::AuditEvent;
use serde::Deserialize;
use serde_json::json;

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
    let device = device::console(&state, &headers, &client);
    let origin = client.origin();
    let who = Who::anonymous(&origin);
    let (user, attempt) = state
        .hub
        .password_step(who, device.as_ref(), &req.username, &req.password)
        .await?;
    if user.mfa_enabled {
        match req.totp.as_deref() {
            None => return Ok(Json(challenge(&state, &user, None)).into_response()),
            Some(code) => second_factor_step(&state, &client, device.as_ref(), &user, code).await?,
        }
    }
    state.hub.throttle.record_success(&attempt);
    finish_login(&state, &client, device.as_ref(), &user, None).await
}

pub async fn login_mfa(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    Body(req): Body<MfaStepRequest>,
) -> ApiResult<Response> {
    let (user, sso) = state.hub.challenged_user(&req.mfa_token).await?;
    let device = device::console(&state, &headers, &client);
    second_factor_step(&state, &client, device.as_ref(), &user, &req.code).await?;
    let Some(sso) = sso else {
        return finish_login(&state, &client, device.as_ref(), &user, None).await;
    };
    // Only now may the SSO login change the user (roles, local password).
    let user = crate::sso::login::apply_after_second_factor(&sso, &state, &client, user).await?;
    finish_login(&state, &client, device.as_ref(), &user, Some(&sso.provider)).await
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
    let caller = Caller::of(principal, client);
    state
        .hub
        .end_session_recorded(caller.who(), session_id, AuditEvent::Logout, details)
        .await?;
    Ok(())
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
    let caller = Caller::of(&principal, &client);
    let ended = state
        .hub
        .end_sessions_of_user(
            caller.who(),
            &principal.user_id,
            None,
            AuditEvent::LogoutEverywhere,
            json!({}),
        )
        .await?;
    Ok((
        [(header::SET_COOKIE, session::clear_cookie(client.https))],
        Json(json!({ "sessions_ended": ended })),
    )
        .into_response())
}

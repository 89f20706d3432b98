//! The caller's own account: profile, password, sessions.

use crate::api::body::{Body, IdPath};
use crate::audit::Caller;
use crate::auth::principal::{Principal, Via};
use crate::clock::rfc3339;
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, utoipa::ToSchema)]
pub struct MeView {
    pub id: String,
    pub username: String,
    pub is_admin: bool,
    pub mfa_enabled: bool,
    /// MFA is required and the user must enrol before anything else.
    pub mfa_enrolment_required: bool,
    /// "session" or "token".
    pub authenticated_by: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_scope: Option<&'static str>,
    /// For cookie sessions: the value to send as X-CSRF-Token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    /// For platform admins, while audit entries cannot be written: that
    /// security actions are being refused, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_alert: Option<String>,
}

pub async fn get_me(State(state): State<AppState>, principal: Principal) -> Json<MeView> {
    let is_admin = principal.role == redwall_policy::permission::PlatformRole::Admin;
    let service_alert = match state.hub.audit.health().fault() {
        Some(f) if is_admin => Some(format!(
            "Security actions are being refused: the audit log cannot be written because {} \
             (since {}).",
            f.cause.describe(),
            rfc3339(f.since)
        )),
        _ => None,
    };
    let (authenticated_by, token_scope, csrf_token) = match &principal.via {
        Via::Session { csrf_token, .. } => ("session", None, Some(csrf_token.clone())),
        Via::Token { scope, .. } => ("token", Some(scope.name()), None),
    };
    Json(MeView {
        id: principal.user_id,
        username: principal.username,
        is_admin,
        mfa_enabled: principal.mfa_enabled,
        mfa_enrolment_required: principal.mfa_enrolment_pending,
        authenticated_by,
        token_scope,
        csrf_token,
        service_alert,
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

pub async fn change_password(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<PasswordChange>,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = Caller::of(&principal, &client);
    let ended = state
        .hub
        .change_password(
            caller.who(),
            &principal.user_id,
            principal.session_id(),
            &req.current_password,
            &req.new_password,
        )
        .await?;
    Ok(Json(json!({ "other_sessions_ended": ended })))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: String,
    pub created_at: String,
    pub last_seen_at: String,
    pub expires_at: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// The session this request was made with.
    pub current: bool,
}

pub async fn list_sessions(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<SessionView>>> {
    let sessions = state.hub.sessions_of(&principal.user_id).await?;
    let current = principal.session_id();
    Ok(Json(
        sessions
            .into_iter()
            .map(|s| {
                let seen = state
                    .hub
                    .activity
                    .session_last_seen(&s.id)
                    .map_or(s.last_seen_at, |t| t.max(s.last_seen_at));
                SessionView {
                    current: current == Some(s.id.as_str()),
                    created_at: rfc3339(s.created_at),
                    last_seen_at: rfc3339(seen),
                    expires_at: rfc3339(s.expires_at),
                    client_ip: s.client_ip,
                    user_agent: s.user_agent,
                    id: s.id,
                }
            })
            .collect(),
    ))
}

pub async fn end_session(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .end_own_session(caller.who(), &principal.user_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

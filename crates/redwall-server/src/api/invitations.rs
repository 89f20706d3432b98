//! Invitations: Owners invite by username; the invitee accepts or declines.

use crate::api::body::{Body, IdPath, TeamItemPath};
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_hub::invitations::InvitationRequest;
use redwall_hub::HubError;
use redwall_store::Invitation;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvitationView {
    pub id: String,
    pub team_id: String,
    pub team_name: String,
    pub invitee_id: String,
    pub invitee: String,
    pub role: String,
    pub created_at: String,
    pub expires_at: String,
    pub expired: bool,
}

fn view(i: &Invitation, now: i64) -> InvitationView {
    InvitationView {
        id: i.id.clone(),
        team_id: i.team_id.clone(),
        team_name: i.team_name.clone(),
        invitee_id: i.invitee_id.clone(),
        invitee: i.invitee_name.clone(),
        role: i.role.clone(),
        created_at: rfc3339(i.created_at),
        expires_at: rfc3339(i.expires_at),
        expired: i.expires_at <= now,
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    pub username: String,
    /// "owner", "member", "viewer" or "dashboard".
    pub role: String,
    /// 1 to 30; 7 when omitted.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

pub async fn list_for_team(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<InvitationView>>> {
    let access = principal.team()?;
    let now = state.now();
    let list = state.hub.team_invitations(&access.team_id).await?;
    Ok(Json(list.iter().map(|i| view(i, now)).collect()))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewInvitation>,
) -> ApiResult<(StatusCode, Json<InvitationView>)> {
    let access = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let invitation = state
        .hub
        .invite(
            caller.who(),
            &access.team_id,
            &principal.user_id,
            InvitationRequest {
                username: req.username,
                role: req.role,
                expires_in_days: req.expires_in_days,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(view(&invitation, invitation.created_at)),
    ))
}

pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<StatusCode> {
    let access = principal.team()?;
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .revoke_invitation(caller.who(), &access.team_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_mine(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<InvitationView>>> {
    let now = state.now();
    let list = state.hub.invitations_for(&principal.user_id).await?;
    Ok(Json(list.iter().map(|i| view(i, now)).collect()))
}

pub async fn accept(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = Caller::of(&principal, &client);
    let invitation = state
        .hub
        .accept_invitation(caller.who(), &principal.user_id, &id)
        .await
        .map_err(none_for_you)?;
    Ok(Json(
        json!({ "team_id": invitation.team_id, "role": invitation.role }),
    ))
}

pub async fn decline(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .decline_invitation(caller.who(), &principal.user_id, &id)
        .await
        .map_err(none_for_you)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Someone else's, expired, used or unknown: one answer (the hub audited it).
fn none_for_you(e: HubError) -> ApiError {
    match e {
        HubError::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no open invitation with this id is addressed to you",
        ),
        e => e.into(),
    }
}

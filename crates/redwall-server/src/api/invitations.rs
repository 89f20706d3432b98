//! Invitations: Owners invite by username; the invitee accepts or declines.

use crate::api::body::{Body, IdPath, TeamItemPath};
use crate::api::teams::parse_role;
use crate::audit;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::MICROS_PER_SECOND;
use redwall_store::{Invitation, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const DEFAULT_EXPIRY_DAYS: i64 = 7;
const MAX_EXPIRY_DAYS: i64 = 30;

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
    let list = state.store.list_team_invitations(&access.team_id).await?;
    Ok(Json(list.iter().map(|i| view(i, now)).collect()))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewInvitation>,
) -> ApiResult<(StatusCode, Json<InvitationView>)> {
    let access = principal.team()?;
    let role = parse_role(&req.role)?;
    let days = req.expires_in_days.unwrap_or(DEFAULT_EXPIRY_DAYS);
    if !(1..=MAX_EXPIRY_DAYS).contains(&days) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_expiry",
            format!("expires_in_days must be between 1 and {MAX_EXPIRY_DAYS}"),
        ));
    }
    // Owners of a team are authenticated platform users who need to know
    // whether the person they invite exists; the attempt is audited either way.
    let invitee = match redwall_policy::username::check_username(&req.username) {
        Ok(()) => state.store.find_user_by_username(&req.username).await?,
        Err(_) => None,
    };
    let Some(invitee) = invitee.filter(|u| !u.suspended) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_user",
            "no active user has this username",
        ));
    };
    if state
        .store
        .get_member_role(&access.team_id, &invitee.id)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "already_member",
            "this user is already in the team",
        ));
    }
    let now = state.now();
    state.store.delete_expired_invitations(now).await?;
    let team = state
        .store
        .get_team(&access.team_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let invitation = Invitation {
        id: crate::ids::new_id(),
        team_id: access.team_id.clone(),
        team_name: team.name,
        invitee_id: invitee.id.clone(),
        invitee_name: invitee.username.clone(),
        role: role.name().to_string(),
        invited_by: Some(principal.user_id.clone()),
        created_at: now,
        expires_at: now + days * 86_400 * MICROS_PER_SECOND,
    };
    match state.store.create_invitation(&invitation).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "already_invited",
                "this user already has an open invitation to the team; revoke it to send a new one",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    audit::record_in_team(
        &state,
        Some(&access.team_id),
        Some(&principal.actor()),
        &client,
        AuditEvent::MemberInvited,
        Outcome::Success,
        Some(format!("user:{}", invitee.id)),
        json!({ "invitation": invitation.id, "username": invitee.username, "role": invitation.role, "expires_at": rfc3339(invitation.expires_at) }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view(&invitation, now))))
}

pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<StatusCode> {
    let access = principal.team()?;
    let Some(invitation) = state.store.revoke_invitation(&access.team_id, &id).await? else {
        return Err(ApiError::not_found());
    };
    audit::record_in_team(
        &state,
        Some(&access.team_id),
        Some(&principal.actor()),
        &client,
        AuditEvent::InvitationRevoked,
        Outcome::Success,
        Some(format!("user:{}", invitation.invitee_id)),
        json!({ "invitation": invitation.id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_mine(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<InvitationView>>> {
    let now = state.now();
    let list = state
        .store
        .list_user_invitations(&principal.user_id, now)
        .await?;
    Ok(Json(list.iter().map(|i| view(i, now)).collect()))
}

pub async fn accept(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<Json<serde_json::Value>> {
    let now = state.now();
    let accepted = match state
        .store
        .accept_invitation(&principal.user_id, &id, now)
        .await
    {
        Ok(a) => a,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "already_member",
                "you are already in this team",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let Some(invitation) = accepted else {
        return Err(refused(&state, &principal, &client, &id, "accept").await);
    };
    state.forget_membership(&invitation.team_id, &principal.user_id);
    audit::record_in_team(
        &state,
        Some(&invitation.team_id),
        Some(&principal.actor()),
        &client,
        AuditEvent::InvitationAccepted,
        Outcome::Success,
        Some(format!("user:{}", principal.user_id)),
        json!({ "invitation": invitation.id, "role": invitation.role }),
    )
    .await?;
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
    let Some(invitation) = state
        .store
        .decline_invitation(&principal.user_id, &id)
        .await?
    else {
        return Err(refused(&state, &principal, &client, &id, "decline").await);
    };
    audit::record_in_team(
        &state,
        Some(&invitation.team_id),
        Some(&principal.actor()),
        &client,
        AuditEvent::InvitationDeclined,
        Outcome::Success,
        Some(format!("user:{}", principal.user_id)),
        json!({ "invitation": invitation.id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Someone else's, expired, used or unknown: the same answer, and audited,
/// since it may be an attempt to join a team uninvited.
async fn refused(
    state: &AppState,
    principal: &Principal,
    client: &ClientInfo,
    id: &str,
    action: &str,
) -> ApiError {
    let recorded = audit::record(
        state,
        Some(&principal.actor()),
        client,
        AuditEvent::AccessDenied,
        Outcome::Denied,
        Some(format!("invitation:{id}")),
        json!({ "action": action, "reason": "no open invitation for this user" }),
    )
    .await;
    match recorded {
        Ok(()) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no open invitation with this id is addressed to you",
        ),
        Err(e) => e,
    }
}

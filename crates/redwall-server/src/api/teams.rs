//! Teams: creation, settings, deletion, members and roles.

use crate::api::body::{Body, TeamItemPath};
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::permission::{team_permissions, TeamRole};
use redwall_policy::team_rules::team_role;
use redwall_store::Team;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct TeamView {
    pub id: String,
    pub name: String,
    pub require_mfa: bool,
    /// CIDR ranges allowed to reach the team's instances; empty means any.
    pub allowed_cidrs: Vec<String>,
    pub created_at: String,
    /// The caller's role ("owner", "member", "viewer", "dashboard"); absent
    /// for a platform admin acting through the admin override.
    pub my_role: Option<String>,
    /// What the caller may do in this team.
    pub my_permissions: Vec<String>,
}

fn view(team: &Team, role: Option<TeamRole>) -> TeamView {
    TeamView {
        id: team.id.clone(),
        name: team.name.clone(),
        require_mfa: team.require_mfa,
        allowed_cidrs: team.allowed_cidrs.clone(),
        created_at: rfc3339(team.created_at),
        my_role: role.map(|r| r.name().to_string()),
        my_permissions: role
            .map(|r| team_permissions(r).map(|p| p.name().to_string()).collect())
            .unwrap_or_default(),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    pub name: String,
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewTeam>,
) -> ApiResult<(StatusCode, Json<TeamView>)> {
    let caller = Caller::of(&principal, &client);
    let team = state
        .hub
        .create_team(caller.who(), &principal.user_id, &req.name)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(view(&team, Some(TeamRole::Owner))),
    ))
}

pub async fn list_mine(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<TeamView>>> {
    let teams = state.hub.teams_of_user(&principal.user_id).await?;
    Ok(Json(
        teams
            .iter()
            .map(|(t, role)| view(t, TeamRole::parse(role)))
            .collect(),
    ))
}

pub async fn get(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<TeamView>> {
    let access = principal.team()?;
    let team = state.hub.team(&access.team_id).await?;
    Ok(Json(view(&team, access.role)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamChange {
    pub name: Option<String>,
    pub require_mfa: Option<bool>,
    /// CIDR ranges (e.g. "10.0.0.0/8", "2001:db8::/32") allowed to reach the
    /// team's instances; an empty list allows any address.
    pub allowed_cidrs: Option<Vec<String>>,
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(change): Body<TeamChange>,
) -> ApiResult<Json<TeamView>> {
    let access = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let team = state
        .hub
        .update_team(
            caller.who(),
            principal.mfa_enabled,
            &access.team_id,
            redwall_hub::teams::TeamChange {
                name: change.name,
                require_mfa: change.require_mfa,
                allowed_cidrs: change.allowed_cidrs,
            },
        )
        .await?;
    Ok(Json(view(&team, access.role)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteTeam {
    /// The team's name, repeated, to confirm.
    pub confirm_name: String,
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<DeleteTeam>,
) -> ApiResult<StatusCode> {
    let access = principal.team()?;
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .delete_team(caller.who(), &access.team_id, &req.confirm_name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberView {
    pub user_id: String,
    pub username: String,
    pub role: String,
    pub joined_at: String,
}

pub async fn members(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<MemberView>>> {
    let access = principal.team()?;
    let members = state.hub.team_members(&access.team_id).await?;
    Ok(Json(
        members
            .into_iter()
            .map(|m| MemberView {
                user_id: m.user_id,
                username: m.username,
                role: m.role,
                joined_at: rfc3339(m.joined_at),
            })
            .collect(),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    /// "owner", "member", "viewer" or "dashboard".
    pub role: String,
}

pub async fn change_role(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(user_id): TeamItemPath,
    Body(req): Body<RoleChange>,
) -> ApiResult<Json<serde_json::Value>> {
    let access = principal.team()?;
    let role = team_role(&req.role)?;
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .change_member_role(caller.who(), &access.team_id, &user_id, role)
        .await?;
    Ok(Json(json!({ "user_id": user_id, "role": role.name() })))
}

pub async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(user_id): TeamItemPath,
) -> ApiResult<StatusCode> {
    end_membership(
        &state,
        &principal,
        &client,
        &user_id,
        AuditEvent::MemberRemoved,
    )
    .await
}

pub async fn leave(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
) -> ApiResult<StatusCode> {
    let me = principal.user_id.clone();
    end_membership(&state, &principal, &client, &me, AuditEvent::MemberLeft).await
}

/// Removes `user_id` from the principal's team (never its last Owner); the
/// membership is forgotten here at once, so access ends with this request.
async fn end_membership(
    state: &AppState,
    principal: &Principal,
    client: &ClientInfo,
    user_id: &str,
    event: AuditEvent,
) -> ApiResult<StatusCode> {
    let access = principal.team()?;
    let caller = Caller::of(principal, client);
    state
        .hub
        .end_membership(caller.who(), &access.team_id, user_id, event)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

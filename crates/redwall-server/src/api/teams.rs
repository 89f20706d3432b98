//! Teams: creation, settings, deletion, members and roles.

use crate::api::body::{Body, TeamItemPath};
use crate::audit::{self, Actor};
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ipnet::IpNet;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::permission::{team_permissions, TeamRole};
use redwall_store::{MemberChange, Team};
use serde::{Deserialize, Serialize};
use serde_json::json;

const MAX_TEAMS_PER_USER: usize = 100;
const MAX_CIDRS: usize = 64;

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

fn validate_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "the team name must be 1 to 100 printable characters",
        ));
    }
    Ok(name.to_string())
}

pub fn parse_role(role: &str) -> ApiResult<TeamRole> {
    TeamRole::parse(role).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_role",
            "the role must be one of owner, member, viewer, dashboard",
        )
    })
}

async fn existing(state: &AppState, team_id: &str) -> ApiResult<Team> {
    state
        .store
        .get_team(team_id)
        .await?
        .ok_or_else(ApiError::not_found)
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
    let name = validate_name(&req.name)?;
    if state
        .store
        .list_teams_of_user(&principal.user_id)
        .await?
        .len()
        >= MAX_TEAMS_PER_USER
    {
        return Err(ApiError::conflict(
            "too_many_teams",
            format!("a user may belong to at most {MAX_TEAMS_PER_USER} teams"),
        ));
    }
    let id = crate::ids::new_id();
    let team = state
        .store
        .create_team(&id, &name, &principal.user_id, state.now())
        .await?;
    audit::record_in_team(
        &state,
        Some(&team.id),
        Some(&Actor::of(&principal)),
        &client,
        AuditEvent::TeamCreated,
        Outcome::Success,
        Some(format!("team:{}", team.id)),
        json!({ "name": team.name }),
    )
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
    let teams = state.store.list_teams_of_user(&principal.user_id).await?;
    Ok(Json(
        teams
            .iter()
            .map(|(t, role)| view(t, TeamRole::parse(role)))
            .collect(),
    ))
}

pub async fn get(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<TeamView>> {
    let access = principal.team()?;
    let team = existing(&state, &access.team_id).await?;
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
    let before = existing(&state, &access.team_id).await?;
    let name = change.name.as_deref().map(validate_name).transpose()?;
    let cidrs = match &change.allowed_cidrs {
        Some(list) => Some(normalize_cidrs(list)?),
        None => None,
    };
    let now = state.now();
    if let Some(name) = &name {
        state.store.rename_team(&before.id, name, now).await?;
    }
    let require_mfa = change.require_mfa.unwrap_or(before.require_mfa);
    if require_mfa && !before.require_mfa && !principal.mfa_enabled {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "enrol_mfa_first",
            "enrol in MFA yourself before requiring it for the team",
        ));
    }
    let allowed = cidrs
        .clone()
        .unwrap_or_else(|| before.allowed_cidrs.clone());
    state
        .store
        .set_team_settings(&before.id, require_mfa, &allowed, now)
        .await?;
    state.forget_team(&before.id);
    let after = existing(&state, &before.id).await?;
    let event = if name.is_some() && change.require_mfa.is_none() && cidrs.is_none() {
        AuditEvent::TeamRenamed
    } else {
        AuditEvent::TeamSettingsChanged
    };
    audit::record_in_team(
        &state,
        Some(&before.id),
        Some(&Actor::of(&principal)),
        &client,
        event,
        Outcome::Success,
        Some(format!("team:{}", before.id)),
        json!({
            "before": {"name": before.name, "require_mfa": before.require_mfa, "allowed_cidrs": before.allowed_cidrs},
            "after": {"name": after.name, "require_mfa": after.require_mfa, "allowed_cidrs": after.allowed_cidrs},
        }),
    )
    .await?;
    Ok(Json(view(&after, access.role)))
}

fn normalize_cidrs(list: &[String]) -> ApiResult<Vec<String>> {
    if list.len() > MAX_CIDRS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_cidr",
            format!("at most {MAX_CIDRS} ranges"),
        ));
    }
    list.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|n| n.trunc().to_string())
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_cidr",
                        format!(
                            "{:?} is not an address or CIDR range",
                            s.chars().take(60).collect::<String>()
                        ),
                    )
                })
        })
        .collect()
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
    let team = existing(&state, &access.team_id).await?;
    if req.confirm_name != team.name {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "confirmation_mismatch",
            "repeat the team's exact name in confirm_name to delete it",
        ));
    }
    // Instances hold flows and credentials: they are deleted one by one,
    // deliberately, before the team can go. The audit entries stay.
    if state.store.count_team_instances(&team.id).await? > 0 {
        return Err(ApiError::conflict(
            "team_has_instances",
            "delete the team's instances first",
        ));
    }
    state.store.delete_team(&team.id).await?;
    state.forget_team(&team.id);
    audit::record_in_team(
        &state,
        Some(&team.id),
        Some(&Actor::of(&principal)),
        &client,
        AuditEvent::TeamDeleted,
        Outcome::Success,
        Some(format!("team:{}", team.id)),
        json!({ "name": team.name }),
    )
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
    let members = state.store.list_members(&access.team_id).await?;
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
    let role = parse_role(&req.role)?;
    let before = state
        .store
        .get_member_role(&access.team_id, &user_id)
        .await?;
    match state
        .store
        .set_member_role(&access.team_id, &user_id, role.name())
        .await?
    {
        MemberChange::NotAMember => return Err(ApiError::not_found()),
        MemberChange::LastOwner => return Err(last_owner()),
        MemberChange::Done => {}
    }
    state.forget_membership(&access.team_id, &user_id);
    audit::record_in_team(
        &state,
        Some(&access.team_id),
        Some(&Actor::of(&principal)),
        &client,
        AuditEvent::MemberRoleChanged,
        Outcome::Success,
        Some(format!("user:{user_id}")),
        json!({ "from": before, "to": role.name() }),
    )
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
    match state.store.remove_member(&access.team_id, user_id).await? {
        MemberChange::NotAMember => return Err(ApiError::not_found()),
        MemberChange::LastOwner => return Err(last_owner()),
        MemberChange::Done => {}
    }
    state.forget_membership(&access.team_id, user_id);
    audit::record_in_team(
        state,
        Some(&access.team_id),
        Some(&Actor::of(principal)),
        client,
        event,
        Outcome::Success,
        Some(format!("user:{user_id}")),
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn last_owner() -> ApiError {
    ApiError::conflict(
        "last_owner",
        "a team must keep at least one Owner: make someone else Owner first",
    )
}

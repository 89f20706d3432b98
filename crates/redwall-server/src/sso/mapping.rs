//! Applies the group mapping's outcome to a user: team memberships and the
//! platform admin flag, audited, never leaving a team without an Owner or
//! the platform without an admin.

use crate::audit::{self, Actor};
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::sso_mapping::{evaluate, MappingOutcome};
use redwall_store::{MembershipWrite, User};
use serde_json::json;

/// A rule's team: an id, or a name that exactly one team has.
async fn resolve_team(state: &AppState, team: &str) -> ApiResult<Option<String>> {
    if crate::ids::looks_like_id(team) && state.store.get_team(team).await?.is_some() {
        return Ok(Some(team.to_string()));
    }
    let found = state.store.find_teams_by_name(team).await?;
    Ok(match found.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    })
}

pub async fn apply(
    state: &AppState,
    client: &ClientInfo,
    user: &User,
    provider: &str,
    groups: &[String],
) -> ApiResult<MappingOutcome> {
    let outcome = evaluate(&state.config.sso.mappings, provider, groups);
    let now = state.now();
    let mut changes = Vec::new();
    for (team_ref, role) in &outcome.teams {
        let Some(team_id) = resolve_team(state, team_ref).await? else {
            tracing::warn!(team = %team_ref, "a mapping rule names no single team");
            changes.push(json!({ "team": team_ref, "result": "no_such_team" }));
            continue;
        };
        let written = state
            .store
            .write_membership(&team_id, &user.id, role.map(|r| r.name()), now)
            .await?;
        if written != MembershipWrite::Unchanged {
            state.forget_membership(&team_id, &user.id);
            let result = match written {
                MembershipWrite::Added => "added",
                MembershipWrite::Changed => "changed",
                MembershipWrite::Removed => "removed",
                MembershipWrite::LastOwner => "kept_last_owner",
                MembershipWrite::Unchanged => "unchanged",
            };
            let entry =
                json!({ "team_id": team_id, "role": role.map(|r| r.name()), "result": result });
            audit::record_in_team(
                state,
                Some(&team_id),
                Some(&Actor::user(&user.id, &user.username)),
                client,
                AuditEvent::SsoRolesMapped,
                Outcome::Success,
                Some(format!("user:{}", user.id)),
                json!({ "provider": provider, "change": entry }),
            )
            .await?;
            changes.push(entry);
        }
    }
    if let Some(admin) = outcome.admin {
        let last_admin = !admin && user.is_admin && state.store.count_admins().await? <= 1;
        if admin != user.is_admin && !last_admin {
            state.store.set_admin(&user.id, admin, now).await?;
            state.forget_user(&user.id);
            audit::record(
                state,
                Some(&Actor::user(&user.id, &user.username)),
                client,
                AuditEvent::UserAdminChanged,
                Outcome::Success,
                Some(format!("user:{}", user.id)),
                json!({ "is_admin": admin, "by": "sso_mapping", "provider": provider }),
            )
            .await?;
        }
    }
    Ok(outcome)
}

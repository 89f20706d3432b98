//! User administration (platform admins).

pub use crate::accounts::UserView;
use crate::accounts::{self, NewAccount};
use crate::api::body::{Body, IdPath, Query};
use crate::audit;
use crate::auth::principal::Principal;
use crate::auth::session;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_store::User;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<UserList>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let users = state.store.list_users(q.after.as_deref(), limit).await?;
    let next = (users.len() as i64 == limit)
        .then(|| users.last().map(|u| u.username.to_lowercase()))
        .flatten();
    Ok(Json(UserList {
        users: users.iter().map(UserView::from).collect(),
        next,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub is_admin: bool,
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewUserRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let user = accounts::create_user(
        &state,
        Some(&principal.actor()),
        &client,
        NewAccount {
            username: &req.username,
            password: &req.password,
            is_admin: req.is_admin,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

async fn existing(state: &AppState, id: &str) -> ApiResult<User> {
    state
        .store
        .get_user(id)
        .await?
        .ok_or_else(ApiError::not_found)
}

pub async fn get(State(state): State<AppState>, IdPath(id): IdPath) -> ApiResult<Json<UserView>> {
    Ok(Json(UserView::from(&existing(&state, &id).await?)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub is_admin: bool,
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
    Body(change): Body<UserChange>,
) -> ApiResult<Json<UserView>> {
    let target = existing(&state, &id).await?;
    if target.is_admin && !change.is_admin {
        refuse_self_or_last_admin(&state, &principal, &target).await?;
    }
    if target.is_admin != change.is_admin {
        state
            .store
            .set_admin(&id, change.is_admin, state.now())
            .await?;
        state.forget_user(&id);
        audit::record(
            &state,
            Some(&principal.actor()),
            &client,
            AuditEvent::UserAdminChanged,
            Outcome::Success,
            Some(format!("user:{id}")),
            json!({ "username": target.username, "is_admin": change.is_admin }),
        )
        .await?;
    }
    Ok(Json(UserView::from(&existing(&state, &id).await?)))
}

/// Admins cannot lock themselves out, and the last admin cannot go.
async fn refuse_self_or_last_admin(
    state: &AppState,
    principal: &Principal,
    target: &User,
) -> ApiResult<()> {
    if target.id == principal.user_id {
        return Err(ApiError::conflict(
            "cannot_target_self",
            "you cannot suspend, delete or demote your own account",
        ));
    }
    if target.is_admin && !target.suspended {
        let mut active_admins = 0;
        let mut after: Option<String> = None;
        loop {
            let page = state.store.list_users(after.as_deref(), 500).await?;
            active_admins += page.iter().filter(|u| u.is_admin && !u.suspended).count();
            match page.last() {
                Some(last) if page.len() == 500 => after = Some(last.username.to_lowercase()),
                _ => break,
            }
        }
        if active_admins <= 1 {
            return Err(ApiError::conflict(
                "last_admin",
                "this is the last active platform admin",
            ));
        }
    }
    Ok(())
}

pub async fn suspend(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<Json<UserView>> {
    set_suspended(&state, &principal, &client, &id, true).await
}

pub async fn reinstate(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<Json<UserView>> {
    set_suspended(&state, &principal, &client, &id, false).await
}

/// Suspending also ends the user's sessions and tokens (in the store's
/// transaction) and forgets them here at once; reinstating restores neither.
async fn set_suspended(
    state: &AppState,
    principal: &Principal,
    client: &ClientInfo,
    id: &str,
    suspended: bool,
) -> ApiResult<Json<UserView>> {
    let target = existing(state, id).await?;
    if suspended {
        refuse_self_or_last_admin(state, principal, &target).await?;
    }
    state
        .store
        .set_suspended(id, suspended, state.now())
        .await?;
    state.forget_user(id);
    let event = if suspended {
        AuditEvent::UserSuspended
    } else {
        AuditEvent::UserReinstated
    };
    audit::record(
        state,
        Some(&principal.actor()),
        client,
        event,
        Outcome::Success,
        Some(format!("user:{id}")),
        json!({ "username": target.username }),
    )
    .await?;
    Ok(Json(UserView::from(&existing(state, id).await?)))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    let target = existing(&state, &id).await?;
    refuse_self_or_last_admin(&state, &principal, &target).await?;
    let orphaned = state.store.teams_solely_owned_by(&id).await?;
    if !orphaned.is_empty() {
        return Err(ApiError::conflict(
            "last_owner",
            format!(
                "this user is the only Owner of {} team(s); give each another Owner first: {}",
                orphaned.len(),
                orphaned.join(", ")
            ),
        ));
    }
    session::end_all_of_user(&state, &id, None).await?;
    state.store.delete_user(&id).await?;
    state.forget_user(&id);
    audit::record(
        &state,
        Some(&principal.actor()),
        &client,
        AuditEvent::UserDeleted,
        Outcome::Success,
        Some(format!("user:{id}")),
        json!({ "username": target.username }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn reset_mfa(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    let target = existing(&state, &id).await?;
    state.store.disable_mfa(&id, state.now()).await?;
    // Sessions that passed MFA with the old device end too.
    session::end_all_of_user(&state, &id, None).await?;
    state.forget_user(&id);
    audit::record(
        &state,
        Some(&principal.actor()),
        &client,
        AuditEvent::MfaReset,
        Outcome::Success,
        Some(format!("user:{id}")),
        json!({ "username": target.username }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

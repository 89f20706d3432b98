//! User administration (platform admins).

pub use crate::accounts::UserView;
use crate::api::body::{Body, IdPath, Query};
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_hub::passwords::NewAccount;
use redwall_store::User;
use serde::{Deserialize, Serialize};

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
    let users = state.hub.users_page(q.after.as_deref(), limit).await?;
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
    let caller = Caller::of(&principal, &client);
    let user = state
        .hub
        .create_user(
            caller.who(),
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
    Ok(state.hub.stored_user(id).await?)
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
    let caller = Caller::of(&principal, &client);
    let user = state
        .hub
        .set_admin(caller.who(), &id, change.is_admin)
        .await?;
    Ok(Json(UserView::from(&user)))
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
    let caller = Caller::of(principal, client);
    let user = state.hub.set_suspended(caller.who(), id, suspended).await?;
    Ok(Json(UserView::from(&user)))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    let caller = Caller::of(&principal, &client);
    state.hub.delete_user(caller.who(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn reset_mfa(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    let caller = Caller::of(&principal, &client);
    state.hub.reset_mfa(caller.who(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

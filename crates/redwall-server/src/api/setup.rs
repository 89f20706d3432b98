//! First run: the one-time setup token printed at start creates the first
//! platform admin. There is no default password.

use crate::api::body::Body;
use crate::api::users::UserView;
use crate::audit::{self, Actor};
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_crypto::token::{self, SETUP_PREFIX};
use redwall_crypto::Secret;
use redwall_hub::passwords::{valid_new_password, valid_username};
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_store::NewUser;
use serde::Deserialize;
use serde_json::json;

pub const SETUP_TOKEN_LIFETIME_SECS: i64 = 3600;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    pub setup_token: String,
    pub username: String,
    pub password: String,
}

/// On first start with no users: a fresh token, valid one hour, replacing
/// any earlier one. Returns `None` when users exist.
pub async fn issue_token_if_needed(state: &AppState) -> anyhow::Result<Option<Secret>> {
    if state.store.count_users().await? > 0 {
        return Ok(None);
    }
    let t = token::new_token(SETUP_PREFIX);
    let expires = state.now() + SETUP_TOKEN_LIFETIME_SECS * redwall_policy::MICROS_PER_SECOND;
    state
        .store
        .replace_setup_token(&token::token_digest(t.expose()), expires)
        .await?;
    Ok(Some(t))
}

pub async fn complete(
    State(state): State<AppState>,
    client: ClientInfo,
    Body(req): Body<SetupRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let now = state.now();
    if let Err(wait) = state.hub.throttle.check_client(client.ip, now) {
        return Err(ApiError::throttled(wait));
    }
    let rejected = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_setup_token",
            "the setup token is invalid, expired or already used",
        )
    };
    let Some(valid) = token::parse_token(SETUP_PREFIX, req.setup_token.trim()) else {
        return Err(reject(&state, &client, now, rejected()).await);
    };
    valid_username(&req.username)?;
    valid_new_password(&req.password, &req.username)?;
    let hash = state.hub.hash_password(&req.password).await?;
    let admin = NewUser {
        id: crate::ids::new_id(),
        username: req.username.clone(),
        password_hash: Some(hash),
        is_admin: true,
        now,
    };
    let Some(user) = state
        .store
        .consume_setup_token_and_create_admin(&token::token_digest(valid), now, admin)
        .await?
    else {
        return Err(reject(&state, &client, now, rejected()).await);
    };
    audit::record(
        &state,
        Some(&Actor::user(&user.id, &user.username)),
        &client,
        AuditEvent::SetupCompleted,
        Outcome::Success,
        Some(format!("user:{}", user.id)),
        json!({ "username": user.username }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

async fn reject(state: &AppState, client: &ClientInfo, now: i64, error: ApiError) -> ApiError {
    state.hub.throttle.record_client_failure(client.ip, now);
    match audit::record(
        state,
        None,
        client,
        AuditEvent::SetupTokenRejected,
        Outcome::Failure,
        None,
        json!({}),
    )
    .await
    {
        Ok(()) => error,
        Err(e) => e,
    }
}

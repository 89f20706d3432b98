//! Personal access tokens: shown once, stored as SHA-256, revocable.

use crate::api::body::{Body, IdPath};
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_hub::tokens::TokenRequest;
use redwall_policy::access::TokenScope;
use redwall_store::ApiToken;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    /// "read" or "full".
    #[schema(value_type = String)]
    pub scope: TokenScope,
    /// Days until the token expires (1 to 366); omit for no expiry.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
    /// Limit the token to one of your teams.
    #[serde(default)]
    pub team_id: Option<String>,
    /// Limit the token to these permissions (names from /api/v1/permissions).
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// The first characters, to recognise the token; never the token itself.
    pub prefix: String,
    pub scope: String,
    pub team_id: Option<String>,
    pub permissions: Option<Vec<String>>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The token itself. It is shown only in this answer.
    pub token: String,
    #[serde(flatten)]
    pub details: TokenView,
}

fn view(t: &ApiToken, last_used: Option<i64>) -> TokenView {
    TokenView {
        id: t.id.clone(),
        name: t.name.clone(),
        prefix: t.display_prefix.clone(),
        scope: t.scope.clone(),
        team_id: t.team_id.clone(),
        permissions: t
            .permissions
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok()),
        created_at: rfc3339(t.created_at),
        expires_at: t.expires_at.map(rfc3339),
        last_used_at: last_used.or(t.last_used_at).map(rfc3339),
    }
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<TokenView>>> {
    let tokens = state.hub.tokens_of(&principal.user_id).await?;
    Ok(Json(tokens.iter().map(|t| view(t, None)).collect()))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let caller = Caller::of(&principal, &client);
    let (secret, record) = state
        .hub
        .create_token(
            caller.who(),
            &principal.user_id,
            TokenRequest {
                name: req.name,
                scope: req.scope,
                expires_in_days: req.expires_in_days,
                team_id: req.team_id,
                permissions: req.permissions,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: secret.expose().to_string(),
            details: view(&record, None),
        }),
    ))
}

pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .revoke_token(caller.who(), &principal.user_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

//! Personal access tokens: shown once, stored as SHA-256, revocable.

use crate::api::body::{Body, IdPath};
use crate::audit;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_crypto::token::{self, PERSONAL_ACCESS_PREFIX};
use redwall_policy::access::TokenScope;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::permission::{Permission, Scope};
use redwall_policy::MICROS_PER_SECOND;
use redwall_store::ApiToken;
use serde::{Deserialize, Serialize};
use serde_json::json;

const MAX_TOKENS_PER_USER: usize = 100;
const MAX_EXPIRY_DAYS: i64 = 366;

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
    let tokens = state.store.list_api_tokens(&principal.user_id).await?;
    Ok(Json(tokens.iter().map(|t| view(t, None)).collect()))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "the token name must be 1 to 100 printable characters",
        ));
    }
    if let Some(days) = req.expires_in_days {
        if !(1..=MAX_EXPIRY_DAYS).contains(&days) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_expiry",
                format!("expires_in_days must be between 1 and {MAX_EXPIRY_DAYS}"),
            ));
        }
    }
    let (team_id, permissions) = validate_limits(&state, &principal, &req).await?;
    if state.store.list_api_tokens(&principal.user_id).await?.len() >= MAX_TOKENS_PER_USER {
        return Err(ApiError::conflict(
            "too_many_tokens",
            format!("a user may hold at most {MAX_TOKENS_PER_USER} tokens; revoke some first"),
        ));
    }
    let now = state.now();
    let secret = token::new_token(PERSONAL_ACCESS_PREFIX);
    let record = ApiToken {
        id: crate::ids::new_id(),
        user_id: principal.user_id.clone(),
        name: name.to_string(),
        token_digest: token::token_digest(secret.expose()).to_vec(),
        display_prefix: token::display_prefix(secret.expose()),
        scope: req.scope.name().to_string(),
        team_id,
        permissions,
        created_at: now,
        expires_at: req
            .expires_in_days
            .map(|d| now + d * 86_400 * MICROS_PER_SECOND),
        last_used_at: None,
    };
    state.store.create_api_token(&record).await?;
    audit::record(
        &state,
        Some(&principal.actor()),
        &client,
        AuditEvent::TokenCreated,
        Outcome::Success,
        Some(format!("token:{}", record.id)),
        json!({ "name": record.name, "scope": record.scope, "prefix": record.display_prefix, "team_id": record.team_id, "permissions": record.permissions }),
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

/// A team limit must name one of the caller's teams; a permission limit must
/// name known permissions, and with a team limit only team permissions (and
/// account:read, so the token can say whose it is). The limits only narrow:
/// at each use the caller's current role still decides.
async fn validate_limits(
    state: &AppState,
    principal: &Principal,
    req: &NewToken,
) -> ApiResult<(Option<String>, Option<String>)> {
    let invalid = |code: &'static str, message: String| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    };
    if let Some(team) = &req.team_id {
        let member = crate::ids::looks_like_id(team)
            && state
                .store
                .get_member_role(team, &principal.user_id)
                .await?
                .is_some();
        if !member {
            return Err(invalid(
                "invalid_team",
                "you are not a member of this team".into(),
            ));
        }
    }
    let permissions = match &req.permissions {
        None => None,
        Some(names) => {
            if names.is_empty() || names.len() > 64 {
                return Err(invalid(
                    "invalid_permissions",
                    "list 1 to 64 permissions".into(),
                ));
            }
            let mut list = Vec::new();
            for name in names {
                let Some(p) = Permission::from_name(name) else {
                    return Err(invalid(
                        "invalid_permissions",
                        format!(
                            "unknown permission {:?}",
                            name.chars().take(60).collect::<String>()
                        ),
                    ));
                };
                if req.team_id.is_some() && p.scope() != Scope::Team && p != Permission::AccountRead
                {
                    return Err(invalid(
                        "invalid_permissions",
                        format!("{} is not a team permission", p.name()),
                    ));
                }
                list.push(p.name());
            }
            list.sort_unstable();
            list.dedup();
            Some(serde_json::to_string(&list).map_err(ApiError::internal)?)
        }
    };
    Ok((req.team_id.clone(), permissions))
}

pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    if !state
        .store
        .revoke_api_token(&principal.user_id, &id)
        .await?
    {
        return Err(ApiError::not_found());
    }
    state.forget_token(&id);
    audit::record(
        &state,
        Some(&principal.actor()),
        &client,
        AuditEvent::TokenRevoked,
        Outcome::Success,
        Some(format!("token:{id}")),
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

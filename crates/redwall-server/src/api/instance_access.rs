//! Who may reach an instance's own endpoints: the ordered route rules, the
//! "test a request" call, and the instance's API keys.

use crate::api::body::Body;
use crate::api::instances::{record, team_instance, InstancePath};
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::instances::model::{check_rules, rules_from_json};
use crate::net::client::ClientInfo;
use crate::proxy::credentials::{check_api_key, KeyCheck};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_crypto::token::{self, INSTANCE_KEY_PREFIX};
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::route_policy::{
    decide, is_clean_path, key_allows_path, match_rule, Presented, RouteDecision, RouteRule,
};
use redwall_policy::MICROS_PER_SECOND;
use redwall_store::InstanceApiKey;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::IpAddr;

const MAX_KEYS: usize = 100;
const MAX_KEY_DAYS: i64 = 3650;

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    /// Matches this path and everything below it; case-insensitive.
    pub path_prefix: String,
    /// Upper-case HTTP methods; empty or absent means any (GET covers HEAD).
    #[serde(default)]
    pub methods: Vec<String>,
    /// {"type":"public"}, {"type":"session","min_role":"dashboard"},
    /// {"type":"api_key"} or {"type":"basic","min_role":"viewer"}.
    #[schema(value_type = Object)]
    pub policy: serde_json::Value,
    /// Client address ranges (CIDR); empty means any (the team's ranges still apply).
    #[serde(default)]
    pub client_ranges: Vec<String>,
}

pub async fn get_routes(
    State(state): State<AppState>,
    principal: Principal,
    path: InstancePath,
) -> ApiResult<Json<serde_json::Value>> {
    let i = team_instance(&state, &principal, &path).await?;
    Ok(Json(
        serde_json::to_value(rules_from_json(&i.routes)).map_err(ApiError::internal)?,
    ))
}

fn parse_rules(value: serde_json::Value) -> ApiResult<Vec<RouteRule>> {
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_rules",
            format!("the rules do not match the schema: {e}"),
        )
    })
}

/// Replaces the ordered rule list (first match wins; no match is denied).
pub async fn put_routes(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    Body(docs): Body<Vec<RuleDoc>>,
) -> ApiResult<Json<serde_json::Value>> {
    let i = team_instance(&state, &principal, &path).await?;
    let value = serde_json::to_value(&docs).map_err(ApiError::internal)?;
    let rules = parse_rules(value)?;
    check_rules(&rules)?;
    let json = serde_json::to_string(&rules).map_err(ApiError::internal)?;
    state
        .store
        .set_instance_routes(&i.id, &json, state.now())
        .await?;
    state.forget_instance(&i.name);
    let stored = serde_json::to_value(&rules).map_err(ApiError::internal)?;
    record(
        &state,
        &principal,
        &client,
        &i,
        AuditEvent::InstanceRoutesChanged,
        json!({ "before": rules_from_json(&i.routes), "after": stored }),
    )
    .await?;
    Ok(Json(stored))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    pub method: String,
    pub path: String,
    /// The client address to judge (default 127.0.0.1).
    pub client_ip: Option<String>,
    /// The credential to assume: none, session, basic (with `role`; omit the
    /// role for a non-member) or api_key (with `api_key`, checked for real).
    pub credential: Option<String>,
    pub role: Option<String>,
    pub api_key: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TestResult {
    /// allow, no_rule, address_refused, credential_missing, credential_invalid or forbidden.
    #[schema(value_type = String)]
    pub decision: RouteDecision,
    /// The index of the rule that matched, if any.
    pub matched_rule: Option<usize>,
    #[schema(value_type = Option<Object>)]
    pub rule: Option<serde_json::Value>,
}

pub async fn test_request(
    State(state): State<AppState>,
    principal: Principal,
    path: InstancePath,
    Body(req): Body<TestRequest>,
) -> ApiResult<Json<TestResult>> {
    let i = team_instance(&state, &principal, &path).await?;
    let invalid =
        |code, msg: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg.to_string());
    if !is_clean_path(&req.path) {
        return Err(invalid(
            "invalid_path",
            "the path must start with '/' and hold no dot segments, '//', encoded '/', '\\' or '.'",
        ));
    }
    let ip: IpAddr = match &req.client_ip {
        Some(s) => s
            .parse()
            .map_err(|_| invalid("invalid_client_ip", "client_ip is not an IP address"))?,
        None => IpAddr::from([127, 0, 0, 1]),
    };
    let role = match &req.role {
        Some(r) => Some(crate::api::teams::parse_role(r)?),
        None => None,
    };
    let method = req.method.to_ascii_uppercase();
    let presented = match req.credential.as_deref().unwrap_or("none") {
        "none" => Presented::Nothing,
        "session" => Presented::Session(role),
        "basic" => Presented::Basic(Some(role)),
        "api_key" => {
            let key = req.api_key.as_deref().unwrap_or("");
            match check_api_key(&state, &i.id, key).await? {
                KeyCheck::Valid { path_prefix, .. } => Presented::ApiKey {
                    valid: true,
                    path_allowed: key_allows_path(path_prefix.as_deref(), &req.path),
                },
                KeyCheck::Invalid => Presented::ApiKey {
                    valid: false,
                    path_allowed: false,
                },
            }
        }
        _ => {
            return Err(invalid(
                "invalid_credential",
                "credential is none, session, basic or api_key",
            ))
        }
    };
    let team = state
        .store
        .get_team(&i.team_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let team_ranges = redwall_policy::team_rules::TeamRanges::from_stored(&team.allowed_cidrs);
    let rules = rules_from_json(&i.routes);
    let matched = match_rule(&rules, &method, &req.path);
    let decision = decide(matched.map(|m| m.1), ip, &team_ranges, presented);
    Ok(Json(TestResult {
        decision,
        matched_rule: matched.map(|m| m.0),
        rule: matched.and_then(|m| serde_json::to_value(m.1).ok()),
    }))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub path_prefix: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// When the key last let a request through (written every few seconds).
    pub last_used_at: Option<String>,
}

fn key_view(k: &InstanceApiKey) -> KeyView {
    KeyView {
        id: k.id.clone(),
        name: k.name.clone(),
        prefix: k.display_prefix.clone(),
        path_prefix: k.path_prefix.clone(),
        created_at: rfc3339(k.created_at),
        expires_at: k.expires_at.map(rfc3339),
        revoked_at: k.revoked_at.map(rfc3339),
        last_used_at: k.last_used_at.map(rfc3339),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub expires_in_days: Option<i64>,
    /// Limit the key to this path prefix.
    pub path_prefix: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The key itself: shown this once, stored only as a digest.
    pub key: String,
    pub details: KeyView,
}

pub async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    path: InstancePath,
) -> ApiResult<Json<Vec<KeyView>>> {
    let i = team_instance(&state, &principal, &path).await?;
    let keys = state.store.list_instance_api_keys(&i.id).await?;
    Ok(Json(keys.iter().map(key_view).collect()))
}

pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    Body(req): Body<NewKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let i = team_instance(&state, &principal, &path).await?;
    let invalid = |code, msg: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg);
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(invalid(
            "invalid_name",
            "the key name must be 1 to 100 printable characters".into(),
        ));
    }
    if let Some(d) = req.expires_in_days {
        if !(1..=MAX_KEY_DAYS).contains(&d) {
            return Err(invalid(
                "invalid_expiry",
                format!("expires_in_days must be between 1 and {MAX_KEY_DAYS}"),
            ));
        }
    }
    if let Some(p) = &req.path_prefix {
        if !is_clean_path(p) || p.len() > 512 {
            return Err(invalid(
                "invalid_path_prefix",
                "path_prefix must be a clean absolute path".into(),
            ));
        }
    }
    let existing = state.store.list_instance_api_keys(&i.id).await?;
    if existing.iter().filter(|k| k.revoked_at.is_none()).count() >= MAX_KEYS {
        return Err(ApiError::conflict(
            "too_many_keys",
            format!("an instance may hold at most {MAX_KEYS} keys"),
        ));
    }
    let now = state.now();
    let secret = token::new_token(INSTANCE_KEY_PREFIX);
    let key = InstanceApiKey {
        id: crate::ids::new_id(),
        instance_id: i.id.clone(),
        name: name.to_string(),
        key_digest: token::token_digest(secret.expose()).to_vec(),
        display_prefix: token::display_prefix(secret.expose()),
        path_prefix: req.path_prefix.clone(),
        created_by: Some(principal.user_id.clone()),
        created_at: now,
        expires_at: req
            .expires_in_days
            .map(|d| now + d * 86_400 * MICROS_PER_SECOND),
        revoked_at: None,
        last_used_at: None,
    };
    state.store.create_instance_api_key(&key).await?;
    record(
        &state,
        &principal,
        &client,
        &i,
        AuditEvent::InstanceKeyCreated,
        json!({ "key_id": key.id, "name": key.name, "prefix": key.display_prefix, "path_prefix": key.path_prefix }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: secret.expose().to_string(),
            details: key_view(&key),
        }),
    ))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    axum::extract::Path((_, _, key_id)): axum::extract::Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let i = team_instance(&state, &principal, &path).await?;
    if !state
        .store
        .revoke_instance_api_key(&i.id, &key_id, state.now())
        .await?
    {
        return Err(ApiError::not_found());
    }
    state.forget_instance_keys();
    record(
        &state,
        &principal,
        &client,
        &i,
        AuditEvent::InstanceKeyRevoked,
        json!({ "key_id": key_id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

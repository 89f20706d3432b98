//! Who may reach an instance's own endpoints: the ordered route rules, the
//! "test a request" call, and the instance's API keys.

use crate::api::body::Body;
use crate::api::instances::{team_instance, InstancePath};
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::instances::access::KeyRequest;
use crate::instances::options::rules_from_json;
use crate::net::client::ClientInfo;
use crate::proxy::credentials::{check_api_key, KeyCheck};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_policy::route_policy::{
    decide, is_clean_path, key_allows_path, match_rule, Presented, RouteDecision, RouteRule,
};
use redwall_store::InstanceApiKey;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

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
    let caller = Caller::of(&principal, &client);
    let rules = state
        .hub
        .set_instance_routes(caller.who(), &i, rules)
        .await?;
    Ok(Json(
        serde_json::to_value(&rules).map_err(ApiError::internal)?,
    ))
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
        Some(r) => Some(redwall_policy::team_rules::team_role(r)?),
        None => None,
    };
    let method = req.method.to_ascii_uppercase();
    let presented = match req.credential.as_deref().unwrap_or("none") {
        "none" => Presented::Nothing,
        "session" => Presented::Session(role),
        "basic" => Presented::Basic(Some(role)),
        "api_key" => {
            let key = req.api_key.as_deref().unwrap_or("");
            match check_api_key(&state.hub, &i.id, key).await? {
                KeyCheck::Valid(key) => Presented::ApiKey {
                    valid: true,
                    path_allowed: key_allows_path(key.path_prefix.as_deref(), &req.path),
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
    let team = state.hub.team(&i.team_id).await?;
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
    let keys = state.hub.instance_keys(&i.id).await?;
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
    let caller = Caller::of(&principal, &client);
    let (secret, key) = state
        .hub
        .create_instance_key(
            caller.who(),
            &i,
            &principal.user_id,
            KeyRequest {
                name: req.name,
                expires_in_days: req.expires_in_days,
                path_prefix: req.path_prefix,
            },
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
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .revoke_instance_key(caller.who(), &i, &key_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

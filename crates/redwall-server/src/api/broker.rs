//! The team MQTT broker's clients: devices and scripts outside Redwall,
//! each with a password shown once and ordered topic rules. Instances'
//! own identities are listed too (they are made and rotated by Redwall).

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
use redwall_hub::broker::stored_rules;
use redwall_policy::mqtt_acl::AclRule;
use redwall_store::BrokerClient;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct BrokerClientView {
    /// Also the MQTT username.
    pub id: String,
    pub name: String,
    /// Set for an instance's own identity.
    pub instance_id: Option<String>,
    /// Ordered: the first rule that applies decides; none denies.
    pub rules: Vec<AclRule>,
    pub created_at: String,
    pub updated_at: String,
    /// Disabled clients are refused at login until enabled again.
    pub disabled: bool,
}

fn view(c: &BrokerClient) -> BrokerClientView {
    BrokerClientView {
        id: c.id.clone(),
        name: c.name.clone(),
        instance_id: c.instance_id.clone(),
        rules: stored_rules(c),
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
        disabled: c.disabled_at.is_some(),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBrokerClient {
    pub name: String,
    /// Without rules the client may do nothing.
    #[serde(default)]
    pub rules: Vec<AclRule>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct BrokerCredentials {
    pub username: String,
    /// Shown this once; stored only as a digest.
    pub password: String,
    pub client: BrokerClientView,
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<BrokerClientView>>> {
    let team = principal.team()?;
    let clients = state.hub.broker_clients(&team.team_id).await?;
    Ok(Json(clients.iter().map(view).collect()))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewBrokerClient>,
) -> ApiResult<(StatusCode, Json<BrokerCredentials>)> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let (secret, created) = state
        .hub
        .create_broker_client(
            caller.who(),
            &team.team_id,
            &principal.user_id,
            &req.name,
            req.rules,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(BrokerCredentials {
            username: created.id.clone(),
            password: secret.expose().to_string(),
            client: view(&created),
        }),
    ))
}

pub async fn set_rules(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
    Body(rules): Body<Vec<AclRule>>,
) -> ApiResult<Json<BrokerClientView>> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    // Instances' own rules are for Owners (the permission table says who).
    let may_rule_instances = team.admin_override
        || team.role.is_some_and(|role| {
            redwall_policy::permission::team_role_holds(
                role,
                redwall_policy::permission::Permission::BrokerInstanceRulesWrite,
            )
        });
    let changed = state
        .hub
        .set_broker_rules(caller.who(), &team.team_id, &id, rules, may_rule_instances)
        .await?;
    Ok(Json(view(&changed)))
}

pub async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<Json<BrokerCredentials>> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let secret = state
        .hub
        .rotate_broker_client(caller.who(), &team.team_id, &id)
        .await?;
    let rotated = state.hub.broker_client(&team.team_id, &id).await?;
    Ok(Json(BrokerCredentials {
        username: rotated.id.clone(),
        password: secret.expose().to_string(),
        client: view(&rotated),
    }))
}

pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<StatusCode> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .revoke_broker_client(caller.who(), &team.team_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(
    state: AppState,
    principal: Principal,
    client: ClientInfo,
    id: String,
    enabled: bool,
) -> ApiResult<Json<BrokerClientView>> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let changed = state
        .hub
        .set_broker_client_enabled(caller.who(), &team.team_id, &id, enabled)
        .await?;
    Ok(Json(view(&changed)))
}

pub async fn disable(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<Json<BrokerClientView>> {
    set_enabled(state, principal, client, id, false).await
}

pub async fn enable(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<Json<BrokerClientView>> {
    set_enabled(state, principal, client, id, true).await
}

//! Agent builds (platform admins add them; the hub signs each) and their
//! rollouts to a team's agents in batches (the team's Owners start them).

use crate::api::body::{Body, TeamItemPath};
use crate::api::{list_of, needs, schema, Route};
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use redwall_hub::agent_updates::UpdateProgress;
use redwall_hub::snapshots::schedule::Target;
use redwall_policy::agent_protocol::MAX_BUILD_BYTES;
use redwall_policy::permission::Permission;
use redwall_store::AgentBuild;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBuild {
    /// The build's version, as agents will report it (1 to 40 printable
    /// characters).
    pub version: String,
    /// linux-x86_64 or linux-aarch64.
    pub platform: String,
    /// The `redwall-agent` executable, standard base64.
    pub binary: String,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildView {
    pub id: String,
    pub version: String,
    pub platform: String,
    /// SHA-256 of the executable: what an updated agent reports.
    pub sha256: String,
    pub size: i64,
    pub created_at: String,
}

fn build_view(b: &AgentBuild) -> BuildView {
    BuildView {
        id: b.id.clone(),
        version: b.version.clone(),
        platform: b.platform.clone(),
        sha256: b.sha256.clone(),
        size: b.size,
        created_at: rfc3339(b.created_at),
    }
}

pub async fn add_build(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewBuild>,
) -> ApiResult<(StatusCode, Json<BuildView>)> {
    let body = STANDARD.decode(req.binary.trim()).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_build",
            "the binary must be standard base64",
        )
    })?;
    let caller = Caller::of(&principal, &client);
    let b = state
        .hub
        .add_agent_build(
            caller.who(),
            &principal.user_id,
            &req.version,
            &req.platform,
            &body,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(build_view(&b))))
}

pub async fn list_builds(
    State(state): State<AppState>,
    _principal: Principal,
) -> ApiResult<Json<Vec<BuildView>>> {
    let list = state.hub.agent_builds().await?;
    Ok(Json(list.iter().map(build_view).collect()))
}

pub async fn delete_build(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<StatusCode> {
    if !crate::ids::looks_like_id(&id) {
        return Err(ApiError::not_found());
    }
    let caller = Caller::of(&principal, &client);
    state.hub.delete_agent_build(caller.who(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUpdate {
    /// The build's id.
    pub build: String,
    /// An agent or an agent group.
    pub target: Target,
    /// Agents updated at once; the next batch starts when all of these
    /// answered, and the first failure stops the rollout (1 by default).
    #[serde(default)]
    pub batch_size: Option<u32>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdateView {
    pub id: String,
    pub build_id: String,
    pub version: Option<String>,
    #[schema(value_type = Object)]
    pub target: serde_json::Value,
    pub batch_size: i64,
    /// rolling, done or stopped.
    pub status: String,
    pub error: Option<String>,
    /// Agents sent the build so far, those that run it, those that did not
    /// take it.
    pub sent: usize,
    pub updated: usize,
    pub failed: usize,
    pub created_at: String,
    pub updated_at: String,
}

fn update_view(p: &UpdateProgress) -> UpdateView {
    UpdateView {
        id: p.update.id.clone(),
        build_id: p.update.build_id.clone(),
        version: p.build.as_ref().map(|b| b.version.clone()),
        target: serde_json::from_str(&p.update.target).unwrap_or_default(),
        batch_size: p.update.batch_size,
        status: p.update.status.clone(),
        error: p.update.error.clone(),
        sent: p.sent,
        updated: p.updated,
        failed: p.failed,
        created_at: rfc3339(p.update.created_at),
        updated_at: rfc3339(p.update.updated_at),
    }
}

pub async fn start_update(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewUpdate>,
) -> ApiResult<(StatusCode, Json<UpdateView>)> {
    let team = principal.team()?;
    if !crate::ids::looks_like_id(&req.build) {
        return Err(ApiError::not_found());
    }
    let caller = Caller::of(&principal, &client);
    let u = state
        .hub
        .start_agent_update(
            caller.who(),
            &team.team_id,
            &principal.user_id,
            &req.build,
            &req.target,
            req.batch_size.unwrap_or(1),
        )
        .await?;
    let progress = state
        .hub
        .agent_updates(&team.team_id)
        .await?
        .into_iter()
        .find(|p| p.update.id == u.id)
        .ok_or_else(ApiError::not_found)?;
    Ok((StatusCode::CREATED, Json(update_view(&progress))))
}

pub async fn list_updates(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<UpdateView>>> {
    let team = principal.team()?;
    let list = state.hub.agent_updates(&team.team_id).await?;
    Ok(Json(list.iter().map(update_view).collect()))
}

pub async fn get_update(
    State(state): State<AppState>,
    principal: Principal,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<Json<UpdateView>> {
    let team = principal.team()?;
    let list = state.hub.agent_updates(&team.team_id).await?;
    list.iter()
        .find(|p| p.update.id == id)
        .map(|p| Json(update_view(p)))
        .ok_or_else(ApiError::not_found)
}

/// The largest request adding a build: the binary in base64, and room.
const BUILD_BODY_BYTES: usize = (MAX_BUILD_BYTES as usize / 3 + 1) * 4 + 64 * 1024;

pub fn routes() -> Vec<Route> {
    use Method as M;
    use Permission as P;
    vec![
        needs(
            M::POST,
            "/api/v1/agent-builds",
            P::AgentBuildsManage,
            "Add an agent build (the redwall-agent executable); the hub checks it is one for \
             the platform named and signs a statement of its SHA-256",
            add_build,
        )
        .status(201)
        .body_limit(BUILD_BODY_BYTES)
        .request(schema::<NewBuild>())
        .response(schema::<BuildView>()),
        needs(
            M::GET,
            "/api/v1/agent-builds",
            P::AgentBuildsRead,
            "The agent builds the hub offers (never the bytes)",
            list_builds,
        )
        .response(list_of::<BuildView>()),
        needs(
            M::DELETE,
            "/api/v1/agent-builds/{id}",
            P::AgentBuildsManage,
            "Remove an agent build (its rollouts go with it)",
            delete_build,
        )
        .status(204),
        needs(
            M::POST,
            "/api/v1/teams/{team}/agent-updates",
            P::AgentsManage,
            "Roll an agent build out to an agent or an agent group, in batches; an agent \
             whose new build does not connect goes back to the one it ran",
            start_update,
        )
        .status(201)
        .request(schema::<NewUpdate>())
        .response(schema::<UpdateView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/agent-updates",
            P::AgentsRead,
            "The team's rollouts of agent builds and how far each got",
            list_updates,
        )
        .response(list_of::<UpdateView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/agent-updates/{id}",
            P::AgentsRead,
            "One rollout of an agent build",
            get_update,
        )
        .response(schema::<UpdateView>()),
    ]
}

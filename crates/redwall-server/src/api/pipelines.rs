//! Deploy targets and pipelines: instance groups, deploys to a target or a
//! subset of it (now or held for a deploy window), pipelines of stages,
//! promotions and their approval. Each handler is one hub call.

use crate::api::body::{Body, TeamItemPath};
use crate::api::snapshots::{deployment_view, DeploymentView};
use crate::api::{list_of, needs, schema, Route};
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::clock::{parse_rfc3339, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::Json;
use redwall_hub::pipelines::{Pipeline, PromotionState, Stage};
use redwall_hub::snapshots::deploy::Reason;
use redwall_hub::snapshots::schedule::{DeployRequest, Target};
use redwall_policy::deploy_window::{DailyWindow, DeployWindow};
use redwall_policy::permission::Permission;
use redwall_store::InstanceGroup;
use serde::{Deserialize, Serialize};

/// A named path parameter (`{group}`, `{pipeline}`): a name or an id,
/// looked up in the guard's team only.
pub struct Named<const GROUP: bool>(pub String);

impl<S: Send + Sync, const GROUP: bool> FromRequestParts<S> for Named<GROUP> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        crate::api::body::named_param(parts, state, if GROUP { "group" } else { "pipeline" })
            .await
            .map(Named)
    }
}

type GroupPath = Named<true>;
type PipelinePath = Named<false>;

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    /// Member instances' ids.
    pub instances: Vec<String>,
    pub created_at: String,
}

fn group_view(g: &InstanceGroup) -> GroupView {
    GroupView {
        id: g.id.clone(),
        name: g.name.clone(),
        instances: g.instance_ids.clone(),
        created_at: rfc3339(g.created_at),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    /// The team's instances (names or ids).
    pub instances: Vec<String>,
}

pub async fn list_groups(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<GroupView>>> {
    let team = principal.team()?;
    let groups = state.hub.instance_groups(&team.team_id).await?;
    Ok(Json(groups.iter().map(group_view).collect()))
}

pub async fn put_group(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: GroupPath,
    Body(req): Body<GroupBody>,
) -> ApiResult<Json<GroupView>> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let g = state
        .hub
        .put_instance_group(caller.who(), &team.team_id, &path.0, &req.instances)
        .await?;
    Ok(Json(group_view(&g)))
}

pub async fn delete_group(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: GroupPath,
) -> ApiResult<StatusCode> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .delete_instance_group(caller.who(), &team.team_id, &path.0)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// When a deploy may run: not before a time, and only inside a daily
/// window (UTC); both optional.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowBody {
    /// RFC 3339.
    pub not_before: Option<String>,
    /// "HH:MM-HH:MM", UTC; may wrap past midnight ("22:00-02:00").
    pub daily: Option<String>,
}

fn window(w: Option<WindowBody>) -> ApiResult<DeployWindow> {
    let Some(w) = w else {
        return Ok(DeployWindow::default());
    };
    let not_before = match w.not_before {
        Some(t) => Some(parse_rfc3339(&t).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_deploy_window",
                "not_before must be an RFC 3339 time",
            )
        })?),
        None => None,
    };
    let daily = match w.daily {
        Some(d) => Some(DailyWindow::parse(&d).map_err(redwall_hub::HubError::from)?),
        None => None,
    };
    Ok(DeployWindow { not_before, daily })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    pub snapshot: String,
    pub target: Target,
    /// Only these instances of the target (names); all when absent.
    #[serde(default)]
    pub only: Vec<String>,
    pub window: Option<WindowBody>,
}

pub async fn deploy(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<DeployBody>,
) -> ApiResult<Json<Vec<DeploymentView>>> {
    let team = principal.team()?;
    if !crate::ids::looks_like_id(&req.snapshot) {
        return Err(ApiError::not_found());
    }
    let window = window(req.window)?;
    let caller = Caller::of(&principal, &client);
    let deployments = state
        .hub
        .deploy_to_target(
            caller.who(),
            DeployRequest {
                team_id: &team.team_id,
                snapshot_id: &req.snapshot,
                target: &req.target,
                only: &req.only,
                window,
                reason: Reason::Deploy,
                promotion_id: None,
            },
            &principal.user_id,
            &principal.username,
        )
        .await?;
    Ok(Json(deployments.iter().map(deployment_view).collect()))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineView {
    pub id: String,
    pub name: String,
    #[schema(value_type = Vec<Object>)]
    pub stages: Vec<Stage>,
    pub created_at: String,
}

fn pipeline_view(p: &Pipeline) -> PipelineView {
    PipelineView {
        id: p.id.clone(),
        name: p.name.clone(),
        stages: p.stages.clone(),
        created_at: rfc3339(p.created_at),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPipeline {
    pub name: String,
    /// In order: each a name, a target and whether it needs approval.
    #[schema(value_type = Vec<Object>)]
    pub stages: Vec<Stage>,
}

pub async fn list_pipelines(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<PipelineView>>> {
    let team = principal.team()?;
    let list = state.hub.pipelines(&team.team_id).await?;
    Ok(Json(list.iter().map(pipeline_view).collect()))
}

pub async fn create_pipeline(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewPipeline>,
) -> ApiResult<(StatusCode, Json<PipelineView>)> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let p = state
        .hub
        .create_pipeline(
            caller.who(),
            &team.team_id,
            &req.name,
            req.stages,
            &principal.user_id,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(pipeline_view(&p))))
}

pub async fn delete_pipeline(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: PipelinePath,
) -> ApiResult<StatusCode> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .delete_pipeline(caller.who(), &team.team_id, &path.0)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct PromotionView {
    pub id: String,
    pub pipeline_id: String,
    pub stage: i64,
    pub snapshot_id: String,
    /// awaiting_approval, scheduled (waiting for its window), deploying,
    /// done or failed.
    pub state: String,
    pub promoted_by: String,
    pub approved_by: Option<String>,
    /// The deploy window its deployments wait for (UTC); none when it
    /// deploys at once.
    pub window: Option<WindowView>,
    pub deployments: Vec<DeploymentView>,
    pub created_at: String,
}

/// A deploy window as shown: UTC throughout.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct WindowView {
    /// RFC 3339, UTC.
    pub not_before: Option<String>,
    /// "HH:MM-HH:MM", UTC.
    pub daily: Option<String>,
}

fn window_view(schedule: &str) -> Option<WindowView> {
    let w: DeployWindow = serde_json::from_str(schedule).ok()?;
    if w.not_before.is_none() && w.daily.is_none() {
        return None;
    }
    Some(WindowView {
        not_before: w.not_before.map(rfc3339),
        daily: w.daily.map(|d| d.to_string()),
    })
}

fn promotion_view(p: &PromotionState) -> PromotionView {
    PromotionView {
        id: p.promotion.id.clone(),
        pipeline_id: p.promotion.pipeline_id.clone(),
        stage: p.promotion.stage,
        snapshot_id: p.promotion.snapshot_id.clone(),
        state: p.state.to_string(),
        promoted_by: p.promotion.promoted_by.clone(),
        approved_by: p.promotion.approved_by.clone(),
        window: window_view(&p.promotion.schedule),
        deployments: p.deployments.iter().map(deployment_view).collect(),
        created_at: rfc3339(p.promotion.created_at),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    pub snapshot: String,
    /// The stage's name.
    pub stage: String,
    pub window: Option<WindowBody>,
}

pub async fn promote(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: PipelinePath,
    Body(req): Body<PromoteBody>,
) -> ApiResult<Json<PromotionView>> {
    let team = principal.team()?;
    if !crate::ids::looks_like_id(&req.snapshot) {
        return Err(ApiError::not_found());
    }
    let window = window(req.window)?;
    let caller = Caller::of(&principal, &client);
    let p = state
        .hub
        .promote(
            caller.who(),
            &team.team_id,
            &path.0,
            &req.stage,
            &req.snapshot,
            window,
            &principal.user_id,
            &principal.username,
        )
        .await?;
    Ok(Json(promotion_view(&p)))
}

pub async fn promotions(
    State(state): State<AppState>,
    principal: Principal,
    path: PipelinePath,
) -> ApiResult<Json<Vec<PromotionView>>> {
    let team = principal.team()?;
    let list = state.hub.promotions(&team.team_id, &path.0).await?;
    Ok(Json(list.iter().map(promotion_view).collect()))
}

pub async fn approve(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<Json<PromotionView>> {
    let team = principal.team()?;
    // The guard let an Owner (or an admin acting with a reason) through;
    // the hub still refuses the one who promoted.
    let is_owner = team.admin_override
        || team.role.is_some_and(|role| {
            redwall_policy::permission::team_role_holds(role, Permission::PipelinesApprove)
        });
    let caller = Caller::of(&principal, &client);
    let p = state
        .hub
        .approve_promotion(
            caller.who(),
            &team.team_id,
            &id,
            &principal.user_id,
            is_owner,
            &principal.username,
        )
        .await?;
    Ok(Json(promotion_view(&p)))
}

pub fn routes() -> Vec<Route> {
    use Method as M;
    use Permission as P;
    vec![
        needs(
            M::GET,
            "/api/v1/teams/{team}/groups",
            P::SnapshotsRead,
            "The team's instance groups (deploy targets)",
            list_groups,
        )
        .response(list_of::<GroupView>()),
        needs(
            M::PUT,
            "/api/v1/teams/{team}/groups/{group}",
            P::PipelinesWrite,
            "Create or replace an instance group",
            put_group,
        )
        .request(schema::<GroupBody>())
        .response(schema::<GroupView>()),
        needs(
            M::DELETE,
            "/api/v1/teams/{team}/groups/{group}",
            P::PipelinesWrite,
            "Delete an instance group",
            delete_group,
        )
        .status(204),
        needs(
            M::POST,
            "/api/v1/teams/{team}/deploys",
            P::SnapshotsDeploy,
            "Deploy a snapshot to an instance or a group (or a subset of it), now or \
             held until its deploy window opens",
            deploy,
        )
        .request(schema::<DeployBody>())
        .response(list_of::<DeploymentView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/pipelines",
            P::SnapshotsRead,
            "The team's pipelines and their stages",
            list_pipelines,
        )
        .response(list_of::<PipelineView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/pipelines",
            P::PipelinesWrite,
            "Create a pipeline of ordered stages, each a target",
            create_pipeline,
        )
        .status(201)
        .request(schema::<NewPipeline>())
        .response(schema::<PipelineView>()),
        needs(
            M::DELETE,
            "/api/v1/teams/{team}/pipelines/{pipeline}",
            P::PipelinesWrite,
            "Delete a pipeline",
            delete_pipeline,
        )
        .status(204),
        needs(
            M::POST,
            "/api/v1/teams/{team}/pipelines/{pipeline}/promote",
            P::PipelinesWrite,
            "Promote a snapshot into a stage (the previous stage must run it); a stage \
             that requires approval waits for an Owner other than the promoter",
            promote,
        )
        .request(schema::<PromoteBody>())
        .response(schema::<PromotionView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/pipelines/{pipeline}/promotions",
            P::SnapshotsRead,
            "The pipeline's promotions, newest first, with their deployments",
            promotions,
        )
        .response(list_of::<PromotionView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/promotions/{id}/approve",
            P::PipelinesApprove,
            "Approve a promotion waiting for it (never one's own), then deploy it",
            approve,
        )
        .response(schema::<PromotionView>()),
    ]
}

//! Snapshots: list, show (checked whole), diff, take by hand, roll back,
//! deployments, export under a passphrase and import. Each handler is one
//! hub call; the permission table says who may call which.

use crate::api::body::{Body, Query, TeamItemPath};
use crate::api::instances::{team_instance, InstancePath};
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use redwall_hub::snapshots::deploy::Reason;
use redwall_hub::snapshots::transfer::{ImportRequest, Provenance};
use redwall_store::{Deployment, SnapshotSummary};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotView {
    pub id: String,
    /// The instance it was taken from or imported into.
    pub instance_id: Option<String>,
    /// automatic (a deploy from the editor), manual, imported or
    /// before_rollback (what ran before a rollback, so it can be undone).
    pub kind: String,
    pub note: String,
    /// SHA-256 of everything it holds (flows, credentials, variable names,
    /// options, modules).
    pub content_sha256: String,
    /// SHA-256 of its flows alone (canonical JSON).
    pub flows_sha256: String,
    pub created_by: Option<String>,
    pub created_at: String,
}

fn view(s: &SnapshotSummary) -> SnapshotView {
    SnapshotView {
        id: s.id.clone(),
        instance_id: s.instance_id.clone(),
        kind: s.kind.clone(),
        note: s.note.clone(),
        content_sha256: s.content_sha256.clone(),
        flows_sha256: s.flows_sha256.clone(),
        created_by: s.created_by.clone(),
        created_at: rfc3339(s.created_at),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SnapshotDetail {
    pub snapshot: SnapshotView,
    /// The Node-RED flows: an array of nodes.
    #[schema(value_type = Vec<Object>)]
    pub flows: serde_json::Value,
    /// The instance's environment variable names (values stay with it).
    pub env_names: Vec<String>,
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    /// Module name -> exact version.
    pub modules: BTreeMap<String, String>,
    /// Nodes that hold credentials (never their values).
    pub nodes_with_credentials: Vec<String>,
    /// The fingerprint of the hub key that signed it (checked).
    pub signed_by: String,
}

#[derive(Deserialize)]
pub struct ListQuery {
    instance: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<SnapshotView>>> {
    let team = principal.team()?;
    let instance = match q.instance {
        Some(name) => Some(state.hub.team_instance(&team.team_id, &name).await?),
        None => None,
    };
    let list = state
        .hub
        .list_snapshots(&team.team_id, instance.as_ref())
        .await?;
    Ok(Json(list.iter().map(view).collect()))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<Json<SnapshotDetail>> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let loaded = state
        .hub
        .load_snapshot(caller.who(), &team.team_id, &id)
        .await?;
    let signed_by = redwall_crypto::signing::PublicKey::from_base64(&loaded.row.signing_key)
        .map(|k| k.fingerprint())
        .unwrap_or_default();
    Ok(Json(SnapshotDetail {
        snapshot: view(&redwall_hub::snapshots::summary_of(&loaded.row)),
        flows: loaded.content.flows,
        env_names: loaded.content.env_names,
        options: loaded.content.options,
        modules: loaded.content.modules,
        nodes_with_credentials: loaded.credentials.keys().cloned().collect(),
        signed_by,
    }))
}

#[derive(Deserialize)]
pub struct DiffQuery {
    to: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DiffView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub diff: redwall_hub::snapshots::SnapshotDiff,
    /// The flows' diff as text: per tab, nodes added (+), removed (-) and
    /// changed (~), function code as a line diff.
    pub text: String,
}

pub async fn diff(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<DiffView>> {
    let team = principal.team()?;
    if !crate::ids::looks_like_id(&q.to) {
        return Err(ApiError::not_found());
    }
    let caller = Caller::of(&principal, &client);
    let diff = state
        .hub
        .diff_snapshots(caller.who(), &team.team_id, &id, &q.to)
        .await?;
    let text = redwall_policy::flow_diff::render_text(&diff.flows);
    Ok(Json(DiffView { diff, text }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSnapshot {
    /// Why it was taken (at most 500 characters).
    #[serde(default)]
    pub note: String,
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    Body(req): Body<NewSnapshot>,
) -> ApiResult<(StatusCode, Json<SnapshotView>)> {
    let instance = team_instance(&state, &principal, &path).await?;
    let caller = Caller::of(&principal, &client);
    let s = state
        .hub
        .take_snapshot(caller.who(), &instance, &req.note, Some(&principal.user_id))
        .await?;
    Ok((StatusCode::CREATED, Json(view(&s))))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeploymentView {
    pub id: String,
    /// The instance it deploys to, or
    pub instance_id: Option<String>,
    /// the remote agent it deploys to.
    pub agent_id: Option<String>,
    pub snapshot_id: String,
    /// What ran before: roll back to it to undo this deployment.
    pub previous_snapshot_id: Option<String>,
    pub reason: String,
    /// deploying, done or failed.
    pub status: String,
    /// What it is doing, or did last.
    pub step: String,
    pub error: Option<String>,
    pub requested_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn deployment_view(d: &Deployment) -> DeploymentView {
    DeploymentView {
        id: d.id.clone(),
        instance_id: d.instance_id.clone(),
        agent_id: d.agent_id.clone(),
        snapshot_id: d.snapshot_id.clone(),
        previous_snapshot_id: d.previous_snapshot_id.clone(),
        reason: d.reason.clone(),
        status: d.status.clone(),
        step: d.step.clone(),
        error: d.error.clone(),
        requested_by: d.requested_by.clone(),
        created_at: rfc3339(d.created_at),
        updated_at: rfc3339(d.updated_at),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The snapshot to run (of this team).
    pub snapshot: String,
}

pub async fn rollback(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    Body(req): Body<Rollback>,
) -> ApiResult<Json<DeploymentView>> {
    let instance = team_instance(&state, &principal, &path).await?;
    if !crate::ids::looks_like_id(&req.snapshot) {
        return Err(ApiError::not_found());
    }
    let caller = Caller::of(&principal, &client);
    let d = state
        .hub
        .deploy_snapshot(
            caller.who(),
            &instance,
            &req.snapshot,
            Some(&principal.user_id),
            &principal.username,
            Reason::Rollback,
        )
        .await?;
    Ok(Json(deployment_view(&d)))
}

pub async fn deployments(
    State(state): State<AppState>,
    principal: Principal,
    path: InstancePath,
) -> ApiResult<Json<Vec<DeploymentView>>> {
    let instance = team_instance(&state, &principal, &path).await?;
    let list = state.hub.deployments(&instance).await?;
    Ok(Json(list.iter().map(deployment_view).collect()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// At least 12 characters; the file opens only with it.
    pub passphrase: String,
}

pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
    Body(req): Body<ExportRequest>,
) -> ApiResult<impl IntoResponse> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let file = state
        .hub
        .export_snapshot(caller.who(), &team.team_id, &id, &req.passphrase)
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"snapshot-{id}.rwsnap\""),
            ),
        ],
        file,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// The file, base64: a sealed Redwall export, or a Node-RED flows
    /// export (JSON).
    pub file: String,
    /// The passphrase of a sealed export.
    pub passphrase: Option<String>,
    /// Accept credentials written in the clear in a flows file (refused
    /// otherwise).
    #[serde(default)]
    pub accept_plaintext_credentials: bool,
    #[serde(default)]
    pub note: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ImportView {
    pub snapshot: SnapshotView,
    /// this_hub, other_hub (signed_by names its key) or unsigned (a
    /// flows file).
    pub provenance: &'static str,
    /// The fingerprint of the other hub's key that signed the export.
    pub signed_by: Option<String>,
}

pub async fn import(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    Body(req): Body<ImportBody>,
) -> ApiResult<(StatusCode, Json<ImportView>)> {
    let instance = team_instance(&state, &principal, &path).await?;
    let file = base64::engine::general_purpose::STANDARD
        .decode(req.file.trim())
        .map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_import",
                "file must be base64",
            )
        })?;
    let caller = Caller::of(&principal, &client);
    let (s, provenance) = state
        .hub
        .import_snapshot(
            caller.who(),
            &instance,
            ImportRequest {
                file: &file,
                passphrase: req.passphrase.as_deref(),
                accept_plaintext_credentials: req.accept_plaintext_credentials,
                note: &req.note,
            },
            Some(&principal.user_id),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ImportView {
            snapshot: view(&s),
            provenance: match provenance {
                Provenance::ThisHub => "this_hub",
                Provenance::OtherHub(_) => "other_hub",
                Provenance::Unsigned => "unsigned",
            },
            signed_by: match provenance {
                Provenance::OtherHub(fingerprint) => Some(fingerprint),
                _ => None,
            },
        }),
    ))
}

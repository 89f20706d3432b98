//! Snapshots in the team's git repository: its settings (the token is
//! write-only), pushing a snapshot to the push branch for review, pulling
//! the pull branch as a new snapshot of an instance (not deployed: a
//! rollback to it deploys it). Owners only. Each handler is one hub call.

use crate::api::body::{Body, TeamItemPath};
use crate::api::instances::{team_instance, InstancePath};
use crate::api::snapshots::SnapshotView;
use crate::api::{needs, schema, Route};
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use redwall_hub::snapshots::git::{GitSettings, GitSettingsInput, PulledCredentials, TokenChange};
use redwall_policy::permission::Permission;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitSettingsView {
    /// Whether the team has a repository set.
    pub configured: bool,
    /// https://, ssh:// or git:// (file:// where the operator allows it).
    pub repository_url: Option<String>,
    /// Where snapshots are pushed, for review.
    pub push_branch: Option<String>,
    /// Where reviewed flows are pulled from.
    pub pull_branch: Option<String>,
    /// Whether an HTTPS token is stored (it is never shown).
    pub has_token: bool,
    pub updated_by: Option<String>,
    pub updated_at: Option<String>,
}

fn settings_view(s: Option<&GitSettings>) -> GitSettingsView {
    match s {
        None => GitSettingsView {
            configured: false,
            repository_url: None,
            push_branch: None,
            pull_branch: None,
            has_token: false,
            updated_by: None,
            updated_at: None,
        },
        Some(s) => GitSettingsView {
            configured: true,
            repository_url: Some(s.repository_url.clone()),
            push_branch: Some(s.push_branch.clone()),
            pull_branch: Some(s.pull_branch.clone()),
            has_token: s.has_token,
            updated_by: s.updated_by.clone(),
            updated_at: Some(rfc3339(s.updated_at)),
        },
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitSettingsBody {
    /// https://, ssh:// or git:// (file:// where the operator allows it);
    /// no user or password in it.
    pub repository_url: String,
    /// Where snapshots are pushed, for review.
    pub push_branch: String,
    /// Where reviewed flows are pulled from (not the push branch).
    pub pull_branch: String,
    /// An HTTPS token (write-only; sealed, never shown). Left out: the
    /// stored one is kept while the URL stays the same.
    pub token: Option<String>,
    /// Remove the stored token.
    #[serde(default)]
    pub clear_token: bool,
}

pub async fn get_settings(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<GitSettingsView>> {
    let team = principal.team()?;
    let settings = state.hub.git_settings(&team.team_id).await?;
    Ok(Json(settings_view(settings.as_ref())))
}

pub async fn put_settings(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<GitSettingsBody>,
) -> ApiResult<Json<GitSettingsView>> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let token = req.token.map(Zeroizing::new);
    let change = match (&token, req.clear_token) {
        (Some(_), true) => {
            return Err(crate::error::ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_git_settings",
                "give a token or clear_token, not both",
            ))
        }
        (Some(t), false) => TokenChange::Set(t.as_str()),
        (None, true) => TokenChange::Clear,
        (None, false) => TokenChange::Keep,
    };
    let settings = state
        .hub
        .set_git_settings(
            caller.who(),
            &team.team_id,
            GitSettingsInput {
                repository_url: &req.repository_url,
                push_branch: &req.push_branch,
                pull_branch: &req.pull_branch,
                token: change,
            },
            Some(&principal.user_id),
        )
        .await?;
    Ok(Json(settings_view(Some(&settings))))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitPushView {
    pub snapshot_id: String,
    pub repository_url: String,
    pub branch: String,
    /// The branch's head now.
    pub commit: String,
    /// False when the branch already held exactly this snapshot (nothing
    /// was committed).
    pub changed: bool,
}

pub async fn push(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<Json<GitPushView>> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let pushed = state
        .hub
        .push_snapshot_to_git(caller.who(), &team.team_id, &id, &principal.username)
        .await?;
    Ok(Json(GitPushView {
        snapshot_id: pushed.snapshot_id,
        repository_url: pushed.repository_url,
        branch: pushed.branch,
        commit: pushed.commit,
        changed: pushed.changed,
    }))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitPullView {
    /// The new snapshot (kind imported): not deployed; roll back to it to
    /// deploy it.
    pub snapshot: SnapshotView,
    pub repository_url: String,
    pub branch: String,
    /// The commit pulled.
    pub commit: String,
    /// sealed (the repository's, sealed by this hub for this team) or
    /// kept_from_instance (the repository has none).
    pub credentials: String,
}

pub async fn pull(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
) -> ApiResult<(StatusCode, Json<GitPullView>)> {
    let instance = team_instance(&state, &principal, &path).await?;
    let caller = Caller::of(&principal, &client);
    let pulled = state
        .hub
        .pull_from_git(caller.who(), &instance, Some(&principal.user_id))
        .await?;
    let s = &pulled.snapshot;
    Ok((
        StatusCode::CREATED,
        Json(GitPullView {
            snapshot: SnapshotView {
                id: s.id.clone(),
                instance_id: s.instance_id.clone(),
                kind: s.kind.clone(),
                note: s.note.clone(),
                content_sha256: s.content_sha256.clone(),
                flows_sha256: s.flows_sha256.clone(),
                created_by: s.created_by.clone(),
                created_at: rfc3339(s.created_at),
            },
            repository_url: pulled.repository_url,
            branch: pulled.branch,
            commit: pulled.commit,
            credentials: match pulled.credentials {
                PulledCredentials::Sealed => "sealed",
                PulledCredentials::KeptFromInstance => "kept_from_instance",
            }
            .to_string(),
        }),
    ))
}

pub fn routes() -> Vec<Route> {
    use Method as M;
    use Permission as P;
    vec![
        needs(
            M::GET,
            "/api/v1/teams/{team}/git",
            P::SnapshotsGitWrite,
            "The team's git repository for snapshots: URL, push and pull branches \
             (never the token)",
            get_settings,
        )
        .response(schema::<GitSettingsView>()),
        needs(
            M::PUT,
            "/api/v1/teams/{team}/git",
            P::SnapshotsGitWrite,
            "Set the team's git repository and branches, and its HTTPS token \
             (write-only, sealed; kept while the URL stays the same)",
            put_settings,
        )
        .request(schema::<GitSettingsBody>())
        .response(schema::<GitSettingsView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/snapshots/{id}/git/push",
            P::SnapshotsGitWrite,
            "Push the snapshot (checked whole) to the push branch: one directory per \
             tab, function bodies as .js files, credentials sealed for this team only",
            push,
        )
        .response(schema::<GitPushView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/instances/{instance}/git/pull",
            P::SnapshotsGitWrite,
            "Pull the pull branch's head as a new snapshot of the instance (not \
             deployed: roll back to it to deploy it)",
            pull,
        )
        .status(201)
        .response(schema::<GitPullView>()),
    ]
}

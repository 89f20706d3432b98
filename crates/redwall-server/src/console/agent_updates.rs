//! The "Agent updates" part of a team's agents page: the rollouts of agent
//! builds and how far each got, and for Owners the form that starts one.

use super::page::Ctx;
use super::submit::{self, Done, Posted};
use crate::api::agent_updates::{BuildView, UpdateView};
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::Method;
use axum::response::Response;
use serde_json::json;

/// One rollout, as the page lists it.
pub struct UpdateRow {
    pub id: String,
    pub version: String,
    pub target: String,
    /// rolling, done or stopped.
    pub status: String,
    pub progress: String,
    pub error: Option<String>,
}

/// A build the form offers.
pub struct BuildChoice {
    pub id: String,
    pub label: String,
}

/// What the page shows of updates.
#[derive(Default)]
pub struct Updates {
    pub rows: Vec<UpdateRow>,
    /// The builds on offer, for those who may start a rollout.
    pub builds: Vec<BuildChoice>,
}

fn update_row(u: &UpdateView) -> UpdateRow {
    let kind = u.target["kind"]
        .as_str()
        .unwrap_or_default()
        .replace('_', " ");
    UpdateRow {
        id: u.id.clone(),
        version: u.version.clone().unwrap_or_else(|| "(removed)".into()),
        target: format!("{kind} {}", u.target["name"].as_str().unwrap_or_default()),
        status: u.status.clone(),
        progress: format!("{} of {} updated", u.updated, u.sent),
        error: u.error.clone(),
    }
}

/// The team's rollouts, and the builds when `manage`.
pub async fn load(ctx: &Ctx, team_id: &str, manage: bool) -> Updates {
    let rows = ctx
        .api
        .get::<Vec<UpdateView>>(&format!("/api/v1/teams/{team_id}/agent-updates"))
        .await
        .unwrap_or_default()
        .iter()
        .take(20)
        .map(update_row)
        .collect();
    let builds = if manage {
        ctx.api
            .get::<Vec<BuildView>>("/api/v1/agent-builds")
            .await
            .unwrap_or_default()
            .iter()
            .map(|b| BuildChoice {
                id: b.id.clone(),
                label: format!(
                    "{} · {} · {}",
                    b.version,
                    b.platform,
                    b.sha256.chars().take(12).collect::<String>()
                ),
            })
            .collect()
    } else {
        Vec::new()
    };
    Updates { rows, builds }
}

/// "Update agents": starts a rollout, then shows the page.
pub async fn start(ctx: Ctx, Path(team): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    let here = format!("/teams/{team}/agents");
    submit::signed_in(ctx, body, |p: Posted| async move {
        let build = p.form.text("build");
        if !crate::ids::looks_like_id(&build) {
            return super::agents::again_with(ctx, team, "Choose a build.").await;
        }
        let target = p.form.text("target");
        let target = match target.split_once(':') {
            Some(("agent", name)) if !name.is_empty() => json!({"kind": "agent", "name": name}),
            Some(("agent-group", name)) if !name.is_empty() => {
                json!({"kind": "agent_group", "name": name})
            }
            _ => return super::agents::again_with(ctx, team, "Choose an agent or a group.").await,
        };
        let batch: u32 = match p.form.text("batch").trim() {
            "" => 1,
            b => match b.parse() {
                Ok(n) => n,
                Err(_) => {
                    return super::agents::again_with(
                        ctx,
                        team,
                        "Give the batch size as a whole number from 1 to 1000.",
                    )
                    .await
                }
            },
        };
        let request = json!({"build": build, "target": target, "batch_size": batch});
        match p
            .api
            .act(
                Method::POST,
                &format!("/api/v1/teams/{team}/agent-updates"),
                Some(&request),
            )
            .await
        {
            Ok(_) => Done::Redirect(format!("{here}?done=update_started#updates")),
            Err(f) => super::agents::again_failed(ctx, team, f, "roll agent builds out").await,
        }
    })
    .await
}

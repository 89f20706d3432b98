//! The team's deploy targets and pipelines page: its instance groups, its
//! pipelines with their stages in order, and each pipeline's recent
//! promotions with their state and deployments. Owners set and delete
//! groups, create and delete pipelines and promote a snapshot into a stage
//! (`pipeline:write`), and approve a promotion that waits for it
//! (`pipeline:approve`; the API refuses the Owner who promoted it, and the
//! page shows why). Everything goes through the API's
//! `/api/v1/teams/{team}/groups`, `.../pipelines` and `.../promotions`
//! like every console form. Owners also deploy a snapshot straight to a
//! target (`snapshot:deploy`, the API's `/api/v1/teams/{team}/deploys`),
//! and see and set the team's git repository for snapshots
//! (`snapshot:git:write`; the section is hidden when the API refuses to
//! show it; the token is write-only). Deploy windows are UTC, here as in
//! the API.

use super::auth::{describe, sentence, FieldErrors};
use super::client::Failure;
use super::models::{short_time, Instance, Member, Team};
use super::page::{error_page, refused_status, render_status, Ctx, Layout};
use super::snapshots::short_id;
use super::submit::{self, Done, Posted};
use crate::api::agents::AgentView;
use crate::api::pipelines::{GroupView, PipelineView, PromotionView, WindowView};
use crate::api::snapshot_git::GitSettingsView;
use crate::api::snapshots::{DeploymentView, SnapshotView};
use askama::Template;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use redwall_hub::snapshots::schedule::Target;
use serde_json::{json, Value};
use std::collections::HashMap;

/// How many promotions of each pipeline the page shows.
const RECENT_PROMOTIONS: usize = 10;
/// How many of the team's snapshots the promote form suggests.
const SUGGESTED_SNAPSHOTS: usize = 20;

/// One group as the page lists it.
pub struct GroupRow {
    pub name: String,
    /// Its instances' names.
    pub members: Vec<String>,
}

/// An instance the group form offers.
pub struct InstanceChoice {
    pub name: String,
    /// Ticked when the refused form had it ticked.
    pub checked: bool,
}

pub struct StageRow {
    pub name: String,
    /// "instance dev", "group fleet".
    pub target: String,
    pub approval: bool,
}

/// One deployment of a promotion.
pub struct DeploymentLine {
    pub instance: String,
    pub status: String,
    pub step: String,
    pub error: Option<String>,
}

pub struct PromotionRow {
    pub id: String,
    pub stage: String,
    pub snapshot: String,
    pub snapshot_short: String,
    /// awaiting_approval, scheduled, deploying, done or failed.
    pub state: String,
    pub promoted_by: String,
    /// The signed-in user promoted it (so may not approve it).
    pub mine: bool,
    pub approved_by: Option<String>,
    /// Its deploy window, in UTC.
    pub window: Option<String>,
    pub created: String,
    pub deployments: Vec<DeploymentLine>,
    /// Why approving it was just refused.
    pub error: Option<String>,
}

impl PromotionRow {
    pub fn awaiting(&self) -> bool {
        self.state == "awaiting_approval"
    }

    /// The status badge's colour.
    pub fn badge(&self) -> &'static str {
        state_badge(&self.state)
    }
}

impl DeploymentLine {
    pub fn badge(&self) -> &'static str {
        state_badge(&self.status)
    }
}

fn state_badge(state: &str) -> &'static str {
    match state {
        "done" => "running",
        "failed" => "failed",
        _ => "starting",
    }
}

/// The promote form, as typed when it was refused.
#[derive(Default)]
pub struct PromoteForm {
    pub snapshot: String,
    pub stage: String,
    pub not_before: String,
    pub daily: String,
    pub error: Option<String>,
}

pub struct PipelineRow {
    pub id: String,
    pub name: String,
    pub stages: Vec<StageRow>,
    pub promotions: Vec<PromotionRow>,
    /// More promotions than shown.
    pub more: bool,
    pub promote: PromoteForm,
}

/// The deploy form, as typed when it was refused.
#[derive(Default)]
pub struct DeployForm {
    pub snapshot: String,
    /// "instance:NAME" or "group:NAME".
    pub target: String,
    pub only: String,
    pub not_before: String,
    pub daily: String,
    pub error: Option<String>,
}

/// A target the deploy form offers.
pub struct TargetChoice {
    /// "instance:NAME" or "group:NAME".
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// The git settings form, as typed when it was refused (never the token).
#[derive(Default)]
pub struct GitForm {
    pub repository_url: String,
    pub push_branch: String,
    pub pull_branch: String,
    pub error: Option<String>,
}

/// The team's git settings as the page shows them.
pub struct GitShown {
    pub configured: bool,
    pub repository_url: String,
    pub push_branch: String,
    pub pull_branch: String,
    pub has_token: bool,
    pub updated: String,
}

/// A snapshot the promote form suggests.
pub struct SnapshotChoice {
    pub id: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "console/team_pipelines.html")]
struct PipelinesPage {
    layout: Layout,
    team: Team,
    groups: Vec<GroupRow>,
    instances: Vec<InstanceChoice>,
    pipelines: Vec<PipelineRow>,
    snapshots: Vec<SnapshotChoice>,
    /// The group and pipeline forms' messages, and one for the whole page.
    errors: FieldErrors,
    group_name: String,
    group_list: String,
    new_name: String,
    new_stages: String,
    targets: Vec<TargetChoice>,
    deploy: DeployForm,
    /// The deployments a deploy just made, shown once.
    deployed: Option<Vec<DeploymentLine>>,
    /// None when the API refuses to show the team's git settings.
    git: Option<GitShown>,
    git_form: GitForm,
}

/// What a form's answer adds to the page.
#[derive(Default)]
struct Extra {
    errors: FieldErrors,
    group_name: String,
    group_list: String,
    group_checked: Vec<String>,
    new_name: String,
    new_stages: String,
    /// A refused promote: the pipeline (its name or id) and what was typed.
    promote: Option<(String, PromoteForm)>,
    /// A refused approval: the promotion and why.
    approve: Option<(String, String)>,
    /// The deploy form as typed (with why it was refused).
    deploy: DeployForm,
    /// What a deploy just made.
    deployed: Option<Vec<DeploymentView>>,
    /// A refused git settings form.
    git_form: Option<GitForm>,
}

fn api(team: &str, rest: &str) -> String {
    format!("/api/v1/teams/{team}/{rest}")
}

fn page_path(team: &str) -> String {
    format!("/teams/{team}/pipelines")
}

fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "group_saved" => "The group was saved.",
        "group_deleted" => "The group was deleted.",
        "pipeline_created" => "The pipeline was created.",
        "pipeline_deleted" => "The pipeline was deleted.",
        "promotion_awaiting" => "The promotion waits for the approval of an Owner other than you; nothing was deployed yet.",
        "promotion_scheduled" => "The promotion waits for its deploy window (UTC); it deploys when the window opens.",
        "promotion_done" => "The promotion is deployed: every instance of the stage runs the snapshot.",
        "promotion_failed" => "The promotion's deploy failed on at least one instance, which keeps what it ran. Its deployments below say why.",
        "promotion_deploying" => "The promotion is deploying.",
        "git_saved" => "The team's git settings were saved.",
        other => return super::home::notice(Some(other)),
    })
}

/// A group, pipeline or stage name as it may appear in a path: the
/// instance name rule's characters (anything else names nothing).
fn plausible_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The API's target kind for a kind as typed in the console.
fn target_kind(typed: &str) -> Option<&'static str> {
    match typed {
        "instance" => Some("instance"),
        "group" => Some("group"),
        "agent" => Some("agent"),
        "agent-group" => Some("agent_group"),
        _ => None,
    }
}

fn target_text(target: &Target) -> String {
    match target {
        Target::Instance(name) => format!("instance {name}"),
        Target::Group(name) => format!("group {name}"),
        Target::Agent(name) => format!("agent {name}"),
        Target::AgentGroup(name) => format!("agent group {name}"),
    }
}

/// A window in words, UTC.
fn window_text(w: &WindowView) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &w.not_before {
        parts.push(format!("not before {}", short_time(t)));
    }
    if let Some(d) = &w.daily {
        parts.push(format!("daily {d} UTC"));
    }
    parts.join(", ")
}

/// The stage lines of the create form: `NAME instance:INSTANCE [approval]`
/// or `NAME group:GROUP [approval]`, one a line; blank lines are skipped.
/// The error names the first line that does not read.
pub fn parse_stage_lines(text: &str) -> Result<Vec<Value>, String> {
    let mut stages = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let bad = || {
            format!(
                "Line {}: write a stage as NAME instance:INSTANCE, NAME group:GROUP, \
                 NAME agent:AGENT or NAME agent-group:GROUP, then approval when promotions \
                 into it need an Owner's approval.",
                i + 1
            )
        };
        let (name, target, approval) = match words.as_slice() {
            [name, target] => (*name, *target, false),
            [name, target, flag] if flag.eq_ignore_ascii_case("approval") => (*name, *target, true),
            _ => return Err(bad()),
        };
        let (kind, target) = target.split_once(':').ok_or_else(bad)?;
        let kind = target_kind(kind).ok_or_else(bad)?;
        if target.is_empty() {
            return Err(bad());
        }
        stages.push(json!({
            "name": name,
            "target": { "kind": kind, "name": target },
            "requires_approval": approval,
        }));
    }
    if stages.is_empty() {
        return Err("Give at least one stage.".to_string());
    }
    Ok(stages)
}

/// "2026-12-04T22:00" (a browser's datetime-local) as UTC RFC 3339; an
/// RFC 3339 time as typed; anything else as typed, for the API to refuse.
fn not_before_utc(typed: &str) -> String {
    if crate::clock::parse_rfc3339(typed).is_some() {
        return typed.to_string();
    }
    for candidate in [format!("{typed}:00Z"), format!("{typed}Z")] {
        if crate::clock::parse_rfc3339(&candidate).is_some() {
            return candidate;
        }
    }
    typed.to_string()
}

/// The instances a group form names: the ticked boxes and the comma list.
fn group_instances(body: &[u8], list: &str) -> Vec<String> {
    let mut out: Vec<String> = super::form::Form::all(body, "instances")
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    for name in list.split([',', '\n', ' ']).map(str::trim) {
        if !name.is_empty() && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    out
}

fn user_name(id: &str, members: &HashMap<String, String>) -> String {
    members
        .get(id)
        .cloned()
        .unwrap_or_else(|| format!("former member {}", short_id(id)))
}

async fn pipelines_page(ctx: &Ctx, team_id: &str, extra: Extra, status: StatusCode) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let team = match ctx
        .api
        .get::<Team>(&format!("/api/v1/teams/{team_id}"))
        .await
    {
        Ok(t) => t,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let (groups_path, pipelines_path, instances_path, members_path, agents_path) = (
        api(team_id, "groups"),
        api(team_id, "pipelines"),
        api(team_id, "instances"),
        api(team_id, "members"),
        api(team_id, "agents"),
    );
    let (listed_groups, listed_pipelines, listed_instances, listed_members, listed_agents) = futures::join!(
        ctx.api.get::<Vec<GroupView>>(&groups_path),
        ctx.api.get::<Vec<PipelineView>>(&pipelines_path),
        ctx.api.get::<Vec<Instance>>(&instances_path),
        ctx.api.get::<Vec<Member>>(&members_path),
        ctx.api.get::<Vec<AgentView>>(&agents_path),
    );
    let listed_agents: Vec<AgentView> = listed_agents
        .unwrap_or_default()
        .into_iter()
        .filter(|a| !a.revoked)
        .collect();
    let agent_names: HashMap<String, String> = listed_agents
        .iter()
        .map(|a| (a.id.clone(), a.name.clone()))
        .collect();
    let listed_groups = match listed_groups {
        Ok(g) => g,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let listed_pipelines = match listed_pipelines {
        Ok(p) => p,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let listed_instances = listed_instances.unwrap_or_default();
    let instance_names: HashMap<String, String> = listed_instances
        .iter()
        .map(|i| (i.id.clone(), i.name.clone()))
        .collect();
    let members: HashMap<String, String> = listed_members
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.user_id, m.username))
        .collect();
    let instance_name = |id: &str| {
        instance_names
            .get(id)
            .cloned()
            .unwrap_or_else(|| short_id(id))
    };
    // Where a deployment went: an instance's name, or "agent NAME".
    let deployed_to = |d: &DeploymentView| match (&d.instance_id, &d.agent_id) {
        (Some(id), _) => instance_name(id),
        (None, Some(id)) => format!(
            "agent {}",
            agent_names.get(id).cloned().unwrap_or_else(|| short_id(id))
        ),
        (None, None) => String::new(),
    };

    let groups = listed_groups
        .iter()
        .map(|g| {
            let mut members: Vec<String> = g.instances.iter().map(|id| instance_name(id)).collect();
            members.sort();
            GroupRow {
                name: g.name.clone(),
                members,
            }
        })
        .collect();
    let instances = listed_instances
        .iter()
        .map(|i| InstanceChoice {
            name: i.name.clone(),
            checked: extra.group_checked.contains(&i.name),
        })
        .collect();

    let mut errors = extra.errors;
    let mut promote = extra.promote;
    // Without the promote forms, a refused promote is said for the page.
    if !team.can("pipeline:write") {
        if let Some((_, form)) = promote.take() {
            errors.form = errors.form.or(form.error);
        }
    }
    let mut pipelines = Vec::with_capacity(listed_pipelines.len());
    for p in &listed_pipelines {
        let listed = ctx
            .api
            .get::<Vec<PromotionView>>(&api(team_id, &format!("pipelines/{}/promotions", p.id)))
            .await
            .unwrap_or_default();
        let promotions = listed
            .iter()
            .take(RECENT_PROMOTIONS)
            .map(|pr| PromotionRow {
                id: pr.id.clone(),
                stage: usize::try_from(pr.stage)
                    .ok()
                    .and_then(|i| p.stages.get(i))
                    .map(|s| s.name.clone())
                    .unwrap_or_else(|| format!("stage {}", pr.stage + 1)),
                snapshot: pr.snapshot_id.clone(),
                snapshot_short: short_id(&pr.snapshot_id),
                state: pr.state.clone(),
                promoted_by: user_name(&pr.promoted_by, &members),
                mine: pr.promoted_by == me.id,
                approved_by: pr.approved_by.as_deref().map(|id| user_name(id, &members)),
                window: pr.window.as_ref().map(window_text),
                created: short_time(&pr.created_at),
                deployments: pr
                    .deployments
                    .iter()
                    .map(|d| DeploymentLine {
                        instance: deployed_to(d),
                        status: d.status.clone(),
                        step: d.step.clone(),
                        error: d.error.clone(),
                    })
                    .collect(),
                error: match &extra.approve {
                    Some((id, why)) if *id == pr.id => Some(why.clone()),
                    _ => None,
                },
            })
            .collect();
        let form = match promote.take() {
            Some((named, form)) if named == p.id || named == p.name => form,
            other => {
                promote = other;
                PromoteForm::default()
            }
        };
        pipelines.push(PipelineRow {
            id: p.id.clone(),
            name: p.name.clone(),
            stages: p
                .stages
                .iter()
                .map(|s| StageRow {
                    name: s.name.clone(),
                    target: target_text(&s.target),
                    approval: s.requires_approval,
                })
                .collect(),
            promotions,
            more: listed.len() > RECENT_PROMOTIONS,
            promote: form,
        });
    }
    // A refusal whose promotion or pipeline is not shown (any more) is
    // said for the whole page.
    if let Some((_, form)) = promote {
        errors.form = errors.form.or(form.error);
    }
    let approval_shown = pipelines
        .iter()
        .any(|p| p.promotions.iter().any(|r| r.error.is_some()));
    if let Some((_, why)) = extra.approve.filter(|_| !approval_shown) {
        errors.form = errors.form.or(Some(why));
    }
    // Suggestions for the promote and deploy forms, for those who may use them.
    let snapshots =
        if (team.can("pipeline:write") && !pipelines.is_empty()) || team.can("snapshot:deploy") {
            ctx.api
                .get::<Vec<SnapshotView>>(&api(team_id, "snapshots"))
                .await
                .unwrap_or_default()
                .iter()
                .take(SUGGESTED_SNAPSHOTS)
                .map(|s| SnapshotChoice {
                    id: s.id.clone(),
                    label: format!(
                        "{} · {} · {}{}",
                        short_id(&s.id),
                        s.instance_id
                            .as_deref()
                            .map(&instance_name)
                            .unwrap_or_default(),
                        short_time(&s.created_at),
                        if s.note.is_empty() {
                            String::new()
                        } else {
                            format!(" · {}", s.note.chars().take(60).collect::<String>())
                        }
                    ),
                })
                .collect()
        } else {
            Vec::new()
        };
    // The deploy form: its targets, and what a deploy just made.
    let mut deploy = extra.deploy;
    if !team.can("snapshot:deploy") {
        if let Some(why) = deploy.error.take() {
            errors.form = errors.form.or(Some(why));
        }
    }
    let mut targets: Vec<TargetChoice> = listed_instances
        .iter()
        .map(|i| format!("instance:{}", i.name))
        .chain(listed_groups.iter().map(|g| format!("group:{}", g.name)))
        .chain(listed_agents.iter().map(|a| format!("agent:{}", a.name)))
        .chain(
            listed_agents
                .iter()
                .filter_map(|a| a.group.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|g| format!("agent-group:{g}")),
        )
        .map(|value| TargetChoice {
            label: value.replacen(':', " ", 1),
            selected: value == deploy.target,
            value,
        })
        .collect();
    targets.sort_by(|a, b| a.value.cmp(&b.value));
    let deployed = extra.deployed.map(|list| {
        list.iter()
            .map(|d| DeploymentLine {
                instance: deployed_to(d),
                status: d.status.clone(),
                step: d.step.clone(),
                error: d.error.clone(),
            })
            .collect()
    });
    // The git settings, for those the API shows them to.
    let git = ctx
        .api
        .get::<GitSettingsView>(&api(team_id, "git"))
        .await
        .ok()
        .map(|g| GitShown {
            configured: g.configured,
            repository_url: g.repository_url.unwrap_or_default(),
            push_branch: g.push_branch.unwrap_or_default(),
            pull_branch: g.pull_branch.unwrap_or_default(),
            has_token: g.has_token,
            updated: match (&g.updated_at, &g.updated_by) {
                (Some(at), Some(by)) => {
                    format!("{} by {}", short_time(at), user_name(by, &members))
                }
                (Some(at), None) => short_time(at),
                _ => String::new(),
            },
        });
    let git_form = match (extra.git_form, &git) {
        (Some(mut typed), None) => {
            errors.form = errors.form.or(typed.error.take());
            typed
        }
        (Some(typed), Some(_)) => typed,
        (None, Some(g)) => GitForm {
            repository_url: g.repository_url.clone(),
            push_branch: g.push_branch.clone(),
            pull_branch: g.pull_branch.clone(),
            error: None,
        },
        (None, None) => GitForm::default(),
    };
    let layout = Layout::new(
        format!("{} · Pipelines and deploy targets", team.name),
        Some(&me),
        "home",
    )
    .with_notice(notice(ctx.query_param("done").as_deref()));
    render_status(
        status,
        &PipelinesPage {
            layout,
            team,
            groups,
            instances,
            pipelines,
            snapshots,
            errors,
            group_name: extra.group_name,
            group_list: extra.group_list,
            new_name: extra.new_name,
            new_stages: extra.new_stages,
            targets,
            deploy,
            deployed,
            git,
            git_form,
        },
    )
}

pub async fn page(ctx: Ctx, Path(team): Path<String>) -> Response {
    pipelines_page(&ctx, &team, Extra::default(), StatusCode::OK).await
}

/// A refusal of a form on this page, said for people.
fn refusal(f: &Failure, what: &str) -> String {
    if f.status == StatusCode::FORBIDDEN && f.is("forbidden") {
        return format!("Only the team's Owners may {what}.");
    }
    describe(f)
}

/// The page again with a message for the whole page.
async fn again(ctx: &Ctx, team: &str, f: Failure, what: &str) -> Done {
    if f.needs_login() {
        return Done::Again(ctx.refused(&f, None));
    }
    let extra = Extra {
        errors: FieldErrors {
            form: Some(refusal(&f, what)),
            fields: Vec::new(),
        },
        ..Extra::default()
    };
    Done::Again(pipelines_page(ctx, team, extra, refused_status(f.status)).await)
}

/// "Save group": creates or replaces a group with the instances ticked or
/// listed.
pub async fn group_set(ctx: Ctx, Path(team): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    let here = page_path(team);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let name = p.form.text("group_name");
        let list = p.form.text("instance_list");
        let instances = group_instances(&p.body, &list);
        let refused = |errors: FieldErrors, status: StatusCode| {
            let extra = Extra {
                errors,
                group_name: name.clone(),
                group_list: list.clone(),
                group_checked: super::form::Form::all(&p.body, "instances"),
                ..Extra::default()
            };
            async move { Done::Again(pipelines_page(ctx, team, extra, refused_status(status)).await) }
        };
        if !plausible_name(&name) {
            let errors = FieldErrors {
                form: None,
                fields: vec![(
                    "group_name",
                    "A group name is 2 to 40 characters of a-z, 0-9 and '-', starting with a letter."
                        .to_string(),
                )],
            };
            return refused(errors, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
        let path = api(team, &format!("groups/{name}"));
        match p
            .api
            .act(Method::PUT, &path, Some(&json!({ "instances": instances })))
            .await
        {
            Ok(_) => Done::Redirect(format!("{here}?done=group_saved#groups")),
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let mut errors = FieldErrors::from_failure(
                    &f,
                    &[
                        ("invalid_group_name", "group_name"),
                        ("name_taken", "group_name"),
                        ("invalid_target", "instances"),
                    ],
                );
                if errors.form.is_some() {
                    errors.form = Some(refusal(&f, "change instance groups"));
                }
                refused(errors, f.status).await
            }
        }
    })
    .await
}

pub async fn group_delete(
    ctx: Ctx,
    Path((team, group)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    if !plausible_name(&group) {
        return error_page(&Failure::not_found(), None);
    }
    let here = page_path(team);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let path = api(team, &format!("groups/{group}"));
        match p.api.act(Method::DELETE, &path, None).await {
            Ok(_) => Done::Redirect(format!("{here}?done=group_deleted#groups")),
            Err(f) => again(ctx, team, f, "change instance groups").await,
        }
    })
    .await
}

/// "Create pipeline": a name and its stages, one a line.
pub async fn create(ctx: Ctx, Path(team): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    let here = page_path(team);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let name = p.form.text("name");
        // A browser sends a textarea's line breaks as CR LF.
        let typed = p.form.raw("stages").replace("\r\n", "\n");
        let refused = |errors: FieldErrors, status: StatusCode| {
            let extra = Extra {
                errors,
                new_name: name.clone(),
                new_stages: typed.clone(),
                ..Extra::default()
            };
            async move { Done::Again(pipelines_page(ctx, team, extra, refused_status(status)).await) }
        };
        let stages = match parse_stage_lines(&typed) {
            Ok(stages) => stages,
            Err(why) => {
                let errors = FieldErrors {
                    form: None,
                    fields: vec![("stages", why)],
                };
                return refused(errors, StatusCode::UNPROCESSABLE_ENTITY).await;
            }
        };
        let request = json!({ "name": name, "stages": stages });
        match p
            .api
            .act(Method::POST, &api(team, "pipelines"), Some(&request))
            .await
        {
            Ok(_) => Done::Redirect(format!("{here}?done=pipeline_created#pipelines")),
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let mut errors = FieldErrors::from_failure(
                    &f,
                    &[
                        ("invalid_pipeline_name", "name"),
                        ("name_taken", "name"),
                        ("invalid_stages", "stages"),
                        ("invalid_stage_name", "stages"),
                        ("invalid_target", "stages"),
                    ],
                );
                if f.is("not_found") {
                    errors = FieldErrors {
                        form: None,
                        fields: vec![(
                            "stages",
                            "A stage names an instance or a group the team does not have."
                                .to_string(),
                        )],
                    };
                } else if errors.form.is_some() {
                    errors.form = Some(refusal(&f, "create pipelines"));
                }
                refused(errors, f.status).await
            }
        }
    })
    .await
}

/// The forms on one pipeline: `promote` and `delete`.
pub async fn action(
    ctx: Ctx,
    Path((team, pipeline, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    if !plausible_name(&pipeline) {
        return error_page(&Failure::not_found(), None);
    }
    let here = page_path(team);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let base = api(team, &format!("pipelines/{pipeline}"));
        match action.as_str() {
            "delete" => match p.api.act(Method::DELETE, &base, None).await {
                Ok(_) => Done::Redirect(format!("{here}?done=pipeline_deleted#pipelines")),
                Err(f) => again(ctx, team, f, "delete pipelines").await,
            },
            "promote" => {
                let typed = PromoteForm {
                    snapshot: p.form.text("snapshot"),
                    stage: p.form.text("stage"),
                    not_before: p.form.text("not_before"),
                    daily: p.form.text("daily"),
                    error: None,
                };
                let mut request = json!({ "snapshot": typed.snapshot, "stage": typed.stage });
                if let Some(w) = window_json(&typed.not_before, &typed.daily) {
                    request["window"] = w;
                }
                match p
                    .api
                    .post::<PromotionView>(Method::POST, &format!("{base}/promote"), &request)
                    .await
                {
                    Ok(promotion) => {
                        let done = match promotion.state.as_str() {
                            "awaiting_approval" => "promotion_awaiting",
                            "scheduled" => "promotion_scheduled",
                            "done" => "promotion_done",
                            "failed" => "promotion_failed",
                            _ => "promotion_deploying",
                        };
                        Done::Redirect(format!("{here}?done={done}#promotion-{}", promotion.id))
                    }
                    Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
                    Err(f) => {
                        let why = if f.is("not_found") {
                            "No such snapshot in this team (or no such pipeline): give the id of one of the team's snapshots.".to_string()
                        } else {
                            refusal(&f, "promote snapshots")
                        };
                        let pipeline_id = pipeline.clone();
                        let extra = Extra {
                            promote: Some((
                                pipeline_id,
                                PromoteForm {
                                    error: Some(why),
                                    ..typed
                                },
                            )),
                            ..Extra::default()
                        };
                        Done::Again(
                            pipelines_page(ctx, team, extra, refused_status(f.status)).await,
                        )
                    }
                }
            }
            _ => Done::Again(error_page(&Failure::not_found(), None)),
        }
    })
    .await
}

/// The window a form typed, as the API takes it; none when both are empty.
fn window_json(not_before: &str, daily: &str) -> Option<Value> {
    if not_before.is_empty() && daily.is_empty() {
        return None;
    }
    Some(json!({
        "not_before": Some(not_before_utc(not_before)).filter(|t| !t.is_empty()),
        "daily": Some(daily.to_string()).filter(|d| !d.is_empty()),
    }))
}

/// "Deploy": a snapshot to an instance or a group (or a subset of it), now
/// or held for a window; then the deployments it made, shown once.
pub async fn deploy(ctx: Ctx, Path(team): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    let here = page_path(team);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let typed = DeployForm {
            snapshot: p.form.text("snapshot"),
            target: p.form.text("target"),
            only: p.form.text("only"),
            not_before: p.form.text("not_before"),
            daily: p.form.text("daily"),
            error: None,
        };
        let refused = |why: String, status: StatusCode, typed: DeployForm| async move {
            let extra = Extra {
                deploy: DeployForm {
                    error: Some(why),
                    ..typed
                },
                ..Extra::default()
            };
            Done::Again(pipelines_page(ctx, team, extra, refused_status(status)).await)
        };
        let target = match typed
            .target
            .split_once(':')
            .and_then(|(kind, name)| Some((target_kind(kind)?, name)))
        {
            Some((kind, name)) if !name.is_empty() => json!({"kind": kind, "name": name}),
            _ => {
                let why = "Choose an instance, a group, an agent or an agent group to deploy to."
                    .to_string();
                return refused(why, StatusCode::UNPROCESSABLE_ENTITY, typed).await;
            }
        };
        let only: Vec<&str> = typed
            .only
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let mut request = json!({ "snapshot": typed.snapshot, "target": target, "only": only });
        if let Some(w) = window_json(&typed.not_before, &typed.daily) {
            request["window"] = w;
        }
        match p
            .api
            .post::<Vec<DeploymentView>>(Method::POST, &api(team, "deploys"), &request)
            .await
        {
            Ok(made) => {
                let extra = Extra {
                    deployed: Some(made),
                    ..Extra::default()
                };
                Done::ShownOnce {
                    page: pipelines_page(ctx, team, extra, StatusCode::OK).await,
                    then: format!("{here}#deploy"),
                }
            }
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let why = if f.is("not_found") {
                    "No such snapshot in this team, or no such target: give the id of one of the team's snapshots.".to_string()
                } else {
                    refusal(&f, "deploy snapshots")
                };
                refused(why, f.status, typed).await
            }
        }
    })
    .await
}

/// "Save git settings": the repository, its branches and (write-only) its
/// HTTPS token.
pub async fn git_set(ctx: Ctx, Path(team): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    let here = page_path(team);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let typed = GitForm {
            repository_url: p.form.text("repository_url"),
            push_branch: p.form.text("push_branch"),
            pull_branch: p.form.text("pull_branch"),
            error: None,
        };
        let token = p.form.raw("token");
        let mut request = json!({
            "repository_url": typed.repository_url,
            "push_branch": typed.push_branch,
            "pull_branch": typed.pull_branch,
            "clear_token": p.form.checked("clear_token"),
        });
        if !token.is_empty() {
            request["token"] = json!(token);
        }
        match p
            .api
            .act(Method::PUT, &api(team, "git"), Some(&request))
            .await
        {
            Ok(_) => Done::Redirect(format!("{here}?done=git_saved#git")),
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let extra = Extra {
                    git_form: Some(GitForm {
                        error: Some(refusal(&f, "set the team's git repository")),
                        ..typed
                    }),
                    ..Extra::default()
                };
                Done::Again(pipelines_page(ctx, team, extra, refused_status(f.status)).await)
            }
        }
    })
    .await
}

/// "Approve" on a promotion that waits for it; then it deploys.
pub async fn approve(ctx: Ctx, Path((team, id)): Path<(String, String)>, body: Bytes) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    if !crate::ids::looks_like_id(&id) {
        return error_page(&Failure::not_found(), None);
    }
    let here = page_path(team);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let path = api(team, &format!("promotions/{id}/approve"));
        match p
            .api
            .post::<PromotionView>(Method::POST, &path, &json!({}))
            .await
        {
            Ok(promotion) => {
                let done = match promotion.state.as_str() {
                    "scheduled" => "promotion_scheduled",
                    "done" => "promotion_done",
                    "failed" => "promotion_failed",
                    _ => "promotion_deploying",
                };
                Done::Redirect(format!("{here}?done={done}#promotion-{id}"))
            }
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let why = if f.is("forbidden") {
                    refusal(&f, "approve promotions")
                } else {
                    sentence(&f.message)
                };
                let extra = Extra {
                    approve: Some((id.clone(), why)),
                    ..Extra::default()
                };
                Done::Again(pipelines_page(ctx, team, extra, refused_status(f.status)).await)
            }
        }
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn stage_lines_read_in_order_with_their_approval() {
        let stages =
            parse_stage_lines("dev instance:dev-1\r\n\n  prod   group:fleet  approval \n").unwrap();
        assert_eq!(
            stages,
            vec![
                json!({"name": "dev", "target": {"kind": "instance", "name": "dev-1"},
                       "requires_approval": false}),
                json!({"name": "prod", "target": {"kind": "group", "name": "fleet"},
                       "requires_approval": true}),
            ]
        );
        assert_eq!(
            parse_stage_lines("site agent:plant-1\nplants agent-group:plants approval").unwrap(),
            vec![
                json!({"name": "site", "target": {"kind": "agent", "name": "plant-1"},
                       "requires_approval": false}),
                json!({"name": "plants", "target": {"kind": "agent_group", "name": "plants"},
                       "requires_approval": true}),
            ]
        );
        let err = parse_stage_lines("dev instance:dev\nprod fleet").unwrap_err();
        assert!(err.starts_with("Line 2:"), "{err}");
        for bad in [
            "dev",
            "dev robot:x",
            "dev agent_group:x",
            "dev instance:",
            "dev group:x maybe",
            "a b c d",
        ] {
            assert!(parse_stage_lines(bad).is_err(), "{bad}");
        }
        assert!(parse_stage_lines(" \n ").is_err());
    }

    #[test]
    fn a_browsers_local_time_is_read_as_utc() {
        assert_eq!(not_before_utc("2026-12-04T22:00"), "2026-12-04T22:00:00Z");
        assert_eq!(
            not_before_utc("2026-12-04T22:00:30"),
            "2026-12-04T22:00:30Z"
        );
        assert_eq!(
            not_before_utc("2026-12-04T22:00:00+01:00"),
            "2026-12-04T22:00:00+01:00"
        );
        assert_eq!(not_before_utc("soon"), "soon");
        assert_eq!(
            window_text(&WindowView {
                not_before: Some("2026-12-04T22:00:00Z".into()),
                daily: Some("22:00-02:00".into()),
            }),
            "not before 2026-12-04 22:00:00 UTC, daily 22:00-02:00 UTC"
        );
    }

    #[test]
    fn a_group_names_its_ticked_and_listed_instances_once() {
        let body = b"instances=dev&instances=prod&instances=";
        assert_eq!(
            group_instances(body, "prod, qa,\nedge"),
            ["dev", "prod", "qa", "edge"]
        );
        assert!(plausible_name("fleet-2"));
        assert!(!plausible_name("a/b"));
        assert!(!plausible_name(""));
        assert!(!plausible_name("Fleet"));
    }
}

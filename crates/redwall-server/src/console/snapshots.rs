//! An instance's snapshots page: its signed snapshots, newest first, with
//! the one it runs marked; "Take snapshot" (Members and Owners); for each
//! snapshot what changes from the running one (the API's diff, per tab:
//! nodes added, removed and changed, code as a line diff); "Roll back to
//! this" behind a confirmation step that shows that diff, and "Undo" on a
//! deployment (Owners); and the instance's recent deployments with their
//! status, step and error. Everything goes through the API's
//! `/api/v1/teams/{team}/snapshots` and the instance's `snapshots`,
//! `rollback` and `deployments`, like every console page. Owners also
//! push a snapshot to the team's git repository and pull its pull branch
//! as a new snapshot (`snapshot:git:write`); Members and Owners import a
//! pasted Node-RED flows file (`snapshot:create`; larger files and sealed
//! exports go through `redwall snapshot import`). Export, a file sealed
//! under a passphrase, stays with the CLI and the API.

use super::auth::{describe, FieldErrors};
use super::client::Failure;
use super::models::{short_time, Instance, Member, Team};
use super::page::{error_page, refused_status, render_status, Ctx, Layout};
use super::submit::{self, Done, Posted};
use crate::api::snapshots::{DeploymentView, SnapshotView};
use askama::Template;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

/// How many characters of an id or a hash the page shows.
const SHORT: usize = 8;
/// Unchanged code lines kept around each change in a line diff.
const CONTEXT_LINES: usize = 3;

/// The first characters of an id (as the instance page shows the snapshot
/// it runs).
pub fn short_id(id: &str) -> String {
    id.chars().take(SHORT).collect()
}

/// One snapshot as the page lists it.
pub struct SnapshotRow {
    pub id: String,
    pub short: String,
    pub kind: String,
    /// The kind in words.
    pub kind_label: &'static str,
    pub created: String,
    pub note: String,
    /// Who took or imported it, by name when still a member.
    pub created_by: String,
    /// The first hex digits of its flows' SHA-256.
    pub flows: String,
    /// The instance runs it.
    pub running: bool,
}

/// One deployment as the page lists it.
pub struct DeploymentRow {
    pub id: String,
    pub started: String,
    pub updated: String,
    pub snapshot: String,
    pub snapshot_short: String,
    /// What ran before: rolling back to it undoes this deployment.
    pub previous: Option<String>,
    pub previous_short: String,
    pub reason: String,
    pub status: String,
    pub step: String,
    pub error: Option<String>,
    pub requested_by: String,
    /// The deployment a rollback form just made.
    pub highlight: bool,
}

/// A diff, ready to show.
pub struct DiffShown {
    pub from_short: String,
    pub to_short: String,
    pub tabs: Vec<TabShown>,
    /// Modules, variable names and credentials, when they differ.
    pub beside: Vec<String>,
}

impl DiffShown {
    pub fn is_empty(&self) -> bool {
        self.tabs.is_empty() && self.beside.is_empty()
    }
}

pub struct TabShown {
    pub label: String,
    /// added, removed or changed.
    pub change: String,
    pub tab_fields: Vec<FieldShown>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<NodeShown>,
}

pub struct NodeShown {
    pub label: String,
    pub fields: Vec<FieldShown>,
}

pub struct FieldShown {
    pub field: String,
    pub before: String,
    pub after: String,
    /// A line diff (`+ `, `- `, `  ` lines), for code and text fields.
    pub code: Option<String>,
}

/// "Roll back to this": the snapshot and what it would change.
pub struct Confirm {
    pub snapshot: SnapshotRow,
    pub diff: Option<DiffShown>,
    pub diff_error: Option<String>,
}

/// "Compare with running": what changes from the running snapshot to this one.
pub struct Compared {
    pub snapshot: SnapshotRow,
    pub diff: Option<DiffShown>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/instance_snapshots.html")]
struct SnapshotsPage {
    layout: Layout,
    team: Team,
    instance: Instance,
    /// The running snapshot's short id.
    running: Option<String>,
    snapshots: Vec<SnapshotRow>,
    deployments: Vec<DeploymentRow>,
    /// The deployment a rollback just made, shown at the top.
    result: Option<DeploymentRow>,
    confirm: Option<Confirm>,
    compared: Option<Compared>,
    errors: FieldErrors,
    note: String,
    git: Option<GitResult>,
    import: ImportForm,
}

/// What a push to git or a pull from it answered, shown once.
pub struct GitResult {
    /// "pushed" or "pulled".
    pub action: &'static str,
    pub snapshot: String,
    pub snapshot_short: String,
    pub branch: String,
    pub commit: String,
    /// A push that found the branch already holding the snapshot.
    pub unchanged: bool,
    /// A pull: where its credentials came from.
    pub credentials: String,
}

/// The import form, as typed when it was refused.
#[derive(Default)]
pub struct ImportForm {
    pub flows: String,
    pub accept: bool,
    pub note: String,
}

/// What a form's answer adds to the page.
#[derive(Default)]
struct Extra {
    errors: FieldErrors,
    note: String,
    git: Option<GitResult>,
    import: ImportForm,
}

// ---- the API's diff, read back ----

#[derive(Deserialize)]
struct DiffJson {
    from: String,
    to: String,
    flows: FlowsJson,
    #[serde(default)]
    modules_added: Vec<(String, String)>,
    #[serde(default)]
    modules_removed: Vec<String>,
    #[serde(default)]
    env_names_added: Vec<String>,
    #[serde(default)]
    env_names_removed: Vec<String>,
    #[serde(default)]
    credentials_changed: bool,
}

#[derive(Deserialize)]
struct FlowsJson {
    #[serde(default)]
    tabs: Vec<TabJson>,
}

#[derive(Deserialize)]
struct TabJson {
    #[serde(default)]
    id: Option<String>,
    label: String,
    change: String,
    #[serde(default)]
    tab_fields: Vec<FieldJson>,
    #[serde(default)]
    added: Vec<NodeJson>,
    #[serde(default)]
    removed: Vec<NodeJson>,
    #[serde(default)]
    changed: Vec<NodeChangeJson>,
}

#[derive(Deserialize)]
struct NodeJson {
    id: String,
    #[serde(default)]
    node_type: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct NodeChangeJson {
    node: NodeJson,
    #[serde(default)]
    fields: Vec<FieldJson>,
}

#[derive(Deserialize)]
struct FieldJson {
    field: String,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    code: Option<Vec<LineJson>>,
}

#[derive(Deserialize)]
#[serde(tag = "op", content = "text", rename_all = "snake_case")]
enum LineJson {
    Same(String),
    Added(String),
    Removed(String),
    Omitted(String),
}

fn node_label(n: &NodeJson) -> String {
    let kind = if n.node_type.is_empty() {
        "node"
    } else {
        n.node_type.as_str()
    };
    match n.name.as_deref().filter(|s| !s.is_empty()) {
        Some(name) => format!("{kind} \"{name}\" ({})", n.id),
        None => format!("{kind} ({})", n.id),
    }
}

/// A line diff as text: changed lines with a few unchanged ones around
/// them, the rest left out and counted.
fn code_text(lines: &[LineJson]) -> String {
    let is_change = |l: &LineJson| matches!(l, LineJson::Added(_) | LineJson::Removed(_));
    let changes: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| is_change(l))
        .map(|(i, _)| i)
        .collect();
    let near = |i: usize| changes.iter().any(|c| c.abs_diff(i) <= CONTEXT_LINES);
    let mut out = String::new();
    let mut skipped = 0usize;
    let flush = |out: &mut String, skipped: &mut usize| {
        if *skipped > 0 {
            out.push_str(&format!("  … ({} unchanged line(s))\n", *skipped));
            *skipped = 0;
        }
    };
    for (i, line) in lines.iter().enumerate() {
        match line {
            LineJson::Same(_) if !near(i) => {
                skipped += 1;
            }
            LineJson::Same(t) => {
                flush(&mut out, &mut skipped);
                out.push_str(&format!("  {t}\n"));
            }
            LineJson::Added(t) => {
                flush(&mut out, &mut skipped);
                out.push_str(&format!("+ {t}\n"));
            }
            LineJson::Removed(t) => {
                flush(&mut out, &mut skipped);
                out.push_str(&format!("- {t}\n"));
            }
            LineJson::Omitted(t) => {
                flush(&mut out, &mut skipped);
                out.push_str(&format!("  {t}\n"));
            }
        }
    }
    flush(&mut out, &mut skipped);
    out
}

fn field_shown(f: &FieldJson) -> FieldShown {
    let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".to_string());
    FieldShown {
        field: f.field.clone(),
        before: side(&f.before),
        after: side(&f.after),
        code: f.code.as_deref().map(code_text),
    }
}

fn diff_shown(d: DiffJson) -> DiffShown {
    let tabs = d
        .flows
        .tabs
        .iter()
        .map(|t| TabShown {
            label: match &t.id {
                Some(id) if *id != t.label => format!("{} ({id})", t.label),
                _ => t.label.clone(),
            },
            change: t.change.clone(),
            tab_fields: t.tab_fields.iter().map(field_shown).collect(),
            added: t.added.iter().map(node_label).collect(),
            removed: t.removed.iter().map(node_label).collect(),
            changed: t
                .changed
                .iter()
                .map(|c| NodeShown {
                    label: node_label(&c.node),
                    fields: c.fields.iter().map(field_shown).collect(),
                })
                .collect(),
        })
        .collect();
    let mut beside = Vec::new();
    for (name, version) in &d.modules_added {
        beside.push(format!("+ module {name}@{version}"));
    }
    for name in &d.modules_removed {
        beside.push(format!("- module {name}"));
    }
    for name in &d.env_names_added {
        beside.push(format!("+ environment variable {name}"));
    }
    for name in &d.env_names_removed {
        beside.push(format!("- environment variable {name}"));
    }
    if d.credentials_changed {
        beside.push("~ the credentials differ (their values are never shown)".to_string());
    }
    DiffShown {
        from_short: short_id(&d.from),
        to_short: short_id(&d.to),
        tabs,
        beside,
    }
}

// ---- the page ----

fn instance_api(team: &str, instance: &str) -> String {
    format!("/api/v1/teams/{team}/instances/{instance}")
}

fn page_path(team: &str, instance: &str) -> String {
    format!("/teams/{team}/instances/{instance}/snapshots")
}

fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "snapshot_taken" => "The snapshot was taken.",
        "rolled_back" => "The rollback is done: the instance runs the snapshot. What ran before is kept as a snapshot; Undo on the deployment rolls back to it.",
        "rollback_failed" => "The rollback failed; the instance keeps what it ran. The deployment below says why.",
        "snapshot_imported" => "The flows file was imported as a new snapshot. It is not deployed: roll back to it to deploy it.",
        other => return super::home::notice(Some(other)),
    })
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "automatic" => "deploy from the editor",
        "manual" => "taken by hand",
        "imported" => "imported",
        "before_rollback" => "before a rollback",
        _ => "snapshot",
    }
}

fn user_name(id: &Option<String>, members: &HashMap<String, String>) -> String {
    match id {
        Some(id) => members
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("former member {}", short_id(id))),
        None => "Redwall".to_string(),
    }
}

fn snapshot_row(
    s: &SnapshotView,
    running: Option<&str>,
    members: &HashMap<String, String>,
) -> SnapshotRow {
    SnapshotRow {
        id: s.id.clone(),
        short: short_id(&s.id),
        kind: s.kind.clone(),
        kind_label: kind_label(&s.kind),
        created: short_time(&s.created_at),
        note: s.note.clone(),
        created_by: user_name(&s.created_by, members),
        flows: s.flows_sha256.chars().take(12).collect(),
        running: running == Some(s.id.as_str()),
    }
}

fn deployment_row(
    d: &DeploymentView,
    highlight: Option<&str>,
    members: &HashMap<String, String>,
) -> DeploymentRow {
    DeploymentRow {
        id: d.id.clone(),
        started: short_time(&d.created_at),
        updated: short_time(&d.updated_at),
        snapshot: d.snapshot_id.clone(),
        snapshot_short: short_id(&d.snapshot_id),
        previous: d.previous_snapshot_id.clone(),
        previous_short: d
            .previous_snapshot_id
            .as_deref()
            .map(short_id)
            .unwrap_or_default(),
        reason: d.reason.clone(),
        status: d.status.clone(),
        step: d.step.clone(),
        error: d.error.clone(),
        requested_by: user_name(&d.requested_by, members),
        highlight: highlight == Some(d.id.as_str()),
    }
}

/// The diff from `from` to `to`, or why it cannot be shown.
async fn diff(ctx: &Ctx, team: &str, from: &str, to: &str) -> Result<DiffShown, String> {
    let path = format!("/api/v1/teams/{team}/snapshots/{from}/diff?to={to}");
    match ctx.api.get::<DiffJson>(&path).await {
        Ok(d) => Ok(diff_shown(d)),
        Err(f) => Err(describe(&f)),
    }
}

/// A query parameter that names a snapshot or deployment (an id, else none).
fn id_param(ctx: &Ctx, name: &str) -> Option<String> {
    ctx.query_param(name)
        .filter(|id| crate::ids::looks_like_id(id))
}

async fn snapshots_page(
    ctx: &Ctx,
    team_id: &str,
    instance_id: &str,
    extra: Extra,
    status: StatusCode,
) -> Response {
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
    let base = instance_api(team_id, instance_id);
    let instance = match ctx.api.get::<Instance>(&base).await {
        Ok(i) => i,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let (list_path, deployments_path, members_path) = (
        format!("/api/v1/teams/{team_id}/snapshots?instance={}", instance.id),
        format!("{base}/deployments"),
        format!("/api/v1/teams/{team_id}/members"),
    );
    let (listed, deployed, members) = futures::join!(
        ctx.api.get::<Vec<SnapshotView>>(&list_path),
        ctx.api.get::<Vec<DeploymentView>>(&deployments_path),
        ctx.api.get::<Vec<Member>>(&members_path),
    );
    let listed = match listed {
        Ok(l) => l,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let deployed = match deployed {
        Ok(d) => d,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let members: HashMap<String, String> = members
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.user_id, m.username))
        .collect();
    let running = instance.running_snapshot.clone();
    let snapshots: Vec<SnapshotRow> = listed
        .iter()
        .map(|s| snapshot_row(s, running.as_deref(), &members))
        .collect();
    let highlight = id_param(ctx, "deployment");
    let deployments: Vec<DeploymentRow> = deployed
        .iter()
        .map(|d| deployment_row(d, highlight.as_deref(), &members))
        .collect();
    let result = deployed
        .iter()
        .find(|d| highlight.as_deref() == Some(d.id.as_str()))
        .map(|d| deployment_row(d, highlight.as_deref(), &members));

    let find = |id: &str| {
        listed
            .iter()
            .find(|s| s.id == id)
            .map(|s| snapshot_row(s, running.as_deref(), &members))
    };
    let compared = match id_param(ctx, "compare").and_then(|id| find(&id)) {
        Some(snapshot) => {
            let (diff, error) = match running.as_deref() {
                Some(from) => match diff(ctx, team_id, from, &snapshot.id).await {
                    Ok(d) => (Some(d), None),
                    Err(e) => (None, Some(e)),
                },
                None => (
                    None,
                    Some(
                        "The instance runs no recorded snapshot yet, so there is nothing to compare with."
                            .to_string(),
                    ),
                ),
            };
            Some(Compared {
                snapshot,
                diff,
                error,
            })
        }
        None => None,
    };
    let confirm = match id_param(ctx, "rollback").and_then(|id| find(&id)) {
        Some(snapshot) if team.can("snapshot:deploy") => {
            let (diff, diff_error) = match running.as_deref() {
                Some(from) if from != snapshot.id => {
                    match diff(ctx, team_id, from, &snapshot.id).await {
                        Ok(d) => (Some(d), None),
                        Err(e) => (None, Some(e)),
                    }
                }
                _ => (None, None),
            };
            Some(Confirm {
                snapshot,
                diff,
                diff_error,
            })
        }
        _ => None,
    };
    let layout = Layout::new(format!("{} · Snapshots", instance.name), Some(&me), "home")
        .with_notice(notice(ctx.query_param("done").as_deref()));
    render_status(
        status,
        &SnapshotsPage {
            layout,
            team,
            running: running.as_deref().map(short_id),
            instance,
            snapshots,
            deployments,
            result,
            confirm,
            compared,
            errors: extra.errors,
            note: extra.note,
            git: extra.git,
            import: extra.import,
        },
    )
}

pub async fn page(ctx: Ctx, Path((team, instance)): Path<(String, String)>) -> Response {
    snapshots_page(&ctx, &team, &instance, Extra::default(), StatusCode::OK).await
}

/// A refusal of a form on this page, said for people.
fn refusal(f: &Failure, what: &str) -> String {
    if f.status == StatusCode::FORBIDDEN && f.is("forbidden") {
        return format!("Only the team's Owners may {what}.");
    }
    describe(f)
}

/// "Take snapshot", with a note.
pub async fn create(
    ctx: Ctx,
    Path((team, instance)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let ctx = &ctx;
    let (team, instance) = (team.as_str(), instance.as_str());
    let here = page_path(team, instance);
    submit::signed_in(ctx, body, |p: Posted| async move {
        // A browser sends a textarea's line breaks as CR LF.
        let note = p.form.raw("note").trim().replace("\r\n", "\n");
        let path = format!("{}/snapshots", instance_api(team, instance));
        match p
            .api
            .act(Method::POST, &path, Some(&json!({ "note": note })))
            .await
        {
            Ok(_) => Done::Redirect(format!("{here}?done=snapshot_taken#snapshots")),
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let mut errors = FieldErrors::from_failure(&f, &[("invalid_note", "note")]);
                if errors.form.is_some() {
                    errors.form = Some(refusal(&f, "take snapshots"));
                }
                let extra = Extra {
                    errors,
                    note,
                    ..Extra::default()
                };
                Done::Again(
                    snapshots_page(ctx, team, instance, extra, refused_status(f.status)).await,
                )
            }
        }
    })
    .await
}

/// "Roll back to this" (after its confirmation step) and "Undo": loads the
/// snapshot into the instance, then shows how the deployment ended.
pub async fn rollback(
    ctx: Ctx,
    Path((team, instance, id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let ctx = &ctx;
    let (team, instance) = (team.as_str(), instance.as_str());
    if !crate::ids::looks_like_id(&id) {
        return error_page(&Failure::not_found(), None);
    }
    let here = page_path(team, instance);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let path = format!("{}/rollback", instance_api(team, instance));
        match p
            .api
            .post::<DeploymentView>(Method::POST, &path, &json!({ "snapshot": id }))
            .await
        {
            Ok(d) => {
                let done = if d.status == "failed" {
                    "rollback_failed"
                } else {
                    "rolled_back"
                };
                Done::Redirect(format!("{here}?done={done}&deployment={}#result", d.id))
            }
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let extra = Extra {
                    errors: FieldErrors {
                        form: Some(refusal(&f, "roll an instance back")),
                        fields: Vec::new(),
                    },
                    ..Extra::default()
                };
                Done::Again(
                    snapshots_page(ctx, team, instance, extra, refused_status(f.status)).await,
                )
            }
        }
    })
    .await
}

/// The page again with a message for the whole page.
async fn again(ctx: &Ctx, team: &str, instance: &str, f: Failure, what: &str) -> Done {
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
    Done::Again(snapshots_page(ctx, team, instance, extra, refused_status(f.status)).await)
}

/// The answer of a push or pull, as the page shows it once.
#[derive(Deserialize)]
struct GitAnswer {
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    snapshot: Option<SnapshotView>,
    branch: String,
    commit: String,
    #[serde(default = "yes")]
    changed: bool,
    #[serde(default)]
    credentials: String,
}

fn yes() -> bool {
    true
}

fn git_result(action: &'static str, a: GitAnswer) -> GitResult {
    let snapshot = a
        .snapshot_id
        .or(a.snapshot.map(|s| s.id))
        .unwrap_or_default();
    GitResult {
        action,
        snapshot_short: short_id(&snapshot),
        snapshot,
        branch: a.branch,
        commit: a.commit,
        unchanged: !a.changed,
        credentials: match a.credentials.as_str() {
            "sealed" => "the repository's, sealed for this team".to_string(),
            "kept_from_instance" => "kept from the instance (the repository has none)".to_string(),
            _ => String::new(),
        },
    }
}

/// Shows a git push or pull once; a second submit goes back to the list.
async fn git_done(ctx: &Ctx, team: &str, instance: &str, result: GitResult) -> Done {
    let extra = Extra {
        git: Some(result),
        ..Extra::default()
    };
    Done::ShownOnce {
        page: snapshots_page(ctx, team, instance, extra, StatusCode::OK).await,
        then: format!("{}#snapshots", page_path(team, instance)),
    }
}

/// "Push to git": the snapshot, checked whole, to the team's push branch.
pub async fn push(
    ctx: Ctx,
    Path((team, instance, id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    if !crate::ids::looks_like_id(&id) {
        return error_page(&Failure::not_found(), None);
    }
    let path = format!("/api/v1/teams/{team}/snapshots/{id}/git/push");
    git_action(
        &ctx,
        &team,
        &instance,
        body,
        &path,
        "pushed",
        "push snapshots to git",
    )
    .await
}

/// A git form: one API call, then the page with its result (`action`:
/// pushed or pulled) or the refusal (`what` says what was refused).
async fn git_action(
    ctx: &Ctx,
    team: &str,
    instance: &str,
    body: Bytes,
    path: &str,
    action: &'static str,
    what: &'static str,
) -> Response {
    submit::signed_in(ctx, body, |p: Posted| async move {
        match p
            .api
            .post::<GitAnswer>(Method::POST, path, &json!({}))
            .await
        {
            Ok(a) => git_done(ctx, team, instance, git_result(action, a)).await,
            Err(f) => again(ctx, team, instance, f, what).await,
        }
    })
    .await
}

/// "Download the sealed export": the API's file, handed to the browser as
/// a download (once: a second submit of the form goes back to the page).
pub async fn export(
    ctx: Ctx,
    Path((team, instance)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let ctx = &ctx;
    let (team, instance) = (team.as_str(), instance.as_str());
    submit::signed_in(ctx, body, |p: Posted| async move {
        let id = p.form.text("snapshot");
        if !crate::ids::looks_like_id(&id) {
            return Done::Again(error_page(&Failure::not_found(), None));
        }
        let path = format!("/api/v1/teams/{team}/snapshots/{id}/export");
        let passphrase = p.form.raw("passphrase");
        match p
            .api
            .act(
                Method::POST,
                &path,
                Some(&json!({ "passphrase": passphrase })),
            )
            .await
        {
            Ok(reply) => {
                let mut download = Response::new(axum::body::Body::from(reply.body.clone()));
                for name in [
                    axum::http::header::CONTENT_TYPE,
                    axum::http::header::CONTENT_DISPOSITION,
                ] {
                    if let Some(v) = reply.headers.get(&name) {
                        download.headers_mut().insert(name, v.clone());
                    }
                }
                Done::ShownOnce {
                    page: download,
                    then: format!("{}#snapshots", page_path(team, instance)),
                }
            }
            Err(f) => again(ctx, team, instance, f, "export snapshots").await,
        }
    })
    .await
}

/// "Pull from git": the pull branch's head as a new snapshot (not deployed).
pub async fn git_pull(
    ctx: Ctx,
    Path((team, instance)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let path = format!("{}/git/pull", instance_api(&team, &instance));
    git_action(
        &ctx,
        &team,
        &instance,
        body,
        &path,
        "pulled",
        "pull snapshots from git",
    )
    .await
}

/// "Import": a pasted Node-RED flows file (JSON), base64 as the API takes
/// it, with the box for credentials in the clear and a note.
pub async fn import(
    ctx: Ctx,
    Path((team, instance)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    use base64::Engine as _;
    let ctx = &ctx;
    let (team, instance) = (team.as_str(), instance.as_str());
    let here = page_path(team, instance);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let typed = ImportForm {
            flows: p.form.raw("flows"),
            accept: p.form.checked("accept_plaintext_credentials"),
            note: p.form.raw("import_note").trim().replace("\r\n", "\n"),
        };
        let refused = |errors: FieldErrors, status: StatusCode, typed: ImportForm| async move {
            let extra = Extra {
                errors,
                import: typed,
                ..Extra::default()
            };
            Done::Again(snapshots_page(ctx, team, instance, extra, refused_status(status)).await)
        };
        if typed.flows.trim().is_empty() {
            let errors = FieldErrors {
                form: None,
                fields: vec![(
                    "flows",
                    "Paste a Node-RED flows file (JSON), as the editor's Export gives it."
                        .to_string(),
                )],
            };
            return refused(errors, StatusCode::UNPROCESSABLE_ENTITY, typed).await;
        }
        let request = json!({
            "file": base64::engine::general_purpose::STANDARD.encode(typed.flows.as_bytes()),
            "accept_plaintext_credentials": typed.accept,
            "note": typed.note,
        });
        let path = format!("{}/snapshots/import", instance_api(team, instance));
        match p
            .api
            .post::<serde_json::Value>(Method::POST, &path, &request)
            .await
        {
            Ok(answer) => {
                let anchor = answer["snapshot"]["id"]
                    .as_str()
                    .filter(|id| crate::ids::looks_like_id(id))
                    .map(|id| format!("snapshot-{id}"))
                    .unwrap_or_else(|| "snapshots".to_string());
                Done::Redirect(format!("{here}?done=snapshot_imported#{anchor}"))
            }
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let mut errors = FieldErrors::from_failure(
                    &f,
                    &[
                        ("plaintext_credentials", "flows"),
                        ("invalid_import", "flows"),
                        ("invalid_flows", "flows"),
                        ("invalid_note", "import_note"),
                    ],
                );
                if errors.form.is_some() {
                    errors.form = Some(refusal(&f, "import snapshots"));
                }
                refused(errors, f.status, typed).await
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
    fn a_line_diff_keeps_changes_with_a_little_context() {
        let mut lines: Vec<LineJson> = (1..=10)
            .map(|i| LineJson::Same(format!("line {i}")))
            .collect();
        lines.insert(8, LineJson::Removed("old".into()));
        lines.insert(9, LineJson::Added("new".into()));
        let text = code_text(&lines);
        assert_eq!(
            text,
            "  … (5 unchanged line(s))\n  line 6\n  line 7\n  line 8\n- old\n+ new\n  line 9\n  line 10\n"
        );
    }

    const TEAM: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const INSTANCE: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const RUNNING: &str = "cccccccccccccccccccccccccccccccc";
    const OTHER: &str = "dddddddddddddddddddddddddddddddd";

    fn hostile_diff() -> DiffShown {
        diff_shown(
            serde_json::from_value(json!({
                "from": RUNNING, "to": OTHER,
                "flows": {"tabs": [{
                    "id": "t1", "label": "<b>Line</b>", "change": "changed", "tab_fields": [],
                    "added": [{"id": "n2", "node_type": "debug", "name": "<script>alert(1)</script>"}],
                    "removed": [],
                    "changed": [{"node": {"id": "n1", "node_type": "function", "name": "f"},
                        "fields": [{"field": "func", "before": null, "after": null, "code": [
                            {"op": "removed", "text": "return \"</pre><img src=x>\";"},
                            {"op": "added", "text": "return 1;"}]}]}]
                }]}
            }))
            .unwrap(),
        )
    }

    fn render_page(permissions: &[&str], confirm: bool) -> String {
        let me: super::super::page::Me = serde_json::from_value(json!({
            "id": "u1", "username": "olga", "is_admin": false, "mfa_enabled": false,
            "csrf_token": "tok"
        }))
        .unwrap();
        let team: Team = serde_json::from_value(json!({
            "id": TEAM, "name": "Mill", "require_mfa": false, "allowed_cidrs": [],
            "created_at": "2026-01-01T00:00:00Z", "my_role": "owner",
            "my_permissions": permissions
        }))
        .unwrap();
        let instance: Instance = serde_json::from_value(json!({
            "id": INSTANCE, "name": "mill", "desired_state": "running",
            "status": {"state": "running"}, "url": "http://mill.localhost/",
            "editor_url": "http://mill.localhost/editor/",
            "options": {"allow_palette_install": false, "allow_function_modules": false},
            "created_at": "2026-01-01T00:00:00Z", "running_snapshot": RUNNING
        }))
        .unwrap();
        let view = |id: &str, note: &str| SnapshotView {
            id: id.to_string(),
            instance_id: Some(INSTANCE.to_string()),
            kind: "manual".to_string(),
            note: note.to_string(),
            content_sha256: "ab".repeat(32),
            flows_sha256: "cd".repeat(32),
            created_by: Some("u1".to_string()),
            created_at: "2026-01-02T03:04:05.678Z".to_string(),
        };
        let members = HashMap::from([("u1".to_string(), "olga".to_string())]);
        let rows = [view(OTHER, "<i>note</i>"), view(RUNNING, "")];
        let snapshots = rows
            .iter()
            .map(|s| snapshot_row(s, Some(RUNNING), &members))
            .collect();
        let done = DeploymentView {
            id: "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee".to_string(),
            instance_id: Some(INSTANCE.to_string()),
            agent_id: None,
            snapshot_id: RUNNING.to_string(),
            previous_snapshot_id: Some(OTHER.to_string()),
            reason: "rollback".to_string(),
            status: "done".to_string(),
            step: "the instance runs the snapshot".to_string(),
            error: None,
            requested_by: Some("u1".to_string()),
            created_at: "2026-01-02T03:04:05Z".to_string(),
            updated_at: "2026-01-02T03:04:06Z".to_string(),
        };
        let page = SnapshotsPage {
            layout: Layout::new("mill · Snapshots", Some(&me), "home"),
            team,
            instance,
            running: Some(short_id(RUNNING)),
            snapshots,
            deployments: vec![deployment_row(&done, None, &members)],
            result: None,
            confirm: confirm.then(|| Confirm {
                snapshot: snapshot_row(&rows[0], Some(RUNNING), &members),
                diff: Some(hostile_diff()),
                diff_error: None,
            }),
            compared: Some(Compared {
                snapshot: snapshot_row(&rows[0], Some(RUNNING), &members),
                diff: Some(hostile_diff()),
                error: None,
            }),
            errors: FieldErrors::default(),
            note: String::new(),
            git: Some(GitResult {
                action: "pushed",
                snapshot: OTHER.to_string(),
                snapshot_short: short_id(OTHER),
                branch: "<b>review</b>".to_string(),
                commit: "0123abcd".to_string(),
                unchanged: false,
                credentials: String::new(),
            }),
            import: ImportForm {
                flows: "[{\"id\":\"</textarea><script>x</script>\"}]".to_string(),
                accept: false,
                note: "<i>imported".to_string(),
            },
        };
        page.render().unwrap()
    }

    #[test]
    fn the_page_escapes_the_diff_and_offers_rollback_to_owners_only() {
        let owner = render_page(
            &[
                "snapshot:read",
                "snapshot:create",
                "snapshot:deploy",
                "snapshot:git:write",
            ],
            true,
        );
        for hostile in [
            "<script>alert(1)",
            "<img src=x>",
            "<b>Line",
            "<i>note",
            "<b>review",
            "</textarea><script>",
            "<i>imported",
        ] {
            assert!(!owner.contains(hostile), "{hostile} unescaped");
        }
        assert!(owner.contains("&#60;script&#62;alert(1)"), "{owner}");
        assert!(owner.contains("+ return 1;"), "{owner}");
        assert!(owner.contains(r#"data-testid="rollback-confirm""#));
        assert!(owner.contains(&format!(
            r#"action="/teams/{TEAM}/instances/{INSTANCE}/snapshots/{OTHER}/rollback""#
        )));
        assert!(owner.contains(r#"data-testid="undo""#));
        assert!(owner.contains(r#"data-testid="running""#));
        assert!(owner.contains("Roll back to this"));
        assert!(owner.contains("Compare with running"));
        assert!(owner.contains(r#"data-testid="git-pull""#));
        assert!(owner.contains(r#"data-testid="git-push""#));
        assert!(owner.contains(r#"data-testid="git-commit">0123abcd<"#));
        assert!(owner.contains(r#"data-testid="import-form""#));

        let member = render_page(&["snapshot:read", "snapshot:create"], false);
        assert!(!member.contains("/rollback"), "{member}");
        assert!(!member.contains("Roll back to this"));
        assert!(!member.contains(r#"data-testid="undo""#));
        assert!(member.contains(r#"data-testid="take-snapshot""#));
        assert!(member.contains(r#"data-testid="compare""#));
        assert!(member.contains(r#"data-testid="import-form""#));
        assert!(!member.contains(r#"data-testid="git-pull""#));
        assert!(!member.contains(r#"data-testid="git-push""#));
        assert!(!member.contains("/push\""));
        let reader = render_page(&["snapshot:read"], false);
        assert!(!reader.contains(r#"data-testid="take-snapshot""#));
        assert!(!reader.contains(r#"data-testid="import-form""#));
    }

    #[test]
    fn the_api_diff_reads_back_per_tab() {
        let d: DiffJson = serde_json::from_value(json!({
            "from": "0123456789abcdef0123456789abcdef",
            "to": "fedcba9876543210fedcba9876543210",
            "flows": {"tabs": [{
                "id": "t1", "label": "Line 1", "change": "changed", "tab_fields": [],
                "added": [{"id": "n2", "node_type": "debug", "name": null}],
                "removed": [],
                "changed": [{"node": {"id": "n1", "node_type": "function", "name": "scale"},
                    "fields": [{"field": "func", "before": "\"a\"", "after": "\"b\"",
                        "code": [{"op": "removed", "text": "a"}, {"op": "added", "text": "b"}]}]}]
            }]},
            "modules_added": [["node-red-contrib-x", "1.2.3"]],
            "modules_removed": [], "env_names_added": [], "env_names_removed": ["OLD"],
            "credentials_changed": true,
            "text": "ignored"
        }))
        .unwrap();
        let shown = diff_shown(d);
        assert_eq!(shown.from_short, "01234567");
        assert_eq!(shown.tabs[0].label, "Line 1 (t1)");
        assert_eq!(shown.tabs[0].added, ["debug (n2)"]);
        let changed = &shown.tabs[0].changed[0];
        assert_eq!(changed.label, "function \"scale\" (n1)");
        assert_eq!(changed.fields[0].code.as_deref(), Some("- a\n+ b\n"));
        assert_eq!(
            shown.beside,
            [
                "+ module node-red-contrib-x@1.2.3",
                "- environment variable OLD",
                "~ the credentials differ (their values are never shown)"
            ]
        );
    }
}

//! `redwall group ...`, `redwall deploy ...` and `redwall pipeline ...`: a
//! thin client of `/api/v1/teams/{team}/groups`, `.../deploys`,
//! `.../pipelines` and `.../promotions` on the serving Redwall (the
//! instances that take the deploys live in that process).
//!
//! Deploy windows are UTC throughout: `--window 22:00-02:00` is read as UTC
//! and every time printed is UTC. Nothing this command prints is secret.

use crate::client::{
    finish, items, print_json_or, table, text, ApiClient, Connection, Failure, Outcome,
};
use clap::{ArgGroup, Args, Subcommand};
use redwall_policy::deploy_window::DailyWindow;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// How often the deployments' progress is read while a deploy runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(700);

/// How many characters of a snapshot id a table shows.
const SHORT: usize = 8;

/// Where the server is, which team, and how to print: shared by the three
/// commands.
#[derive(Args)]
pub struct Common {
    #[command(flatten)]
    conn: Connection,
    /// The team's id.
    #[arg(long, global = true, env = "REDWALL_TEAM")]
    team: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args)]
pub struct GroupArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand)]
enum GroupCommand {
    /// The team's instance groups and their instances.
    List,
    /// Create or replace the group NAME with exactly these instances.
    Set {
        #[arg(value_name = "NAME")]
        name: String,
        /// The team's instances (names or ids).
        #[arg(value_name = "INSTANCE", required = true, num_args = 1..)]
        instances: Vec<String>,
    },
    /// Delete a group (its instances are not touched).
    Delete {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// When a deploy may start; both optional, both UTC.
#[derive(Args, Debug, Default)]
struct WindowFlags {
    /// Not before this time (RFC 3339, e.g. 2026-12-04T22:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    not_before: Option<String>,
    /// Only inside this daily window, UTC (e.g. 22:00-02:00, which wraps
    /// past midnight).
    #[arg(long, value_name = "HH:MM-HH:MM")]
    window: Option<String>,
}

impl WindowFlags {
    /// The API's `window`, or none to deploy at once.
    fn body(&self) -> Outcome<Option<Value>> {
        if self.not_before.is_none() && self.window.is_none() {
            return Ok(None);
        }
        if let Some(w) = &self.window {
            DailyWindow::parse(w)
                .map_err(|e| Failure::usage(format!("--window: {}", e.message)))?;
        }
        if let Some(t) = &self.not_before {
            if redwall_hub::clock::parse_rfc3339(t).is_none() {
                return Err(Failure::usage(format!(
                    "--not-before {t}: not an RFC 3339 time (e.g. 2026-12-04T22:00:00Z)"
                )));
            }
        }
        Ok(Some(json!({
            "not_before": self.not_before,
            "daily": self.window.as_deref().map(str::trim),
        })))
    }

    /// "not before 2026-12-04T22:00:00Z, daily 22:00-02:00", or empty
    /// (callers say UTC once).
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.not_before {
            parts.push(format!("not before {t}"));
        }
        if let Some(w) = &self.window {
            parts.push(format!("daily {}", w.trim()));
        }
        parts.join(", ")
    }
}

#[derive(Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["instance", "group", "agent", "agent_group"])
))]
pub struct DeployArgs {
    #[command(flatten)]
    common: Common,
    /// The snapshot to deploy (its id; `redwall snapshot list` shows them).
    #[arg(value_name = "SNAPSHOT_ID")]
    snapshot: String,
    /// Deploy to this instance (its name or id).
    #[arg(long, value_name = "NAME")]
    instance: Option<String>,
    /// Deploy to this group's instances.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Deploy to this remote agent (its name or id).
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Deploy to every agent of this agent group.
    #[arg(long, value_name = "NAME")]
    agent_group: Option<String>,
    /// Only this instance or agent of the target (repeatable); all when absent.
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// How long to follow agents' answers before leaving them to arrive
    /// (an offline agent takes the snapshot when it connects again).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    wait: u64,
    #[command(flatten)]
    window: WindowFlags,
}

#[derive(Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: PipelineCommand,
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// The team's pipelines and their stages, in order.
    List,
    /// Create a pipeline: its stages in the order given.
    Create {
        #[arg(value_name = "NAME")]
        name: String,
        /// A stage: NAME=instance:INSTANCE or NAME=group:GROUP, with
        /// `:approval` at the end when promotions into it wait for an Owner
        /// other than the promoter (repeatable; stages keep their order).
        #[arg(long = "stage", value_name = "STAGE", required = true)]
        stages: Vec<String>,
    },
    /// Delete a pipeline.
    Delete {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Promote a snapshot into a stage (the previous stage must run it);
    /// a stage that needs approval waits for another Owner.
    Promote {
        #[arg(value_name = "PIPELINE")]
        pipeline: String,
        #[arg(value_name = "SNAPSHOT_ID")]
        snapshot: String,
        /// The stage's name.
        #[arg(long, value_name = "STAGE")]
        to: String,
        #[command(flatten)]
        window: WindowFlags,
    },
    /// The pipeline's promotions, newest first.
    Promotions {
        #[arg(value_name = "PIPELINE")]
        pipeline: String,
    },
    /// Approve a promotion someone else made, which then deploys (Owners).
    Approve {
        #[arg(value_name = "PROMOTION_ID")]
        id: String,
    },
}

pub async fn run_group(args: GroupArgs) -> ExitCode {
    finish(group(args).await)
}

pub async fn run_deploy(args: DeployArgs) -> ExitCode {
    finish(deploy(args).await)
}

pub async fn run_pipeline(args: PipelineArgs) -> ExitCode {
    finish(pipeline(args).await)
}

struct Ctx {
    api: ApiClient,
    team: String,
    json: bool,
}

impl Ctx {
    fn new(common: Common) -> Outcome<Ctx> {
        let team = common
            .team
            .ok_or_else(|| Failure::usage("name the team with --team <id> (or REDWALL_TEAM)"))?;
        Ok(Ctx {
            api: ApiClient::new(&common.conn)?,
            team,
            json: common.json,
        })
    }

    fn url(&self, rest: &[&str]) -> reqwest::Url {
        let mut segments = vec!["teams", self.team.as_str()];
        segments.extend_from_slice(rest);
        self.api.url(&segments)
    }

    async fn get(&self, rest: &[&str]) -> Outcome<Value> {
        self.api.call(Method::GET, self.url(rest), None).await
    }

    /// The raw JSON with --json, else `human`.
    fn print(&self, value: &Value, human: impl FnOnce(&Value)) {
        print_json_or(self.json, value, human);
    }

    /// An Owner-only refusal, said for this command.
    fn owners_only(&self, what: &str, message: String) -> String {
        format!("only an Owner of team {} may {what} ({message})", self.team)
    }

    /// Instance ids to names. Best effort: on failure the ids are shown.
    async fn instance_names(&self) -> HashMap<String, String> {
        let Ok(list) = self.get(&["instances"]).await else {
            return HashMap::new();
        };
        items(&list)
            .iter()
            .filter_map(|i| Some((i["id"].as_str()?.to_string(), text(&i["name"]))))
            .collect()
    }

    /// User ids to names, from the team's members. Best effort.
    async fn member_names(&self) -> HashMap<String, String> {
        let Ok(list) = self.get(&["members"]).await else {
            return HashMap::new();
        };
        items(&list)
            .iter()
            .filter_map(|m| Some((m["user_id"].as_str()?.to_string(), text(&m["username"]))))
            .collect()
    }

    /// The pipeline named (or with this id), if the team has it.
    async fn find_pipeline(&self, name: &str) -> Outcome<Option<Value>> {
        let list = self.get(&["pipelines"]).await?;
        Ok(items(&list)
            .iter()
            .find(|p| p["name"] == name || p["id"] == name)
            .cloned())
    }

    fn no_such_pipeline(&self, name: &str, code: String) -> Failure {
        Failure::Api {
            message: format!(
                "team {} has no pipeline {name}; `redwall pipeline list` shows them",
                self.team
            ),
            code,
        }
    }

    fn no_such_snapshot(&self, id: &str, code: String) -> Failure {
        Failure::Api {
            message: format!(
                "team {} has no snapshot {id}; `redwall snapshot list` shows the team's snapshots",
                self.team
            ),
            code,
        }
    }

    /// Whether the team has the snapshot (a failure to tell counts as yes,
    /// so the message then blames the other names).
    async fn has_snapshot(&self, id: &str) -> bool {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        match self.get(&["snapshots", id]).await {
            Err(Failure::Api { code, .. }) => code != "not_found",
            _ => true,
        }
    }
}

// ---- groups ----

async fn group(args: GroupArgs) -> Outcome<()> {
    let ctx = Ctx::new(args.common)?;
    match args.command {
        GroupCommand::List => {
            let v = ctx.get(&["groups"]).await?;
            if ctx.json {
                ctx.print(&v, |_| {});
                return Ok(());
            }
            let names = if items(&v).is_empty() {
                HashMap::new()
            } else {
                ctx.instance_names().await
            };
            let rows = items(&v)
                .iter()
                .map(|g| {
                    let mut members: Vec<String> = items(&g["instances"])
                        .iter()
                        .map(|id| instance_label(id, &names))
                        .collect();
                    members.sort();
                    vec![
                        text(&g["name"]),
                        if members.is_empty() {
                            "(none)".to_string()
                        } else {
                            members.join(", ")
                        },
                    ]
                })
                .collect();
            table(&["NAME", "INSTANCES"], rows);
        }
        GroupCommand::Set { name, instances } => {
            let body = json!({ "instances": instances });
            let v = match ctx
                .api
                .call(Method::PUT, ctx.url(&["groups", &name]), Some(&body))
                .await
            {
                Err(Failure::Api { code, message }) if code == "forbidden" => {
                    return Err(Failure::Api {
                        message: ctx.owners_only("change instance groups", message),
                        code,
                    })
                }
                other => other?,
            };
            ctx.print(&v, |v| {
                println!(
                    "group {} holds {} instance(s): {}",
                    text(&v["name"]),
                    items(&v["instances"]).len(),
                    instances.join(", ")
                );
            });
        }
        GroupCommand::Delete { name } => {
            match ctx
                .api
                .call(Method::DELETE, ctx.url(&["groups", &name]), None)
                .await
            {
                Err(Failure::Api { code, .. }) if code == "not_found" => {
                    return Err(Failure::Api {
                        message: format!(
                            "team {} has no group {name}; `redwall group list` shows them",
                            ctx.team
                        ),
                        code,
                    })
                }
                Err(Failure::Api { code, message }) if code == "forbidden" => {
                    return Err(Failure::Api {
                        message: ctx.owners_only("change instance groups", message),
                        code,
                    })
                }
                other => other?,
            };
            if !ctx.json {
                println!("deleted group {name}");
            }
        }
    }
    Ok(())
}

// ---- deploys ----

/// The API's target: `{"kind": "instance" | "group" | "agent" |
/// "agent_group", "name": ...}`.
fn target_json(args: &DeployArgs) -> Value {
    let named = [
        ("instance", &args.instance),
        ("group", &args.group),
        ("agent", &args.agent),
        ("agent_group", &args.agent_group),
    ];
    named
        .iter()
        .find_map(|(kind, name)| {
            name.as_deref()
                .map(|name| json!({ "kind": kind, "name": name }))
        })
        .unwrap_or(Value::Null)
}

/// Whether the target names remote agents.
fn names_agents(target: &Value) -> bool {
    target["kind"] == "agent" || target["kind"] == "agent_group"
}

/// Follows agents' deployments until each has answered or `wait` runs
/// out; returns them as they stand.
async fn follow_agents(ctx: &Ctx, mut list: Vec<Value>, wait: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut shown: HashMap<String, String> = HashMap::new();
    loop {
        let pending: Vec<usize> = (0..list.len())
            .filter(|i| matches!(list[*i]["status"].as_str(), Some("deploying")))
            .collect();
        if pending.is_empty() || tokio::time::Instant::now() >= deadline {
            return list;
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
        for i in pending {
            let agent = text(&list[i]["agent_id"]);
            let id = text(&list[i]["id"]);
            let Ok(recent) = ctx.get(&["agents", &agent, "deployments"]).await else {
                continue;
            };
            if let Some(now) = items(&recent).iter().find(|d| d["id"] == id.as_str()) {
                list[i] = now.clone();
                let status = text(&now["status"]);
                if !ctx.json && shown.get(&id) != Some(&status) && status != "deploying" {
                    println!("  agent {agent}: {status}: {}", text(&now["step"]));
                    let _ = std::io::stdout().flush();
                    shown.insert(id, status);
                }
            }
        }
    }
}

/// The ids of the instances a target holds (only those named by `only`,
/// when given). Best effort: none when they cannot be read, and the deploy
/// is then not followed, only its outcome shown.
async fn target_instance_ids(ctx: &Ctx, target: &Value, only: &[String]) -> Vec<String> {
    let names = ctx.instance_names().await;
    let name = text(&target["name"]);
    let ids: Vec<String> = if target["kind"] == "group" {
        let Ok(groups) = ctx.get(&["groups"]).await else {
            return Vec::new();
        };
        items(&groups)
            .iter()
            .find(|g| g["name"] == name.as_str() || g["id"] == name.as_str())
            .map(|g| {
                items(&g["instances"])
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        names
            .iter()
            .filter(|(id, n)| **id == name || **n == name)
            .map(|(id, _)| id.clone())
            .collect()
    };
    ids.into_iter()
        .filter(|id| {
            only.is_empty()
                || only
                    .iter()
                    .any(|o| o == id || names.get(id).is_some_and(|n| n == o))
        })
        .collect()
}

/// The deployments of these instances, by id.
async fn deployments_of(ctx: &Ctx, instance_ids: &[String]) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for id in instance_ids {
        if let Ok(list) = ctx.get(&["instances", id, "deployments"]).await {
            out.push((id.clone(), items(&list).to_vec()));
        }
    }
    out
}

/// Runs `request` (a call that deploys `snapshot` to these instances and
/// answers when they are done) while printing the progress of the new
/// deployments it makes, one line per change.
async fn follow<F>(
    ctx: &Ctx,
    instance_ids: &[String],
    snapshot: &str,
    names: &HashMap<String, String>,
    request: F,
) -> Outcome<Value>
where
    F: Future<Output = Outcome<Value>>,
{
    // The deployments known before, so the new ones are recognised.
    let before: Vec<String> = if ctx.json {
        Vec::new()
    } else {
        deployments_of(ctx, instance_ids)
            .await
            .iter()
            .flat_map(|(_, list)| list.iter().filter_map(|d| d["id"].as_str()))
            .map(str::to_string)
            .collect()
    };
    tokio::pin!(request);
    let mut shown: HashMap<String, (String, String)> = HashMap::new();
    loop {
        tokio::select! {
            answer = &mut request => return answer,
            () = tokio::time::sleep(PROGRESS_EVERY) => {
                if ctx.json || instance_ids.is_empty() {
                    continue;
                }
                for (instance, list) in deployments_of(ctx, instance_ids).await {
                    let ours = list.iter().find(|d| {
                        d["snapshot_id"] == snapshot
                            && d["id"].as_str().is_some_and(|id| !before.iter().any(|b| b == id))
                    });
                    if let Some(d) = ours {
                        let now = (text(&d["status"]), text(&d["step"]));
                        if shown.get(&instance) != Some(&now) {
                            let label = names.get(&instance).cloned().unwrap_or(instance.clone());
                            println!("  {label}: {}: {}", now.0, now.1);
                            let _ = std::io::stdout().flush();
                            shown.insert(instance, now);
                        }
                    }
                }
            }
        }
    }
}

/// The deployments as a table: instance, status, step (with the error).
fn print_deployments(list: &[Value], names: &HashMap<String, String>) {
    let rows = list
        .iter()
        .map(|d| {
            vec![
                target_label(d, names),
                text(&d["status"]),
                match d["error"].as_str() {
                    Some(e) => format!("{}: {e}", text(&d["step"])),
                    None => text(&d["step"]),
                },
            ]
        })
        .collect();
    table(&["TARGET", "STATUS", "STEP"], rows);
}

/// Exit 1 when any deployment failed, naming them.
fn failed(list: &[Value], names: &HashMap<String, String>, what: &str) -> Outcome<()> {
    let failed: Vec<String> = list
        .iter()
        .filter(|d| d["status"] == "failed")
        .map(|d| target_label(d, names))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(Failure::Other(anyhow::anyhow!(
        "{what} failed on {} of {} target(s): {}; each keeps what it ran before",
        failed.len(),
        list.len(),
        failed.join(", ")
    )))
}

/// What a deploy's or a promotion's refusal means, said for this command.
async fn deploy_refusal(
    ctx: &Ctx,
    code: String,
    message: String,
    snapshot: &str,
    target: &Value,
) -> Failure {
    let message = match code.as_str() {
        "forbidden" => ctx.owners_only("deploy snapshots", message),
        "not_found" => {
            if !ctx.has_snapshot(snapshot).await {
                return ctx.no_such_snapshot(snapshot, code);
            }
            let (kind, name) = (text(&target["kind"]), text(&target["name"]));
            format!(
                "team {} has no {} {name}; `redwall {}` shows them",
                ctx.team,
                kind.replace('_', " "),
                match kind.as_str() {
                    "group" => "group list",
                    "agent" | "agent_group" => "agent list",
                    _ => "instance list",
                }
            )
        }
        _ => message,
    };
    Failure::Api { code, message }
}

async fn deploy(args: DeployArgs) -> Outcome<()> {
    let window = args.window.body()?;
    let target = target_json(&args);
    let ctx = Ctx::new(args.common)?;
    let mut body = json!({
        "snapshot": args.snapshot,
        "target": target,
        "only": args.only,
    });
    if let Some(w) = &window {
        body["window"] = w.clone();
    }
    let names = ctx.instance_names().await;
    let ids = if window.is_some() || ctx.json || names_agents(&target) {
        Vec::new()
    } else {
        target_instance_ids(&ctx, &target, &args.only).await
    };
    if !ctx.json {
        let to = format!("{} {}", text(&target["kind"]), text(&target["name"]));
        match window {
            Some(_) => println!(
                "deploying snapshot {} to {to} ({}, UTC)",
                args.snapshot,
                args.window.describe()
            ),
            None => println!("deploying snapshot {} to {to}", args.snapshot),
        }
    }
    let request = ctx
        .api
        .call(Method::POST, ctx.url(&["deploys"]), Some(&body));
    let v = match follow(&ctx, &ids, &args.snapshot, &names, request).await {
        Err(Failure::Api { code, message }) => {
            return Err(deploy_refusal(&ctx, code, message, &args.snapshot, &target).await)
        }
        other => other?,
    };
    let v = if names_agents(&target) && window.is_none() {
        Value::Array(follow_agents(&ctx, items(&v).to_vec(), Duration::from_secs(args.wait)).await)
    } else {
        v
    };
    let list = items(&v);
    ctx.print(&v, |_| {
        print_deployments(list, &names);
        if list.iter().any(|d| d["status"] == "deploying") {
            println!(
                "some agents have not answered yet (offline agents take the snapshot when they \
                 connect); `redwall agent deployments AGENT` shows how they go"
            );
        }
        if list.iter().any(|d| d["status"] == "waiting") {
            println!(
                "waiting for the deploy window ({}, UTC); `redwall snapshot deployments \
                 INSTANCE` shows how they go",
                args.window.describe()
            );
        }
    });
    failed(list, &names, "the deploy")
}

// ---- pipelines ----

/// `NAME=instance:INST[:approval]` or `NAME=group:GROUP[:approval]` as the
/// API's stage.
fn parse_stage(spec: &str) -> Result<Value, String> {
    let usage = || {
        format!(
            "--stage {spec}: write NAME=instance:INSTANCE, NAME=group:GROUP, NAME=agent:AGENT \
             or NAME=agent-group:GROUP, with :approval at the end when the stage needs approval"
        )
    };
    let (name, rest) = spec.split_once('=').ok_or_else(usage)?;
    let mut parts = rest.split(':');
    let kind = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let requires_approval = match parts.next() {
        None => false,
        Some("approval") => true,
        Some(_) => return Err(usage()),
    };
    if name.trim().is_empty() || target.trim().is_empty() || parts.next().is_some() {
        return Err(usage());
    }
    let kind = match kind {
        "instance" | "group" | "agent" => kind,
        "agent-group" => "agent_group",
        _ => return Err(usage()),
    };
    Ok(json!({
        "name": name.trim(),
        "target": { "kind": kind, "name": target.trim() },
        "requires_approval": requires_approval,
    }))
}

/// "instance dev" or "group fleet, approval".
fn stage_text(stage: &Value) -> String {
    let mut s = format!(
        "{} ({} {}",
        text(&stage["name"]),
        text(&stage["target"]["kind"]),
        text(&stage["target"]["name"])
    );
    if stage["requires_approval"] == true {
        s.push_str(", approval");
    }
    s.push(')');
    s
}

fn stages_text(stages: &[Value]) -> String {
    stages
        .iter()
        .map(stage_text)
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn short(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.chars().take(SHORT).collect(),
        None => "-".to_string(),
    }
}

/// Where a deployment went: the instance's name, or "agent ID".
fn target_label(d: &Value, names: &HashMap<String, String>) -> String {
    match d["agent_id"].as_str() {
        Some(agent) => format!("agent {agent}"),
        None => instance_label(&d["instance_id"], names),
    }
}

/// The instance's name, else its id, else `-`.
fn instance_label(id: &Value, names: &HashMap<String, String>) -> String {
    match id.as_str() {
        Some(id) => names.get(id).cloned().unwrap_or_else(|| id.to_string()),
        None => "-".to_string(),
    }
}

async fn pipeline(args: PipelineArgs) -> Outcome<()> {
    let ctx = Ctx::new(args.common)?;
    use PipelineCommand as C;
    match args.command {
        C::List => {
            let v = ctx.get(&["pipelines"]).await?;
            ctx.print(&v, |v| {
                let rows = items(v)
                    .iter()
                    .map(|p| vec![text(&p["name"]), stages_text(items(&p["stages"]))])
                    .collect();
                table(&["NAME", "STAGES"], rows);
            });
        }
        C::Create { name, stages } => {
            let stages = stages
                .iter()
                .map(|s| parse_stage(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Failure::Usage)?;
            let body = json!({ "name": name, "stages": stages });
            let v = match ctx
                .api
                .call(Method::POST, ctx.url(&["pipelines"]), Some(&body))
                .await
            {
                Err(Failure::Api { code, message }) if code == "forbidden" => {
                    return Err(Failure::Api {
                        message: ctx.owners_only("create pipelines", message),
                        code,
                    })
                }
                Err(Failure::Api { code, message }) if code == "not_found" => {
                    return Err(Failure::Api {
                        message: format!(
                            "a stage names an instance or group team {} does not have \
                             ({message}); `redwall instance list` and `redwall group list` \
                             show them",
                            ctx.team
                        ),
                        code,
                    })
                }
                other => other?,
            };
            ctx.print(&v, |v| {
                println!(
                    "created pipeline {}: {}",
                    text(&v["name"]),
                    stages_text(items(&v["stages"]))
                );
            });
        }
        C::Delete { name } => {
            match ctx
                .api
                .call(Method::DELETE, ctx.url(&["pipelines", &name]), None)
                .await
            {
                Err(Failure::Api { code, .. }) if code == "not_found" => {
                    return Err(ctx.no_such_pipeline(&name, code))
                }
                Err(Failure::Api { code, message }) if code == "forbidden" => {
                    return Err(Failure::Api {
                        message: ctx.owners_only("delete pipelines", message),
                        code,
                    })
                }
                other => other?,
            };
            if !ctx.json {
                println!("deleted pipeline {name}");
            }
        }
        C::Promote {
            pipeline,
            snapshot,
            to,
            window,
        } => promote(&ctx, &pipeline, &snapshot, &to, &window).await?,
        C::Promotions { pipeline } => promotions(&ctx, &pipeline).await?,
        C::Approve { id } => approve(&ctx, &id).await?,
    }
    Ok(())
}

/// Prints a promotion's outcome; a failure when its deploy failed.
fn print_promotion(
    ctx: &Ctx,
    v: &Value,
    stage: &str,
    names: &HashMap<String, String>,
) -> Outcome<()> {
    let state = text(&v["state"]);
    let list = items(&v["deployments"]);
    ctx.print(v, |v| {
        println!(
            "promotion {} of snapshot {} into stage {stage}: {state}",
            text(&v["id"]),
            text(&v["snapshot_id"])
        );
        if !list.is_empty() {
            print_deployments(list, names);
        }
        match state.as_str() {
            "awaiting_approval" => println!(
                "it waits for the approval of an Owner of the team other than the one who \
                 promoted it: `redwall pipeline approve {}`",
                text(&v["id"])
            ),
            "scheduled" => println!(
                "waiting for its deploy window{} (UTC)",
                window_text(&v["window"])
            ),
            _ => {}
        }
    });
    failed(list, names, "the promotion's deploy")
}

/// ": not before T, daily 22:00-02:00" from a promotion's window.
fn window_text(w: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(t) = w["not_before"].as_str() {
        parts.push(format!("not before {t}"));
    }
    if let Some(d) = w["daily"].as_str() {
        parts.push(format!("daily {d}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    }
}

async fn promote(
    ctx: &Ctx,
    pipeline: &str,
    snapshot: &str,
    stage: &str,
    window: &WindowFlags,
) -> Outcome<()> {
    let window_body = window.body()?;
    let found = match ctx.find_pipeline(pipeline).await {
        Ok(found) => found,
        Err(Failure::Api { code, message }) if code == "forbidden" => {
            return Err(Failure::Api {
                message: ctx.owners_only("promote snapshots", message),
                code,
            })
        }
        Err(e) => return Err(e),
    };
    let Some(found) = found else {
        return Err(ctx.no_such_pipeline(pipeline, "not_found".to_string()));
    };
    let stages = items(&found["stages"]);
    let Some(at) = stages.iter().position(|s| s["name"] == stage) else {
        let names: Vec<String> = stages.iter().map(|s| text(&s["name"])).collect();
        return Err(Failure::usage(format!(
            "pipeline {pipeline} has no stage {stage}; its stages, in order: {}",
            names.join(", ")
        )));
    };
    let mut body = json!({ "snapshot": snapshot, "stage": stage });
    if let Some(w) = &window_body {
        body["window"] = w.clone();
    }
    let names = ctx.instance_names().await;
    let target = &stages[at]["target"];
    let follows = window_body.is_none() && !ctx.json && stages[at]["requires_approval"] != true;
    let ids = if follows {
        target_instance_ids(ctx, target, &[]).await
    } else {
        Vec::new()
    };
    if !ctx.json {
        println!(
            "promoting snapshot {snapshot} into stage {}",
            stage_text(&stages[at])
        );
    }
    let request = ctx.api.call(
        Method::POST,
        ctx.url(&["pipelines", pipeline, "promote"]),
        Some(&body),
    );
    let v = match follow(ctx, &ids, snapshot, &names, request).await {
        Err(Failure::Api { code, message }) => {
            let message = match code.as_str() {
                "previous_stage_not_done" => format!(
                    "stage {stage} comes after {}: {message}",
                    text(&stages[at.saturating_sub(1)]["name"])
                ),
                "forbidden" => ctx.owners_only("promote snapshots", message),
                "not_found" if !ctx.has_snapshot(snapshot).await => {
                    return Err(ctx.no_such_snapshot(snapshot, code))
                }
                _ => message,
            };
            return Err(Failure::Api { code, message });
        }
        other => other?,
    };
    print_promotion(ctx, &v, stage, &names)
}

async fn promotions(ctx: &Ctx, pipeline: &str) -> Outcome<()> {
    let v = match ctx.get(&["pipelines", pipeline, "promotions"]).await {
        Err(Failure::Api { code, .. }) if code == "not_found" => {
            return Err(ctx.no_such_pipeline(pipeline, code))
        }
        other => other?,
    };
    if ctx.json {
        ctx.print(&v, |_| {});
        return Ok(());
    }
    let stages: Vec<String> = match ctx.find_pipeline(pipeline).await? {
        Some(p) => items(&p["stages"])
            .iter()
            .map(|s| text(&s["name"]))
            .collect(),
        None => Vec::new(),
    };
    let members = if items(&v).is_empty() {
        HashMap::new()
    } else {
        ctx.member_names().await
    };
    let user = |id: &Value| instance_label(id, &members);
    let rows = items(&v)
        .iter()
        .map(|p| {
            let stage = p["stage"]
                .as_u64()
                .and_then(|i| stages.get(usize::try_from(i).ok()?))
                .cloned()
                .unwrap_or_else(|| text(&p["stage"]));
            vec![
                text(&p["id"]),
                stage,
                short(&p["snapshot_id"]),
                text(&p["state"]),
                user(&p["promoted_by"]),
                user(&p["approved_by"]),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STAGE",
            "SNAPSHOT",
            "STATE",
            "PROMOTED BY",
            "APPROVED BY",
        ],
        rows,
    );
    Ok(())
}

async fn approve(ctx: &Ctx, id: &str) -> Outcome<()> {
    let url = ctx.url(&["promotions", id, "approve"]);
    let v = match ctx.api.call(Method::POST, url, Some(&json!({}))).await {
        Err(Failure::Api { code, message }) => {
            let message = match code.as_str() {
                "approval_by_promoter" => {
                    "you promoted it: another Owner of the team must approve".to_string()
                }
                "approval_needs_owner" | "forbidden" => {
                    ctx.owners_only("approve a promotion", message)
                }
                "not_awaiting_approval" => format!(
                    "promotion {id} is not waiting for approval (it was approved already, or \
                     its stage needs none)"
                ),
                "not_found" => format!(
                    "team {} has no promotion {id}; `redwall pipeline promotions PIPELINE` \
                     shows them",
                    ctx.team
                ),
                _ => message,
            };
            return Err(Failure::Api { code, message });
        }
        other => other?,
    };
    let names = ctx.instance_names().await;
    let stage = match ctx.find_pipeline(&text(&v["pipeline_id"])).await {
        Ok(Some(p)) => v["stage"]
            .as_u64()
            .and_then(|i| items(&p["stages"]).get(usize::try_from(i).ok()?))
            .map(|s| text(&s["name"]))
            .unwrap_or_else(|| text(&v["stage"])),
        _ => text(&v["stage"]),
    };
    if !ctx.json {
        println!("approved promotion {id}");
    }
    print_promotion(ctx, &v, &stage, &names)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct PipelineCli {
        #[command(subcommand)]
        command: PipelineCommand,
    }

    #[derive(Parser)]
    struct DeployCli {
        #[command(flatten)]
        args: DeployArgs,
    }

    #[test]
    fn stages_read_as_targets_with_an_optional_approval() {
        assert_eq!(
            parse_stage("dev=instance:dev-1").unwrap(),
            json!({"name": "dev", "target": {"kind": "instance", "name": "dev-1"},
                   "requires_approval": false})
        );
        assert_eq!(
            parse_stage("prod=group:fleet:approval").unwrap(),
            json!({"name": "prod", "target": {"kind": "group", "name": "fleet"},
                   "requires_approval": true})
        );
        for bad in [
            "dev",
            "dev=instance",
            "dev=instance:",
            "=instance:x",
            "dev=robot:x",
            "dev=group:x:maybe",
            "dev=group:x:approval:y",
        ] {
            assert!(parse_stage(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_stage("plants=agent-group:plants:approval").unwrap(),
            json!({"name": "plants", "target": {"kind": "agent_group", "name": "plants"},
                   "requires_approval": true})
        );
        assert_eq!(
            stages_text(&[
                parse_stage("dev=instance:dev").unwrap(),
                parse_stage("prod=group:fleet:approval").unwrap()
            ]),
            "dev (instance dev) -> prod (group fleet, approval)"
        );
    }

    #[test]
    fn stages_keep_their_command_line_order() {
        let Ok(PipelineCli {
            command: PipelineCommand::Create { name, stages },
        }) = PipelineCli::try_parse_from([
            "pipeline",
            "create",
            "release",
            "--stage",
            "test=instance:b",
            "--stage",
            "dev=instance:a",
            "--stage",
            "prod=group:c:approval",
        ])
        else {
            panic!("parses");
        };
        assert_eq!(name, "release");
        assert_eq!(
            stages,
            ["test=instance:b", "dev=instance:a", "prod=group:c:approval"]
        );
        assert!(PipelineCli::try_parse_from(["pipeline", "create", "x"]).is_err());
        assert!(
            PipelineCli::try_parse_from(["pipeline", "promote", "release", "abc"]).is_err(),
            "--to is required"
        );
    }

    #[test]
    fn a_deploy_names_one_target_and_its_window_is_checked_first() {
        assert!(DeployCli::try_parse_from(["deploy", "abc"]).is_err());
        assert!(
            DeployCli::try_parse_from(["deploy", "abc", "--instance", "a", "--group", "b"])
                .is_err()
        );
        let d = DeployCli::try_parse_from([
            "deploy",
            "abc",
            "--group",
            "fleet",
            "--only",
            "a",
            "--only",
            "b",
            "--window",
            "22:00-02:00",
        ])
        .unwrap()
        .args;
        assert_eq!(d.only, ["a", "b"]);
        assert_eq!(target_json(&d), json!({"kind": "group", "name": "fleet"}));
        let a = DeployCli::try_parse_from(["deploy", "abc", "--agent-group", "plants"])
            .unwrap()
            .args;
        assert_eq!(
            target_json(&a),
            json!({"kind": "agent_group", "name": "plants"})
        );
        assert!(names_agents(&target_json(&a)));
        assert!(
            DeployCli::try_parse_from(["deploy", "abc", "--agent", "a", "--instance", "b"])
                .is_err()
        );
        assert_eq!(
            d.window.body().unwrap(),
            Some(json!({"not_before": null, "daily": "22:00-02:00"}))
        );
        assert_eq!(d.window.describe(), "daily 22:00-02:00");
        let none = WindowFlags::default();
        assert_eq!(none.body().unwrap(), None);
        for (not_before, window) in [(None, Some("25:00-01:00")), (Some("tomorrow"), None)] {
            let w = WindowFlags {
                not_before: not_before.map(str::to_string),
                window: window.map(str::to_string),
            };
            assert!(matches!(w.body(), Err(Failure::Usage(_))));
        }
    }

    #[test]
    fn a_promotion_window_reads_in_utc() {
        assert_eq!(
            window_text(&json!({"not_before": "2026-12-04T22:00:00Z", "daily": "22:00-02:00"})),
            ": not before 2026-12-04T22:00:00Z, daily 22:00-02:00"
        );
        assert_eq!(window_text(&Value::Null), "");
    }
}

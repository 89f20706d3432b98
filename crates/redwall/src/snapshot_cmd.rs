//! `redwall snapshot ...`: a thin client of `/api/v1/teams/{team}/snapshots`,
//! of the instances' `snapshots`, `rollback` and `deployments`, and of the
//! team's git repository (`/api/v1/teams/{team}/git`, `.../git/push`,
//! `.../git/pull`) on the serving Redwall (the instances, and the keys that
//! sign snapshots, live in that process).
//!
//! Nothing this command prints is secret: a snapshot's credentials never
//! leave the server except in an export, which is sealed under a passphrase
//! and written to a file only its owner may read.

use crate::client::{
    finish, items, print_json_or, table, text, ApiClient, Connection, Failure, Outcome,
};
use clap::{Args, Subcommand};
use redwall_crypto::Secret;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Where a passphrase comes from when no terminal is asked.
pub const PASSPHRASE_ENV: &str = "REDWALL_SNAPSHOT_PASSPHRASE";

/// How a sealed export begins (see `redwall_crypto::passphrase_box`).
const SEALED_MAGIC: &[u8] = b"redwall-sealed-file";

/// How often a rollback's progress is read while it runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(700);

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    conn: Connection,
    /// The team's id.
    #[arg(long, global = true, env = "REDWALL_TEAM")]
    team: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// The team's snapshots, newest first.
    List {
        /// Only this instance's (its name or id).
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
    },
    /// Take a snapshot of what the instance runs now.
    Create {
        #[arg(value_name = "INSTANCE")]
        instance: String,
        /// Why it is taken (at most 500 characters).
        #[arg(long, value_name = "TEXT", default_value = "")]
        note: String,
    },
    /// One snapshot, checked whole (hashes and signature): what it holds,
    /// never its credentials' values. With --json, its flows too.
    Show {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// What changes from snapshot A to snapshot B: per tab, nodes added
    /// (+), removed (-) and changed (~), function code as a line diff.
    Diff {
        #[arg(value_name = "A")]
        from: String,
        #[arg(value_name = "B")]
        to: String,
    },
    /// Load a snapshot into the running instance (Owners). What it runs
    /// before is kept as a snapshot, so the rollback can be undone.
    Rollback {
        #[arg(value_name = "INSTANCE")]
        instance: String,
        #[arg(value_name = "SNAPSHOT_ID")]
        snapshot: String,
    },
    /// The instance's deployments of snapshots, newest first.
    Deployments {
        #[arg(value_name = "INSTANCE")]
        instance: String,
    },
    /// Write a snapshot with its credentials to a file sealed under a
    /// passphrase (Owners). The passphrase comes from
    /// REDWALL_SNAPSHOT_PASSPHRASE, standard input (--passphrase-stdin) or
    /// the terminal.
    Export {
        #[arg(value_name = "ID")]
        id: String,
        /// The file to write (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
        /// Read the passphrase from the first line of standard input.
        #[arg(long)]
        passphrase_stdin: bool,
    },
    /// Import a sealed export, or a Node-RED flows file (JSON), as a
    /// snapshot of the instance. It is not deployed: roll back to it for
    /// that.
    Import {
        #[arg(value_name = "INSTANCE")]
        instance: String,
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_name = "TEXT", default_value = "")]
        note: String,
        /// Accept credentials written in the clear in a flows file
        /// (refused otherwise).
        #[arg(long)]
        accept_plaintext_credentials: bool,
        /// Read a sealed export's passphrase from the first line of
        /// standard input.
        #[arg(long)]
        passphrase_stdin: bool,
    },
    /// Show the team's git repository for snapshots, or set it (Owners).
    /// Snapshots are pushed to one branch for review; what is merged into
    /// the other is pulled. Options left out keep their current values.
    GitSettings {
        /// https://, ssh:// or git:// (no user or password in it).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Where snapshots are pushed (first time: redwall/snapshots).
        #[arg(long, value_name = "BRANCH")]
        push_branch: Option<String>,
        /// Where reviewed flows are pulled from (first time: main).
        #[arg(long, value_name = "BRANCH")]
        pull_branch: Option<String>,
        /// Read an HTTPS token from the first line of standard input (it is
        /// stored sealed and never shown; a new URL drops the old token).
        #[arg(long)]
        token_stdin: bool,
        /// Remove the stored token.
        #[arg(long, conflicts_with = "token_stdin")]
        clear_token: bool,
    },
    /// Push a snapshot to the team's push branch (Owners): one directory per
    /// tab, function bodies as .js files, credentials sealed for this team.
    Push {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Pull the team's pull branch as a new snapshot of the instance
    /// (Owners). It is not deployed: roll back to it for that.
    Pull {
        #[arg(value_name = "INSTANCE")]
        instance: String,
    },
}

pub async fn run(args: SnapshotArgs) -> ExitCode {
    finish(execute(args).await)
}

struct Ctx {
    api: ApiClient,
    team: String,
    json: bool,
}

impl Ctx {
    fn url(&self, rest: &[&str]) -> reqwest::Url {
        let mut segments = vec!["teams", self.team.as_str()];
        segments.extend_from_slice(rest);
        self.api.url(&segments)
    }

    /// A call about the snapshot `id`: the API's bare "not found" becomes
    /// a message naming the snapshot and the team.
    async fn on_snapshot(
        &self,
        method: Method,
        url: reqwest::Url,
        id: &str,
        body: Option<&Value>,
    ) -> Outcome<Value> {
        match self.api.call(method, url, body).await {
            Err(Failure::Api { code, .. }) if code == "not_found" => {
                Err(self.no_such_snapshot(&[id], code))
            }
            other => other,
        }
    }

    fn no_such_snapshot(&self, ids: &[&str], code: String) -> Failure {
        let named = match ids {
            [one] => format!("snapshot {one}"),
            many => format!("snapshot {}", many.join(" or ")),
        };
        Failure::Api {
            message: format!(
                "team {} has no {named}; `redwall snapshot list` shows the team's snapshots",
                self.team
            ),
            code,
        }
    }

    /// A call about the instance `name`: its "not found" names the
    /// instance and the team.
    async fn on_instance(
        &self,
        method: Method,
        name: &str,
        rest: &[&str],
        body: Option<&Value>,
    ) -> Outcome<Value> {
        let mut path = vec!["instances", name];
        path.extend_from_slice(rest);
        match self.api.call(method, self.url(&path), body).await {
            Err(Failure::Api { code, .. }) if code == "not_found" => Err(Failure::Api {
                message: format!(
                    "team {} has no instance {name}; `redwall instance list` shows them",
                    self.team
                ),
                code,
            }),
            other => other,
        }
    }

    /// The raw JSON with --json, else `human`.
    fn print(&self, value: &Value, human: impl FnOnce(&Value)) {
        print_json_or(self.json, value, human);
    }

    /// Instance ids to names. Best effort: on failure the ids are shown.
    async fn instance_names(&self) -> HashMap<String, String> {
        let Ok(list) = self
            .api
            .call(Method::GET, self.url(&["instances"]), None)
            .await
        else {
            return HashMap::new();
        };
        items(&list)
            .iter()
            .filter_map(|i| Some((i["id"].as_str()?.to_string(), text(&i["name"]))))
            .collect()
    }

    /// User ids to names, from the team's members. Best effort.
    async fn member_names(&self) -> HashMap<String, String> {
        let Ok(list) = self
            .api
            .call(Method::GET, self.url(&["members"]), None)
            .await
        else {
            return HashMap::new();
        };
        items(&list)
            .iter()
            .filter_map(|m| Some((m["user_id"].as_str()?.to_string(), text(&m["username"]))))
            .collect()
    }
}

async fn execute(args: SnapshotArgs) -> Outcome<()> {
    let team = args
        .team
        .ok_or_else(|| Failure::usage("name the team with --team <id> (or REDWALL_TEAM)"))?;
    let ctx = Ctx {
        api: ApiClient::new(&args.conn)?,
        team,
        json: args.json,
    };
    use SnapshotCommand as C;
    match args.command {
        C::List { instance } => list(&ctx, instance.as_deref()).await?,
        C::Create { instance, note } => {
            let body = json!({ "note": note });
            let v = ctx
                .on_instance(Method::POST, &instance, &["snapshots"], Some(&body))
                .await?;
            ctx.print(&v, |v| {
                println!(
                    "took snapshot {} of instance {instance} (flows {})",
                    text(&v["id"]),
                    short_hash(&v["flows_sha256"])
                );
            });
        }
        C::Show { id } => {
            let v = ctx
                .on_snapshot(Method::GET, ctx.url(&["snapshots", &id]), &id, None)
                .await?;
            if ctx.json {
                ctx.print(&v, |_| {});
            } else {
                let instances = ctx.instance_names().await;
                let members = ctx.member_names().await;
                show(&v, &instances, &members);
            }
        }
        C::Diff { from, to } => {
            let mut url = ctx.url(&["snapshots", &from, "diff"]);
            url.query_pairs_mut().append_pair("to", &to);
            let v = match ctx.api.call(Method::GET, url, None).await {
                Err(Failure::Api { code, .. }) if code == "not_found" => {
                    return Err(ctx.no_such_snapshot(&[&from, &to], code))
                }
                other => other?,
            };
            ctx.print(&v, print_diff);
        }
        C::Rollback { instance, snapshot } => rollback(&ctx, &instance, &snapshot).await?,
        C::Deployments { instance } => {
            let v = ctx
                .on_instance(Method::GET, &instance, &["deployments"], None)
                .await?;
            if ctx.json {
                ctx.print(&v, |_| {});
            } else {
                let members = if items(&v).is_empty() {
                    HashMap::new()
                } else {
                    ctx.member_names().await
                };
                print_deployments(&v, &members);
            }
        }
        C::Export {
            id,
            out,
            force,
            passphrase_stdin,
        } => export(&ctx, &id, &out, force, passphrase_stdin).await?,
        C::Import {
            instance,
            file,
            note,
            accept_plaintext_credentials,
            passphrase_stdin,
        } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Failure::Other(anyhow::anyhow!("reading {}: {e}", file.display())))?;
            let mut body = json!({
                "file": base64(&bytes),
                "accept_plaintext_credentials": accept_plaintext_credentials,
                "note": note,
            });
            if bytes.starts_with(SEALED_MAGIC) {
                let passphrase = passphrase(passphrase_stdin, false)?;
                body["passphrase"] = json!(passphrase.expose());
            }
            let v = ctx
                .on_instance(
                    Method::POST,
                    &instance,
                    &["snapshots", "import"],
                    Some(&body),
                )
                .await?;
            ctx.print(&v, |v| {
                println!(
                    "imported snapshot {} into instance {instance} ({}); it is not deployed: \
                     `redwall snapshot rollback {instance} {}` loads it",
                    text(&v["snapshot"]["id"]),
                    provenance(v),
                    text(&v["snapshot"]["id"]),
                );
            });
        }
        C::GitSettings {
            url,
            push_branch,
            pull_branch,
            token_stdin,
            clear_token,
        } => {
            let change = GitChange {
                url,
                push_branch,
                pull_branch,
                token: if token_stdin {
                    Some(read_token()?)
                } else {
                    None
                },
                clear_token,
            };
            git_settings(&ctx, change).await?
        }
        C::Push { id } => {
            let v = match ctx
                .on_snapshot(
                    Method::POST,
                    ctx.url(&["snapshots", &id, "git", "push"]),
                    &id,
                    None,
                )
                .await
            {
                Err(Failure::Api { code, message }) => {
                    return Err(git_refusal(&ctx, "push a snapshot", code, message))
                }
                other => other?,
            };
            ctx.print(&v, |v| {
                if v["changed"] == true {
                    println!(
                        "pushed snapshot {id} to branch {} of {}: commit {}",
                        text(&v["branch"]),
                        text(&v["repository_url"]),
                        text(&v["commit"])
                    );
                } else {
                    println!(
                        "branch {} of {} already holds snapshot {id} (commit {}); nothing pushed",
                        text(&v["branch"]),
                        text(&v["repository_url"]),
                        text(&v["commit"])
                    );
                }
            });
        }
        C::Pull { instance } => {
            let v = match ctx
                .on_instance(Method::POST, &instance, &["git", "pull"], None)
                .await
            {
                Err(Failure::Api { code, message }) => {
                    return Err(git_refusal(&ctx, "pull from git", code, message))
                }
                other => other?,
            };
            ctx.print(&v, |v| {
                let id = text(&v["snapshot"]["id"]);
                let credentials = match v["credentials"].as_str() {
                    Some("sealed") => "credentials from the repository",
                    _ => "the instance's own credentials",
                };
                println!(
                    "pulled commit {} of branch {} as snapshot {id} of instance {instance} \
                     ({credentials}); it is not deployed: `redwall snapshot rollback {instance} \
                     {id}` loads it",
                    text(&v["commit"]),
                    text(&v["branch"]),
                );
            });
        }
    }
    Ok(())
}

/// What `git-settings` was asked to change.
struct GitChange {
    url: Option<String>,
    push_branch: Option<String>,
    pull_branch: Option<String>,
    token: Option<Secret>,
    clear_token: bool,
}

impl GitChange {
    fn is_empty(&self) -> bool {
        self.url.is_none()
            && self.push_branch.is_none()
            && self.pull_branch.is_none()
            && self.token.is_none()
            && !self.clear_token
    }
}

/// The refusal of a git call, said for this command.
fn git_refusal(ctx: &Ctx, what: &str, code: String, message: String) -> Failure {
    let message = match code.as_str() {
        "forbidden" => format!("only an Owner of team {} may {what} ({message})", ctx.team),
        "git_not_configured" => format!(
            "team {} has no git repository; an Owner sets one with `redwall snapshot \
             git-settings --url URL`",
            ctx.team
        ),
        _ => message,
    };
    Failure::Api { code, message }
}

/// Shows the team's git settings, or changes them: options left out keep
/// what is stored (or take the first-time defaults).
async fn git_settings(ctx: &Ctx, change: GitChange) -> Outcome<()> {
    let url = ctx.url(&["git"]);
    let current = match ctx.api.call(Method::GET, url.clone(), None).await {
        Err(Failure::Api { code, message }) => {
            return Err(git_refusal(
                ctx,
                "read or set the git settings",
                code,
                message,
            ))
        }
        other => other?,
    };
    if change.is_empty() {
        ctx.print(&current, print_git_settings);
        return Ok(());
    }
    let pick = |given: Option<String>, key: &str, default: Option<&str>| {
        given
            .or_else(|| current[key].as_str().map(str::to_string))
            .or_else(|| default.map(str::to_string))
    };
    let Some(repository_url) = pick(change.url, "repository_url", None) else {
        return Err(Failure::usage(
            "the team has no git repository yet: give --url (https://, ssh:// or git://)",
        ));
    };
    let mut body = json!({
        "repository_url": repository_url,
        "push_branch": pick(change.push_branch, "push_branch", Some("redwall/snapshots")),
        "pull_branch": pick(change.pull_branch, "pull_branch", Some("main")),
        "clear_token": change.clear_token,
    });
    if let Some(token) = &change.token {
        body["token"] = json!(token.expose());
    }
    let v = match ctx.api.call(Method::PUT, url, Some(&body)).await {
        Err(Failure::Api { code, message }) => {
            return Err(git_refusal(ctx, "set the git settings", code, message))
        }
        other => other?,
    };
    ctx.print(&v, |v| {
        println!("the team's git settings are now:");
        print_git_settings(v);
        if current["has_token"] == true && v["has_token"] != true && !change.clear_token {
            println!("(the token was dropped with the old URL; give --token-stdin to set one)");
        }
    });
    Ok(())
}

fn print_git_settings(v: &Value) {
    if v["configured"] != true {
        println!(
            "no git repository is set; an Owner sets one with `redwall snapshot git-settings \
             --url URL [--push-branch B] [--pull-branch B] [--token-stdin]`"
        );
        return;
    }
    for (label, value) in [
        ("repository", text(&v["repository_url"])),
        ("push branch", text(&v["push_branch"])),
        ("pull branch", text(&v["pull_branch"])),
        (
            "token",
            if v["has_token"] == true {
                "set (never shown)".to_string()
            } else {
                "none".to_string()
            },
        ),
        ("updated", text(&v["updated_at"])),
    ] {
        println!("{:<13} {value}", format!("{label}:"));
    }
}

/// An HTTPS token from the first line of standard input.
fn read_token() -> Outcome<Secret> {
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // Wiped when dropped, whatever happens next.
    let line = Secret::new(line);
    read.map_err(|e| Failure::Other(anyhow::anyhow!("reading standard input: {e}")))?;
    let token = line.expose().trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        return Err(Failure::usage("no token on standard input"));
    }
    Ok(Secret::new(token.to_string()))
}

async fn list(ctx: &Ctx, instance: Option<&str>) -> Outcome<()> {
    let mut url = ctx.url(&["snapshots"]);
    if let Some(name) = instance {
        url.query_pairs_mut().append_pair("instance", name);
    }
    let v = match ctx.api.call(Method::GET, url, None).await {
        Err(Failure::Api { code, .. }) if code == "not_found" && instance.is_some() => {
            return Err(Failure::Api {
                message: format!(
                    "team {} has no instance {}; `redwall instance list` shows them",
                    ctx.team,
                    instance.unwrap_or_default()
                ),
                code,
            })
        }
        other => other?,
    };
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
        .map(|s| {
            vec![
                text(&s["id"]),
                instance_label(&s["instance_id"], &names),
                text(&s["kind"]),
                to_the_second(&s["created_at"]),
                one_line(&s["note"]),
                short_hash(&s["flows_sha256"]),
            ]
        })
        .collect();
    table(
        &["ID", "INSTANCE", "KIND", "CREATED", "NOTE", "FLOWS"],
        rows,
    );
    Ok(())
}

/// The instance's name, else its id, else `-`.
fn instance_label(id: &Value, names: &HashMap<String, String>) -> String {
    match id.as_str() {
        Some(id) => names.get(id).cloned().unwrap_or_else(|| id.to_string()),
        None => "-".to_string(),
    }
}

/// A user's name, else their id, else `-`.
fn user_label(id: &Value, names: &HashMap<String, String>) -> String {
    match id.as_str() {
        Some(id) => names.get(id).cloned().unwrap_or_else(|| id.to_string()),
        None => "-".to_string(),
    }
}

/// "2026-12-04T17:16:29.648979Z" as "2026-12-04T17:16:29Z".
fn to_the_second(v: &Value) -> String {
    let t = text(v);
    match t.split_once('.') {
        Some((seconds, rest)) if rest.ends_with('Z') => format!("{seconds}Z"),
        _ => t,
    }
}

/// The first 12 hex digits of a SHA-256.
fn short_hash(v: &Value) -> String {
    match v.as_str() {
        Some(h) => h.chars().take(12).collect(),
        None => "-".to_string(),
    }
}

/// A note as one table cell: line breaks and tabs as spaces, at most 60
/// characters; `-` when empty.
fn one_line(v: &Value) -> String {
    let note = v.as_str().unwrap_or_default();
    let flat: String = note
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if flat.is_empty() {
        return "-".to_string();
    }
    if flat.chars().count() > 60 {
        let cut: String = flat.chars().take(59).collect();
        return format!("{cut}…");
    }
    flat
}

fn show(v: &Value, instances: &HashMap<String, String>, members: &HashMap<String, String>) {
    let s = &v["snapshot"];
    let nodes = items(&v["flows"]).len();
    let mut fields = vec![
        ("id", text(&s["id"])),
        ("instance", instance_label(&s["instance_id"], instances)),
        ("kind", text(&s["kind"])),
        ("created", text(&s["created_at"])),
        ("created by", user_label(&s["created_by"], members)),
        ("note", one_line(&s["note"])),
        (
            "flows",
            format!("{nodes} entries, sha256 {}", text(&s["flows_sha256"])),
        ),
        ("content sha256", text(&s["content_sha256"])),
        ("signed by", text(&v["signed_by"])),
        (
            "credentials",
            format!(
                "{} node(s) hold credentials (values never shown)",
                items(&v["nodes_with_credentials"]).len()
            ),
        ),
    ];
    let env: Vec<String> = items(&v["env_names"]).iter().map(text).collect();
    fields.push((
        "env names",
        if env.is_empty() {
            "(none)".to_string()
        } else {
            env.join(", ")
        },
    ));
    for (label, value) in fields {
        println!("{:<15} {value}", format!("{label}:"));
    }
    let modules = v["modules"].as_object();
    match modules {
        Some(m) if !m.is_empty() => {
            println!("modules:");
            for (name, version) in m {
                println!("  {name}@{}", text(version));
            }
        }
        _ => println!("{:<15} (none)", "modules:"),
    }
}

fn print_diff(v: &Value) {
    print!("{}", v["text"].as_str().unwrap_or_default());
    // What lies beside the flows, when it differs.
    let mut extra = Vec::new();
    for pair in items(&v["modules_added"]) {
        extra.push(format!("+ module {}@{}", text(&pair[0]), text(&pair[1])));
    }
    for name in items(&v["modules_removed"]) {
        extra.push(format!("- module {}", text(name)));
    }
    for name in items(&v["env_names_added"]) {
        extra.push(format!("+ environment variable {}", text(name)));
    }
    for name in items(&v["env_names_removed"]) {
        extra.push(format!("- environment variable {}", text(name)));
    }
    if v["credentials_changed"] == true {
        extra.push("~ credentials differ (values never shown)".to_string());
    }
    if !extra.is_empty() {
        println!();
        println!("beside the flows:");
        for line in extra {
            println!("  {line}");
        }
    }
}

fn print_deployments(v: &Value, members: &HashMap<String, String>) {
    let rows = items(v)
        .iter()
        .map(|d| {
            vec![
                to_the_second(&d["created_at"]),
                text(&d["snapshot_id"]),
                text(&d["previous_snapshot_id"]),
                text(&d["reason"]),
                text(&d["status"]),
                user_label(&d["requested_by"], members),
                match d["error"].as_str() {
                    Some(e) => format!("{}: {e}", text(&d["step"])),
                    None => text(&d["step"]),
                },
            ]
        })
        .collect();
    table(
        &[
            "STARTED", "SNAPSHOT", "PREVIOUS", "REASON", "STATUS", "BY", "STEP",
        ],
        rows,
    );
}

/// An import's answer in words: who signed what was imported.
fn provenance(v: &Value) -> String {
    match v["provenance"].as_str() {
        Some("this_hub") => "signed by this hub".to_string(),
        Some("unsigned") => "unsigned flows file".to_string(),
        Some("other_hub") => format!("signed by another hub, key {}", text(&v["signed_by"])),
        _ => text(&v["provenance"]),
    }
}

/// Rolls back and follows the deployment: its progress lines while the API
/// works, then how it ended.
async fn rollback(ctx: &Ctx, instance: &str, snapshot: &str) -> Outcome<()> {
    // The deployments known before, so the new one is recognised.
    let before: Vec<String> = match ctx
        .on_instance(Method::GET, instance, &["deployments"], None)
        .await
    {
        Ok(v) => items(&v)
            .iter()
            .filter_map(|d| d["id"].as_str().map(str::to_string))
            .collect(),
        // Members may read deployments; anyone refused here is refused below
        // with the API's own answer.
        Err(Failure::Api { code, message }) if code == "not_found" => {
            return Err(Failure::Api { code, message })
        }
        Err(_) => Vec::new(),
    };
    if !ctx.json {
        println!("rolling back instance {instance} to snapshot {snapshot}");
    }
    let body = json!({ "snapshot": snapshot });
    let post = ctx.on_instance(Method::POST, instance, &["rollback"], Some(&body));
    tokio::pin!(post);
    let mut shown: Option<(String, String)> = None;
    let answer = loop {
        tokio::select! {
            answer = &mut post => break answer,
            () = tokio::time::sleep(PROGRESS_EVERY) => {
                if ctx.json {
                    continue;
                }
                let Ok(list) = ctx
                    .on_instance(Method::GET, instance, &["deployments"], None)
                    .await
                else {
                    continue;
                };
                let ours = items(&list).iter().find(|d| {
                    d["snapshot_id"] == snapshot
                        && d["id"].as_str().is_some_and(|id| !before.iter().any(|b| b == id))
                });
                if let Some(d) = ours {
                    let now = (text(&d["status"]), text(&d["step"]));
                    if shown.as_ref() != Some(&now) {
                        println!("  {}: {}", now.0, now.1);
                        let _ = std::io::stdout().flush();
                        shown = Some(now);
                    }
                }
            }
        }
    };
    let d = match answer {
        Err(Failure::Api { code, message }) => {
            return Err(Failure::Api {
                message: rollback_refusal(ctx, instance, snapshot, &code, message),
                code,
            })
        }
        other => other?,
    };
    let status = text(&d["status"]);
    let previous = d["previous_snapshot_id"].as_str();
    if ctx.json {
        ctx.print(&d, |_| {});
    } else {
        let last = (status.clone(), text(&d["step"]));
        if shown.as_ref() != Some(&last) {
            println!("  {}: {}", last.0, last.1);
        }
    }
    if status == "failed" {
        let error = d["error"].as_str().unwrap_or("no reason given");
        let undo = match previous {
            Some(p) => format!("; it still runs snapshot {p}"),
            None => String::new(),
        };
        return Err(Failure::Other(anyhow::anyhow!(
            "the rollback of instance {instance} to snapshot {snapshot} failed: {error}{undo}"
        )));
    }
    if !ctx.json {
        match previous {
            Some(p) => println!(
                "instance {instance} now runs snapshot {}; to undo: redwall snapshot rollback \
                 {instance} {p}",
                text(&d["snapshot_id"])
            ),
            None => println!(
                "instance {instance} now runs snapshot {}",
                text(&d["snapshot_id"])
            ),
        }
    }
    Ok(())
}

/// The API's refusal of a rollback, said for this command.
fn rollback_refusal(
    ctx: &Ctx,
    instance: &str,
    snapshot: &str,
    code: &str,
    message: String,
) -> String {
    match code {
        "forbidden" => format!(
            "only an Owner of team {} may roll back an instance ({message})",
            ctx.team
        ),
        // The instance was found above, so it is the snapshot that is not.
        "not_found" => format!(
            "team {} has no snapshot {snapshot} (or no instance {instance}); \
             `redwall snapshot list --instance {instance}` shows its snapshots",
            ctx.team
        ),
        _ => message,
    }
}

async fn export(
    ctx: &Ctx,
    id: &str,
    out: &Path,
    force: bool,
    passphrase_stdin: bool,
) -> Outcome<()> {
    if !force && out.exists() {
        return Err(Failure::usage(format!(
            "{} exists; choose another file or give --force to replace it",
            out.display()
        )));
    }
    let passphrase = passphrase(passphrase_stdin, true)?;
    let body = json!({ "passphrase": passphrase.expose() });
    let req = ctx
        .api
        .request(Method::POST, ctx.url(&["snapshots", id, "export"]))
        .json(&body);
    let resp = match ctx.api.send(req).await {
        Err(Failure::Api { code, .. }) if code == "not_found" => {
            return Err(ctx.no_such_snapshot(&[id], code))
        }
        Err(Failure::Api { code, message }) if code == "forbidden" => {
            return Err(Failure::Api {
                message: format!(
                    "only an Owner of team {} may export a snapshot ({message})",
                    ctx.team
                ),
                code,
            })
        }
        other => other?,
    };
    let file = resp
        .bytes()
        .await
        .map_err(|e| Failure::Other(anyhow::anyhow!("reading the export: {e}")))?;
    write_private(out, &file, force)
        .map_err(|e| Failure::Other(anyhow::anyhow!("writing {}: {e}", out.display())))?;
    if ctx.json {
        println!(
            "{}",
            json!({ "snapshot": id, "file": out.display().to_string(), "bytes": file.len() })
        );
    } else {
        println!(
            "wrote snapshot {id} to {} ({} bytes, sealed under the passphrase; it holds \
             the flows' credentials)",
            out.display(),
            file.len()
        );
    }
    Ok(())
}

/// Writes `bytes` to `path`, readable by its owner alone: a new file, or
/// with `replace` an existing one (its mode set to 0600 first).
fn write_private(path: &Path, bytes: &[u8], replace: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }
}

/// The passphrase: from REDWALL_SNAPSHOT_PASSPHRASE, else the first line of
/// standard input with `from_stdin`, else asked on the terminal without
/// echo (twice when `confirm`).
fn passphrase(from_stdin: bool, confirm: bool) -> Outcome<Secret> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        if p.is_empty() {
            return Err(Failure::usage(format!("{PASSPHRASE_ENV} is empty")));
        }
        return Ok(Secret::new(p));
    }
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::Other(anyhow::anyhow!("reading standard input: {e}")))?;
        let p = line.trim_end_matches(['\r', '\n']).to_string();
        if p.is_empty() {
            return Err(Failure::usage("no passphrase on standard input"));
        }
        return Ok(Secret::new(p));
    }
    // Scripts give it by the environment or standard input; only a person
    // at a terminal is asked.
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!(
            "set {PASSPHRASE_ENV} or give --passphrase-stdin (standard input is not a terminal \
             to ask on)"
        )));
    }
    let no_terminal = |e: std::io::Error| {
        Failure::usage(format!(
            "cannot ask for the passphrase ({e}); set {PASSPHRASE_ENV} or give --passphrase-stdin"
        ))
    };
    let first = rpassword::prompt_password("Snapshot passphrase: ").map_err(no_terminal)?;
    if first.is_empty() {
        return Err(Failure::usage("the passphrase is empty"));
    }
    if confirm {
        let second = rpassword::prompt_password("Repeat: ").map_err(no_terminal)?;
        if first != second {
            return Err(Failure::usage("the passphrases differ"));
        }
    }
    Ok(Secret::new(first))
}

/// Standard base64 with padding (what the API's import takes).
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: SnapshotCommand,
    }

    fn parse(args: &[&str]) -> Result<SnapshotCommand, clap::Error> {
        Cli::try_parse_from([&["snapshot"], args].concat()).map(|c| c.command)
    }

    #[test]
    fn notes_and_hashes_fit_a_table_cell() {
        assert_eq!(one_line(&json!("a\n\tb  c")), "a b c");
        assert_eq!(one_line(&json!("")), "-");
        assert_eq!(one_line(&Value::Null), "-");
        let long = "x".repeat(80);
        assert_eq!(one_line(&json!(long)).chars().count(), 60);
        assert_eq!(short_hash(&json!("0123456789abcdef")), "0123456789ab");
        assert_eq!(short_hash(&Value::Null), "-");
        assert_eq!(
            to_the_second(&json!("2026-12-04T17:16:29.648979Z")),
            "2026-12-04T17:16:29Z"
        );
        assert_eq!(
            to_the_second(&json!("2026-12-04T17:16:29Z")),
            "2026-12-04T17:16:29Z"
        );
    }

    #[test]
    fn export_needs_a_file_and_rollback_an_instance_and_a_snapshot() {
        assert!(parse(&["export", "abc"]).is_err());
        assert!(parse(&["rollback", "press"]).is_err());
        let Ok(SnapshotCommand::Export { out, force, .. }) =
            parse(&["export", "abc", "--out", "x.rwsnap"])
        else {
            panic!("parses");
        };
        assert_eq!(out, PathBuf::from("x.rwsnap"));
        assert!(!force);
        let Ok(SnapshotCommand::Import {
            accept_plaintext_credentials,
            note,
            ..
        }) = parse(&[
            "import",
            "press",
            "flows.json",
            "--note",
            "from staging",
            "--accept-plaintext-credentials",
        ])
        else {
            panic!("parses");
        };
        assert!(accept_plaintext_credentials);
        assert_eq!(note, "from staging");
    }

    #[test]
    fn git_commands_parse() {
        let Ok(SnapshotCommand::GitSettings {
            url,
            push_branch,
            pull_branch,
            token_stdin,
            clear_token,
        }) = parse(&[
            "git-settings",
            "--url",
            "https://git.example.com/plant/flows.git",
            "--pull-branch",
            "main",
            "--token-stdin",
        ])
        else {
            panic!("parses");
        };
        assert_eq!(
            url.as_deref(),
            Some("https://git.example.com/plant/flows.git")
        );
        assert_eq!(push_branch, None);
        assert_eq!(pull_branch.as_deref(), Some("main"));
        assert!(token_stdin && !clear_token);
        assert!(parse(&["git-settings", "--token-stdin", "--clear-token"]).is_err());
        assert!(parse(&["git-settings", "--token", "secret"]).is_err());
        assert!(matches!(
            parse(&["git-settings"]),
            Ok(SnapshotCommand::GitSettings { .. })
        ));
        assert!(matches!(parse(&["push", "abc"]), Ok(SnapshotCommand::Push { id }) if id == "abc"));
        assert!(parse(&["push"]).is_err());
        assert!(
            matches!(parse(&["pull", "press"]), Ok(SnapshotCommand::Pull { instance }) if instance == "press")
        );
    }

    #[test]
    fn provenance_reads_as_words() {
        assert_eq!(
            provenance(&json!({"provenance": "this_hub"})),
            "signed by this hub"
        );
        assert_eq!(
            provenance(&json!({"provenance": "unsigned"})),
            "unsigned flows file"
        );
        assert_eq!(
            provenance(&json!({"provenance": "other_hub", "signed_by": "SHA256:ab"})),
            "signed by another hub, key SHA256:ab"
        );
    }

    #[test]
    fn an_export_is_written_for_its_owner_alone_and_never_over_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.rwsnap");
        write_private(&path, b"sealed", false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_private(&path, b"other", false).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"sealed");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

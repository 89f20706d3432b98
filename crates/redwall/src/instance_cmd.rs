//! `redwall instance ...`: a thin client of `/api/v1/teams/{team}/instances`
//! on the serving Redwall (the instances live in that process).

use crate::client::{
    finish, items, print_json_or, table, text, ApiClient, Connection, Failure, Outcome,
};
use clap::{Args, Subcommand};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct InstanceArgs {
    #[command(flatten)]
    conn: Connection,
    /// The team's id.
    #[arg(long, global = true, env = "REDWALL_TEAM")]
    team: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: InstanceCommand,
}

#[derive(Subcommand)]
enum InstanceCommand {
    /// The team's instances and their status.
    List,
    /// Create an instance (started unless --stopped), or with --agent one
    /// whose Node-RED a remote agent runs, reached through its connection.
    Create {
        #[arg(value_name = "INSTANCE")]
        name: String,
        #[arg(long, conflicts_with = "agent")]
        stopped: bool,
        /// The team's agent whose Node-RED this instance is.
        #[arg(long, value_name = "AGENT")]
        agent: Option<String>,
    },
    /// One instance: status, addresses, options.
    Show {
        #[arg(value_name = "INSTANCE")]
        name: String,
    },
    /// Start an instance (and keep it running across Redwall restarts).
    Start {
        #[arg(value_name = "INSTANCE")]
        name: String,
    },
    /// Stop an instance (and keep it stopped).
    Stop {
        #[arg(value_name = "INSTANCE")]
        name: String,
    },
    /// Restart an instance.
    Restart {
        #[arg(value_name = "INSTANCE")]
        name: String,
    },
    /// Delete an instance with its flows and files.
    Delete {
        #[arg(value_name = "INSTANCE")]
        name: String,
        /// The instance's name again.
        #[arg(long, value_name = "NAME")]
        confirm: String,
    },
    /// The instance's latest output.
    Logs {
        #[arg(value_name = "INSTANCE")]
        name: String,
        #[arg(long, default_value_t = 100)]
        lines: usize,
        /// Keep printing new lines until interrupted.
        #[arg(long, short)]
        follow: bool,
    },
    /// Environment variables (effective at the next start).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Who may reach the instance's endpoints: ordered rules.
    #[command(subcommand)]
    Routes(RoutesCommand),
    /// API keys for the instance's endpoints.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show, or change, what the instance may install.
    Options {
        #[arg(value_name = "INSTANCE")]
        name: String,
        #[arg(long, value_name = "BOOL")]
        allow_palette_install: Option<bool>,
        #[arg(long, value_name = "BOOL")]
        allow_function_modules: Option<bool>,
    },
}

#[derive(Subcommand)]
enum EnvCommand {
    /// Names and values (secret values are never shown).
    List {
        #[arg(value_name = "INSTANCE")]
        name: String,
    },
    /// Set variables, keeping the others. An argument NAME without
    /// `=VALUE` reads its value from standard input (for secrets).
    Set {
        #[arg(value_name = "INSTANCE")]
        name: String,
        #[arg(required = true, value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Store these values write-only.
        #[arg(long)]
        secret: bool,
    },
    /// Remove one variable.
    Unset {
        #[arg(value_name = "INSTANCE")]
        name: String,
        #[arg(value_name = "NAME")]
        var: String,
    },
}

#[derive(Subcommand)]
enum RoutesCommand {
    /// The rules, as JSON (the shape `set` takes).
    Get {
        #[arg(value_name = "INSTANCE")]
        name: String,
    },
    /// Replace the rules with a JSON list from a file (`-`: standard input).
    Set {
        #[arg(value_name = "INSTANCE")]
        name: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Judge a request against the rules without sending it.
    Test {
        #[arg(value_name = "INSTANCE")]
        name: String,
        #[arg(long)]
        method: String,
        #[arg(long)]
        path: String,
        #[arg(long)]
        client_ip: Option<String>,
        /// none, session, basic or api_key (the key is read from
        /// REDWALL_INSTANCE_KEY).
        #[arg(long, default_value = "none")]
        credential: String,
        /// The team role the credential carries.
        #[arg(long)]
        role: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// The instance's keys (never the keys themselves).
    List {
        #[arg(value_name = "INSTANCE")]
        name: String,
    },
    /// Create a key; it is printed once.
    Create {
        #[arg(value_name = "INSTANCE")]
        name: String,
        #[arg(long)]
        key_name: String,
        #[arg(long)]
        expires_in_days: Option<i64>,
        /// Limit the key to this path prefix.
        #[arg(long)]
        path_prefix: Option<String>,
    },
    /// Revoke a key.
    Revoke {
        #[arg(value_name = "INSTANCE")]
        name: String,
        key_id: String,
    },
}

const INSTANCE_KEY_ENV: &str = "REDWALL_INSTANCE_KEY";

pub async fn run(args: InstanceArgs) -> ExitCode {
    finish(execute(args).await)
}

struct Ctx {
    api: ApiClient,
    team: String,
    json: bool,
}

impl Ctx {
    fn url(&self, name: &str, rest: &[&str]) -> reqwest::Url {
        let mut segments = vec!["teams", self.team.as_str(), "instances", name];
        segments.extend_from_slice(rest);
        self.api.url(&segments)
    }

    async fn get(&self, name: &str, rest: &[&str]) -> Outcome<Value> {
        self.api.call(Method::GET, self.url(name, rest), None).await
    }

    async fn send(
        &self,
        method: Method,
        name: &str,
        rest: &[&str],
        body: &Value,
    ) -> Outcome<Value> {
        self.api
            .call(method, self.url(name, rest), Some(body))
            .await
    }

    /// The raw JSON with --json, else `human`.
    fn print(&self, value: &Value, human: impl FnOnce(&Value)) {
        print_json_or(self.json, value, human);
    }
}

async fn execute(args: InstanceArgs) -> Outcome<()> {
    let team = args
        .team
        .ok_or_else(|| Failure::usage("name the team with --team <id> (or REDWALL_TEAM)"))?;
    let ctx = Ctx {
        api: ApiClient::new(&args.conn)?,
        team,
        json: args.json,
    };
    use InstanceCommand as C;
    match args.command {
        C::List => {
            let url = ctx.api.url(&["teams", &ctx.team, "instances"]);
            let v = ctx.api.call(Method::GET, url, None).await?;
            ctx.print(&v, |v| {
                let rows = items(v)
                    .iter()
                    .map(|i| {
                        vec![
                            text(&i["name"]),
                            state(i),
                            text(&i["desired_state"]),
                            text(&i["status"]["pid"]),
                            text(&i["url"]),
                            text(&i["id"]),
                        ]
                    })
                    .collect();
                table(&["NAME", "STATE", "DESIRED", "PID", "URL", "ID"], rows);
            });
        }
        C::Create {
            name,
            stopped,
            agent,
        } => {
            let (url, body) = match agent {
                Some(agent) => (
                    ctx.api
                        .url(&["teams", &ctx.team, "agents", &agent, "instance"]),
                    json!({ "name": name }),
                ),
                None => (
                    ctx.api.url(&["teams", &ctx.team, "instances"]),
                    json!({"name": name, "start": !stopped}),
                ),
            };
            let v = ctx.api.call(Method::POST, url, Some(&body)).await?;
            ctx.print(&v, show_instance);
        }
        C::Show { name } => {
            let v = ctx.get(&name, &[]).await?;
            ctx.print(&v, show_instance);
        }
        C::Start { name } => lifecycle(&ctx, &name, "start").await?,
        C::Stop { name } => lifecycle(&ctx, &name, "stop").await?,
        C::Restart { name } => lifecycle(&ctx, &name, "restart").await?,
        C::Delete { name, confirm } => {
            ctx.send(
                Method::DELETE,
                &name,
                &[],
                &json!({ "confirm_name": confirm }),
            )
            .await?;
            if !ctx.json {
                println!("deleted instance {name}");
            }
        }
        C::Logs {
            name,
            lines,
            follow,
        } => logs(&ctx, &name, lines, follow).await?,
        C::Env(cmd) => env(&ctx, cmd).await?,
        C::Routes(cmd) => routes(&ctx, cmd).await?,
        C::Keys(cmd) => keys(&ctx, cmd).await?,
        C::Options {
            name,
            allow_palette_install,
            allow_function_modules,
        } => {
            let mut v = ctx.get(&name, &[]).await?;
            if allow_palette_install.is_some() || allow_function_modules.is_some() {
                let mut options = v["options"].clone();
                if let Some(b) = allow_palette_install {
                    options["allow_palette_install"] = json!(b);
                }
                if let Some(b) = allow_function_modules {
                    options["allow_function_modules"] = json!(b);
                }
                v = ctx.send(Method::PUT, &name, &["options"], &options).await?;
            }
            ctx.print(&v, |v| {
                let o = &v["options"];
                println!(
                    "allow_palette_install:  {}",
                    text(&o["allow_palette_install"])
                );
                println!(
                    "allow_function_modules: {}",
                    text(&o["allow_function_modules"])
                );
            });
        }
    }
    Ok(())
}

async fn lifecycle(ctx: &Ctx, name: &str, action: &str) -> Outcome<()> {
    let v = ctx.send(Method::POST, name, &[action], &json!({})).await?;
    ctx.print(&v, |v| println!("{}: {}", text(&v["name"]), state(v)));
    Ok(())
}

fn show_instance(v: &Value) {
    let s = &v["status"];
    let mut fields = vec![
        ("name", text(&v["name"])),
        ("id", text(&v["id"])),
        ("state", state(v)),
        ("desired", text(&v["desired_state"])),
    ];
    if !v["agent"].is_null() {
        fields.push(("agent", text(&v["agent"])));
    }
    for (label, key) in [
        ("pid", "pid"),
        ("since", "since"),
        ("reason", "reason"),
        ("restarts", "restarts"),
    ] {
        if !s[key].is_null() {
            fields.push((label, text(&s[key])));
        }
    }
    fields.extend([
        ("url", text(&v["url"])),
        ("editor", text(&v["editor_url"])),
        (
            "palette install",
            text(&v["options"]["allow_palette_install"]),
        ),
        (
            "function modules",
            text(&v["options"]["allow_function_modules"]),
        ),
        ("created", text(&v["created_at"])),
    ]);
    for (label, value) in fields {
        println!("{:<17} {value}", format!("{label}:"));
    }
}

fn print_log_line(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{} {} {}",
        text(&line["at"]),
        text(&line["stream"]),
        text(&line["text"])
    );
    let _ = out.flush();
}

async fn logs(ctx: &Ctx, name: &str, lines: usize, follow: bool) -> Outcome<()> {
    // Subscribe before reading the backlog, so no line falls in between.
    let stream = if follow {
        let req = ctx
            .api
            .request(Method::GET, ctx.url(name, &["logs", "stream"]))
            .header("accept", "text/event-stream");
        Some(ctx.api.send(req).await?)
    } else {
        None
    };
    let mut url = ctx.url(name, &["logs"]);
    url.query_pairs_mut()
        .append_pair("lines", &lines.to_string());
    let backlog = ctx.api.call(Method::GET, url, None).await?;
    for line in items(&backlog) {
        if ctx.json {
            println!("{line}");
        } else {
            print_log_line(line);
        }
    }
    let Some(resp) = stream else {
        return Ok(());
    };
    let mut body = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| Failure::Other(anyhow::anyhow!("the log stream broke: {e}")))?;
        pending.extend_from_slice(&chunk);
        // Server-sent events end with a blank line; `data:` lines carry the JSON.
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(data) = line.strip_prefix("data:") {
                let data = data.strip_prefix(' ').unwrap_or(data);
                if ctx.json {
                    println!("{data}");
                } else if let Ok(v) = serde_json::from_str::<Value>(data) {
                    print_log_line(&v);
                }
            }
        }
    }
    Ok(())
}

async fn env(ctx: &Ctx, cmd: EnvCommand) -> Outcome<()> {
    let (name, current, change) = match cmd {
        EnvCommand::List { name } => {
            let v = ctx.get(&name, &["env"]).await?;
            ctx.print(&v, print_env);
            return Ok(());
        }
        EnvCommand::Set { name, vars, secret } => {
            let current = ctx.get(&name, &["env"]).await?;
            let change = parse_assignments(&vars, secret)?;
            (name, current, change)
        }
        EnvCommand::Unset { name, var } => {
            let current = ctx.get(&name, &["env"]).await?;
            if !items(&current).iter().any(|e| e["name"] == var.as_str()) {
                return Err(Failure::usage(format!("{var} is not set on {name}")));
            }
            (name, current, Change::Unset(var))
        }
    };
    let body = Value::Array(merge_env(items(&current), &change));
    let v = ctx.send(Method::PUT, &name, &["env"], &body).await?;
    ctx.print(&v, print_env);
    Ok(())
}

enum Change {
    Set(Vec<(String, String, bool)>),
    Unset(String),
}

fn parse_assignments(vars: &[String], secret: bool) -> Outcome<Change> {
    let mut out = Vec::new();
    let mut read_stdin = false;
    for var in vars {
        let (key, value) = match var.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                if read_stdin {
                    return Err(Failure::usage(
                        "only one variable can take its value from standard input",
                    ));
                }
                read_stdin = true;
                let mut value = String::new();
                std::io::stdin()
                    .read_to_string(&mut value)
                    .map_err(|e| Failure::Other(anyhow::anyhow!("reading standard input: {e}")))?;
                let value = value.strip_suffix('\n').unwrap_or(&value);
                let value = value.strip_suffix('\r').unwrap_or(value);
                (var.clone(), value.to_string())
            }
        };
        if key.is_empty() {
            return Err(Failure::usage(format!("{var}: expected NAME=VALUE")));
        }
        out.push((key, value, secret));
    }
    Ok(Change::Set(out))
}

/// The full list for PUT: kept variables go without their value (the server
/// keeps the sealed one, so secrets never travel back); a variable that was
/// secret stays secret when it is set again.
fn merge_env(current: &[Value], change: &Change) -> Vec<Value> {
    let mut out = Vec::new();
    for e in current {
        let name = e["name"].as_str().unwrap_or_default();
        let was_secret = e["secret"].as_bool().unwrap_or(false);
        match change {
            Change::Unset(n) if n == name => {}
            Change::Set(sets) if sets.iter().any(|(n, _, _)| n == name) => {}
            _ => out.push(json!({"name": name, "secret": was_secret})),
        }
    }
    if let Change::Set(sets) = change {
        for (n, value, secret) in sets {
            let was_secret = current
                .iter()
                .any(|e| e["name"] == n.as_str() && e["secret"].as_bool() == Some(true));
            out.push(json!({"name": n, "value": value, "secret": *secret || was_secret}));
        }
    }
    out
}

fn print_env(v: &Value) {
    let rows = items(v)
        .iter()
        .map(|e| {
            let secret = e["secret"].as_bool().unwrap_or(false);
            vec![
                text(&e["name"]),
                if secret {
                    "(secret)".to_string()
                } else {
                    text(&e["value"])
                },
                text(&e["updated_at"]),
            ]
        })
        .collect();
    table(&["NAME", "VALUE", "UPDATED"], rows);
}

async fn routes(ctx: &Ctx, cmd: RoutesCommand) -> Outcome<()> {
    match cmd {
        RoutesCommand::Get { name } => {
            let v = ctx.get(&name, &["routes"]).await?;
            // The JSON is the readable form here, and what `set` takes back.
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        RoutesCommand::Set { name, file } => {
            let raw = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| Failure::Other(anyhow::anyhow!("reading standard input: {e}")))?;
                s
            } else {
                std::fs::read_to_string(&file).map_err(|e| {
                    Failure::Other(anyhow::anyhow!("reading {}: {e}", file.display()))
                })?
            };
            let rules: Value = serde_json::from_str(&raw)
                .map_err(|e| Failure::usage(format!("{} is not JSON: {e}", file.display())))?;
            if !rules.is_array() {
                return Err(Failure::usage("the rules are a JSON list"));
            }
            let v = ctx.send(Method::PUT, &name, &["routes"], &rules).await?;
            ctx.print(&v, |v| {
                println!("{} rule(s) set on {name}", items(v).len());
            });
        }
        RoutesCommand::Test {
            name,
            method,
            path,
            client_ip,
            credential,
            role,
        } => {
            let mut body = json!({"method": method, "path": path, "credential": credential});
            if let Some(ip) = client_ip {
                body["client_ip"] = json!(ip);
            }
            if let Some(role) = role {
                body["role"] = json!(role);
            }
            if credential == "api_key" {
                let key = std::env::var(INSTANCE_KEY_ENV).map_err(|_| {
                    Failure::usage(format!(
                        "--credential api_key reads the key from {INSTANCE_KEY_ENV}"
                    ))
                })?;
                body["api_key"] = json!(key);
            }
            let v = ctx
                .send(Method::POST, &name, &["routes", "test"], &body)
                .await?;
            ctx.print(&v, |v| {
                println!("decision: {}", text(&v["decision"]));
                match v["matched_rule"].as_u64() {
                    Some(i) => println!(
                        "rule {i}: {}",
                        serde_json::to_string(&v["rule"]).unwrap_or_default()
                    ),
                    None => println!("no rule matched"),
                }
            });
        }
    }
    Ok(())
}

async fn keys(ctx: &Ctx, cmd: KeysCommand) -> Outcome<()> {
    match cmd {
        KeysCommand::List { name } => {
            let v = ctx.get(&name, &["keys"]).await?;
            ctx.print(&v, |v| {
                let rows = items(v)
                    .iter()
                    .map(|k| {
                        vec![
                            text(&k["id"]),
                            text(&k["name"]),
                            text(&k["prefix"]),
                            text(&k["path_prefix"]),
                            text(&k["expires_at"]),
                            if k["revoked_at"].is_null() {
                                "active".to_string()
                            } else {
                                format!("revoked {}", text(&k["revoked_at"]))
                            },
                        ]
                    })
                    .collect();
                table(&["ID", "NAME", "PREFIX", "PATH", "EXPIRES", "STATE"], rows);
            });
        }
        KeysCommand::Create {
            name,
            key_name,
            expires_in_days,
            path_prefix,
        } => {
            let body = json!({
                "name": key_name,
                "expires_in_days": expires_in_days,
                "path_prefix": path_prefix,
            });
            let v = ctx.send(Method::POST, &name, &["keys"], &body).await?;
            ctx.print(&v, |v| {
                println!("{}", text(&v["key"]));
                eprintln!(
                    "created key {} ({}): it is shown this once; store it now",
                    text(&v["details"]["name"]),
                    text(&v["details"]["id"])
                );
            });
        }
        KeysCommand::Revoke { name, key_id } => {
            ctx.api
                .call(Method::DELETE, ctx.url(&name, &["keys", &key_id]), None)
                .await?;
            if !ctx.json {
                println!("revoked key {key_id}");
            }
        }
    }
    Ok(())
}

fn state(i: &Value) -> String {
    text(&i["status"]["state"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_keeps_other_variables_without_their_values_and_secrets_stay_secret() {
        let current = vec![
            json!({"name": "A", "value": "1", "secret": false}),
            json!({"name": "PW", "value": null, "secret": true}),
        ];
        let change = Change::Set(vec![
            ("PW".into(), "new".into(), false),
            ("B".into(), "2".into(), false),
        ]);
        let merged = merge_env(&current, &change);
        assert_eq!(
            merged,
            vec![
                json!({"name": "A", "secret": false}),
                json!({"name": "PW", "value": "new", "secret": true}),
                json!({"name": "B", "value": "2", "secret": false}),
            ]
        );
        let merged = merge_env(&current, &Change::Unset("A".into()));
        assert_eq!(merged, vec![json!({"name": "PW", "secret": true})]);
    }
}

//! `redwall agent ...`: a thin client of `/api/v1/teams/{team}/agents` and
//! `/agent-tokens` on the serving Redwall.
//!
//! `provision` prints the one-line bundle a new agent enrols with (it holds
//! a one-time token: treat it as a secret until it is used); nothing else
//! this command prints is secret.

use crate::client::{
    finish, items, print_json_or, table, text, ApiClient, Connection, Failure, Outcome,
};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct AgentArgs {
    #[command(flatten)]
    conn: Connection,
    /// The team's id.
    #[arg(long, global = true, env = "REDWALL_TEAM")]
    team: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// The team's agents: online or not, what they run, their key's fingerprint.
    #[command(visible_alias = "ls")]
    List,
    /// One agent, by name or id.
    Show {
        #[arg(value_name = "AGENT")]
        agent: String,
    },
    /// Add an agent build (platform admins): the redwall-agent executable
    /// for one platform, which the hub checks and signs.
    BuildAdd {
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
        /// The version agents will report.
        #[arg(long)]
        version: String,
        /// linux-x86_64 or linux-aarch64.
        #[arg(long, default_value = "linux-x86_64")]
        platform: String,
    },
    /// The agent builds the hub offers.
    Builds,
    /// Remove an agent build (platform admins).
    BuildDelete {
        #[arg(value_name = "BUILD_ID")]
        id: String,
    },
    /// Roll a build out to an agent or an agent group, in batches: the next
    /// batch starts once the last one answered; the first failure stops it.
    /// An agent whose new build does not connect goes back to its old one.
    Update {
        #[arg(long, value_name = "BUILD_ID")]
        build: String,
        /// One agent (its name or id).
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        agent: Option<String>,
        /// Every agent of this group.
        #[arg(long)]
        group: Option<String>,
        /// Agents updated at once.
        #[arg(long, default_value_t = 1)]
        batch: u32,
        /// Seconds to follow the rollout before leaving it to go on.
        #[arg(long, default_value_t = 300)]
        wait: u64,
    },
    /// The team's rollouts of agent builds, newest first.
    Updates,
    /// The snapshots deployed to an agent, newest first, and how each went
    /// (`redwall deploy SNAPSHOT --agent NAME` deploys one).
    Deployments {
        #[arg(value_name = "AGENT")]
        agent: String,
    },
    /// The site's newest log lines (the agent's and its Node-RED's),
    /// including those it kept while its link was down.
    Logs {
        #[arg(value_name = "AGENT")]
        agent: String,
        /// How many (1 to 5000).
        #[arg(long, default_value_t = 100)]
        lines: u32,
    },
    /// A one-time provisioning token for a new agent, printed as the bundle
    /// `redwall-agent enrol --bundle` takes (shown once).
    Provision {
        /// The group the agent joins (a deploy target).
        #[arg(long)]
        group: Option<String>,
        /// Hours the token stays usable (1 to 168; 24 by default).
        #[arg(long)]
        hours: Option<u32>,
        /// Where agents reach this hub (https://host:port); the hub's
        /// public URL when omitted.
        #[arg(long)]
        hub_url: Option<String>,
        /// A CA certificate (PEM file) agents check the hub's certificate
        /// with, when it is not self-signed and not from a public CA.
        #[arg(long, value_name = "FILE")]
        ca: Option<std::path::PathBuf>,
    },
    /// The team's unused provisioning tokens.
    Tokens,
    /// Withdraw an unused provisioning token.
    WithdrawToken {
        #[arg(value_name = "TOKEN_ID")]
        id: String,
    },
    /// Revoke an agent: its connection is closed at once, on every hub.
    Revoke {
        #[arg(value_name = "AGENT")]
        agent: String,
    },
    /// Delete an agent (revoked at once).
    Delete {
        #[arg(value_name = "AGENT")]
        agent: String,
    },
    /// Check the path to an agent: it answers through whichever hub holds
    /// its connection.
    Ping {
        #[arg(value_name = "AGENT")]
        agent: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Restart the agent's Node-RED.
    Restart {
        #[arg(value_name = "AGENT")]
        agent: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
}

pub async fn run(args: AgentArgs) -> ExitCode {
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

    async fn on_agent(
        &self,
        method: Method,
        agent: &str,
        rest: &[&str],
        body: Option<&Value>,
    ) -> Outcome<Value> {
        let mut path = vec!["agents", agent];
        path.extend_from_slice(rest);
        match self.api.call(method, self.url(&path), body).await {
            Err(Failure::Api { code, .. }) if code == "not_found" => Err(Failure::Api {
                message: format!("team {} has no agent {agent}", self.team),
                code,
            }),
            other => other,
        }
    }

    /// Sends a command and waits (up to `wait` seconds) for the agent's answer.
    async fn command(&self, agent: &str, kind: &str, wait: u64) -> Outcome<Value> {
        let sent = self
            .on_agent(
                Method::POST,
                agent,
                &["commands"],
                Some(&json!({ "kind": kind })),
            )
            .await?;
        let id = text(&sent["id"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        loop {
            let v = self
                .api
                .call(Method::GET, self.url(&["agent-commands", &id]), None)
                .await?;
            if !v["done_at"].is_null() {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::Other(anyhow::anyhow!(
                    "no answer from {agent} within {wait} s (command {id}; it is sent when the agent connects)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn print_agents(v: &Value) {
    let rows = items(v)
        .iter()
        .map(|a| {
            let state = if a["revoked"].as_bool() == Some(true) {
                "revoked".to_string()
            } else if a["online"].as_bool() == Some(true) {
                "online".to_string()
            } else {
                "offline".to_string()
            };
            vec![
                text(&a["name"]),
                state,
                text(&a["node_red"]),
                text(&a["group"]),
                text(&a["last_seen_at"]),
                text(&a["key_fingerprint"]),
            ]
        })
        .collect();
    table(
        &["NAME", "STATE", "NODE-RED", "GROUP", "LAST SEEN", "KEY"],
        rows,
    );
}

/// The site's store-and-forward and journals, when the agent has them.
fn print_site(site: &Value) {
    let bridge = &site["bridge"];
    if bridge.is_object() {
        let link = |up: &Value| {
            if up.as_bool() == Some(true) {
                "up"
            } else {
                "down"
            }
        };
        println!(
            "MQTT bridge: site broker {}, team broker {}; {} queued ({} of {} bytes), {} delivered, {} dropped, {} refused",
            link(&bridge["local_connected"]),
            link(&bridge["team_connected"]),
            text(&bridge["queued"]),
            text(&bridge["queued_bytes"]),
            text(&bridge["max_bytes"]),
            text(&bridge["delivered"]),
            text(&bridge["dropped"]),
            text(&bridge["refused"]),
        );
    }
    let journal = &site["journal"];
    if journal.is_object() {
        println!(
            "Kept for the hub: {} audit events, {} log lines; dropped when full: {} audit events, {} log lines",
            text(&journal["audit_pending"]),
            text(&journal["log_pending"]),
            text(&journal["audit_dropped"]),
            text(&journal["log_dropped"]),
        );
    }
}

fn print_answer(agent: &str, v: &Value) -> Outcome<()> {
    let message = text(&v["message"]);
    if v["ok"].as_bool() == Some(true) {
        println!("{agent}: {message}");
        Ok(())
    } else {
        Err(Failure::Other(anyhow::anyhow!("{agent}: {message}")))
    }
}

fn print_builds(v: &Value) {
    let rows = items(v)
        .iter()
        .map(|b| {
            vec![
                text(&b["id"]),
                text(&b["version"]),
                text(&b["platform"]),
                text(&b["sha256"]).chars().take(16).collect(),
                text(&b["created_at"]),
            ]
        })
        .collect();
    table(&["ID", "VERSION", "PLATFORM", "SHA-256", "ADDED"], rows);
}

fn print_updates(v: &Value) {
    let rows = items(v)
        .iter()
        .map(|u| {
            vec![
                text(&u["id"]),
                text(&u["version"]),
                format!(
                    "{} {}",
                    text(&u["target"]["kind"]),
                    text(&u["target"]["name"])
                ),
                text(&u["status"]),
                format!("{} of {} sent", text(&u["updated"]), text(&u["sent"])),
                text(&u["error"]),
            ]
        })
        .collect();
    table(
        &["ID", "VERSION", "TARGET", "STATUS", "UPDATED", "ERROR"],
        rows,
    );
}

/// The commands that need no team: agent builds are the platform's.
async fn builds(args: &AgentArgs) -> Option<Outcome<()>> {
    let api = match ApiClient::new(&args.conn) {
        Ok(api) => api,
        Err(e) => return Some(Err(e)),
    };
    let json = args.json;
    Some(match &args.command {
        AgentCommand::BuildAdd {
            file,
            version,
            platform,
        } => {
            async {
                let bytes = std::fs::read(file)
                    .map_err(|e| Failure::usage(format!("reading {}: {e}", file.display())))?;
                use base64::Engine as _;
                let body = json!({
                    "version": version,
                    "platform": platform,
                    "binary": base64::engine::general_purpose::STANDARD.encode(bytes),
                });
                let v = api
                    .call(Method::POST, api.url(&["agent-builds"]), Some(&body))
                    .await?;
                print_json_or(json, &v, |v| {
                    println!(
                        "build {} ({} {}, sha256 {})",
                        text(&v["id"]),
                        text(&v["version"]),
                        text(&v["platform"]),
                        text(&v["sha256"])
                    )
                });
                Ok(())
            }
            .await
        }
        AgentCommand::Builds => {
            async {
                let v = api
                    .call(Method::GET, api.url(&["agent-builds"]), None)
                    .await?;
                print_json_or(json, &v, print_builds);
                Ok(())
            }
            .await
        }
        AgentCommand::BuildDelete { id } => {
            async {
                api.call(Method::DELETE, api.url(&["agent-builds", id]), None)
                    .await?;
                if !json {
                    println!("build {id} removed");
                }
                Ok(())
            }
            .await
        }
        _ => return None,
    })
}

async fn execute(args: AgentArgs) -> Outcome<()> {
    if let Some(done) = builds(&args).await {
        return done;
    }
    let team = args
        .team
        .ok_or_else(|| Failure::usage("name the team with --team <id> (or REDWALL_TEAM)"))?;
    let ctx = Ctx {
        api: ApiClient::new(&args.conn)?,
        team,
        json: args.json,
    };
    use AgentCommand as C;
    match args.command {
        C::List => {
            let v = ctx
                .api
                .call(Method::GET, ctx.url(&["agents"]), None)
                .await?;
            print_json_or(ctx.json, &v, print_agents);
        }
        C::Show { agent } => {
            let v = ctx.on_agent(Method::GET, &agent, &[], None).await?;
            print_json_or(ctx.json, &v, |a| {
                print_agents(&Value::Array(vec![a.clone()]));
                print_site(&a["site"]);
            });
        }
        C::Logs { agent, lines } => {
            let mut url = ctx.url(&["agents", &agent, "logs"]);
            url.query_pairs_mut()
                .append_pair("lines", &lines.to_string());
            let v = match ctx.api.call(Method::GET, url, None).await {
                Err(Failure::Api { code, .. }) if code == "not_found" => Err(Failure::Api {
                    message: format!("team {} has no agent {agent}", ctx.team),
                    code,
                }),
                other => other,
            }?;
            print_json_or(ctx.json, &v, |v| {
                for l in items(v) {
                    println!(
                        "{} {} {}",
                        text(&l["at"]),
                        text(&l["source"]),
                        text(&l["text"])
                    );
                }
            });
        }
        // Answered by `builds()` before a team was needed.
        C::BuildAdd { .. } | C::Builds | C::BuildDelete { .. } => {}
        C::Update {
            build,
            agent,
            group,
            batch,
            wait,
        } => {
            let target = match (agent, group) {
                (Some(a), _) => json!({"kind": "agent", "name": a}),
                (None, Some(g)) => json!({"kind": "agent_group", "name": g}),
                (None, None) => return Err(Failure::usage("name --agent or --group")),
            };
            let body = json!({"build": build, "target": target, "batch_size": batch});
            let mut v = ctx
                .api
                .call(Method::POST, ctx.url(&["agent-updates"]), Some(&body))
                .await?;
            let id = text(&v["id"]);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            let mut shown = String::new();
            while v["status"] == "rolling" && tokio::time::Instant::now() < deadline {
                let now = format!(
                    "{} of {} sent updated",
                    text(&v["updated"]),
                    text(&v["sent"])
                );
                if now != shown && !ctx.json {
                    println!("  {now}");
                    shown = now;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                v = ctx
                    .api
                    .call(Method::GET, ctx.url(&["agent-updates", &id]), None)
                    .await?;
            }
            print_json_or(ctx.json, &v, |v| {
                print_updates(&Value::Array(vec![v.clone()]))
            });
            match v["status"].as_str() {
                Some("done") => {}
                Some("stopped") => {
                    return Err(Failure::Other(anyhow::anyhow!(
                        "the rollout stopped: {}",
                        text(&v["error"])
                    )))
                }
                _ => {
                    if !ctx.json {
                        println!("still rolling; `redwall agent updates` shows how it goes");
                    }
                }
            }
        }
        C::Updates => {
            let v = ctx
                .api
                .call(Method::GET, ctx.url(&["agent-updates"]), None)
                .await?;
            print_json_or(ctx.json, &v, print_updates);
        }
        C::Deployments { agent } => {
            let v = ctx
                .on_agent(Method::GET, &agent, &["deployments"], None)
                .await?;
            print_json_or(ctx.json, &v, |v| {
                let rows = crate::client::items(v)
                    .iter()
                    .map(|d| {
                        vec![
                            text(&d["created_at"]),
                            text(&d["snapshot_id"]),
                            text(&d["status"]),
                            match d["error"].as_str() {
                                Some(e) => format!("{}: {e}", text(&d["step"])),
                                None => text(&d["step"]),
                            },
                        ]
                    })
                    .collect();
                table(&["CREATED", "SNAPSHOT", "STATUS", "STEP"], rows);
            });
        }
        C::Provision {
            group,
            hours,
            hub_url,
            ca,
        } => {
            let ca_pem = match ca {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| Failure::usage(format!("reading {}: {e}", path.display())))?,
                ),
                None => None,
            };
            let body =
                json!({ "group": group, "hours": hours, "hub_url": hub_url, "ca_pem": ca_pem });
            let v = ctx
                .api
                .call(Method::POST, ctx.url(&["agent-tokens"]), Some(&body))
                .await?;
            print_json_or(ctx.json, &v, |v| {
                eprintln!(
                    "One-time bundle for a new agent (usable once, until {}); on the agent's host run:",
                    text(&v["expires_at"])
                );
                eprintln!(
                    "  redwall-agent enrol --name NAME --bundle @FILE-HOLDING-THE-LINE-BELOW"
                );
                println!("{}", text(&v["bundle"]));
            });
        }
        C::Tokens => {
            let v = ctx
                .api
                .call(Method::GET, ctx.url(&["agent-tokens"]), None)
                .await?;
            print_json_or(ctx.json, &v, |v| {
                let rows = items(v)
                    .iter()
                    .map(|t| {
                        vec![
                            text(&t["id"]),
                            text(&t["group"]),
                            text(&t["expires_at"]),
                            if t["expired"].as_bool() == Some(true) {
                                "expired".into()
                            } else {
                                "usable".into()
                            },
                        ]
                    })
                    .collect();
                table(&["ID", "GROUP", "EXPIRES", "STATE"], rows);
            });
        }
        C::WithdrawToken { id } => {
            ctx.api
                .call(Method::DELETE, ctx.url(&["agent-tokens", &id]), None)
                .await?;
            println!("withdrew provisioning token {id}");
        }
        C::Revoke { agent } => {
            let v = ctx
                .on_agent(Method::POST, &agent, &["revoke"], None)
                .await?;
            print_json_or(ctx.json, &v, |_| {
                println!("revoked {agent}: its connection is closed")
            });
        }
        C::Delete { agent } => {
            ctx.on_agent(Method::DELETE, &agent, &[], None).await?;
            println!("deleted {agent}");
        }
        C::Ping { agent, wait } => {
            let v = ctx.command(&agent, "ping", wait).await?;
            if ctx.json {
                print_json_or(true, &v, |_| {});
            } else {
                print_answer(&agent, &v)?;
            }
        }
        C::Restart { agent, wait } => {
            let v = ctx.command(&agent, "restart", wait).await?;
            if ctx.json {
                print_json_or(true, &v, |_| {});
            } else {
                print_answer(&agent, &v)?;
            }
        }
    }
    Ok(())
}

//! `redwall broker ...`: a thin client of `/api/v1/teams/{team}/broker/clients`
//! on the serving Redwall (the team broker runs in that process).
//!
//! A client's password is printed once, when it is created or rotated;
//! nothing else this command prints is secret.

use crate::client::{
    finish, items, print_json_or, table, text, ApiClient, Connection, Failure, Outcome,
};
use clap::{Arg, ArgAction, ArgMatches, Args, Subcommand};
use redwall_policy::mqtt_acl::{AclRule, Actions, Effect};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct BrokerArgs {
    #[command(flatten)]
    conn: Connection,
    /// The team's id.
    #[arg(long, global = true, env = "REDWALL_TEAM")]
    team: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: BrokerCommand,
}

#[derive(Subcommand)]
enum BrokerCommand {
    /// The team broker's clients and their topic rules (never their passwords).
    #[command(visible_alias = "list")]
    Clients,
    /// Create a client for a device or script; its password is printed once.
    /// Without rules it may do nothing until given some.
    Create {
        /// A name for people (the MQTT username is the new client's id).
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        rules: RuleFlags,
    },
    /// Replace a client's topic rules with the ones given, in their order
    /// (the first rule that applies decides; none denies). Its open
    /// connections are closed and come back under the new rules.
    Rules {
        /// The client's id (its MQTT username).
        #[arg(value_name = "CLIENT_ID")]
        id: String,
        #[command(flatten)]
        rules: RuleFlags,
        /// Remove every rule: the client may then do nothing.
        #[arg(long)]
        clear: bool,
    },
    /// A new password for a client, printed once; the old one stops working
    /// and its connections are closed.
    Rotate {
        #[arg(value_name = "CLIENT_ID")]
        id: String,
    },
    /// Disable a client: refused at login and disconnected, its password
    /// and rules kept until it is enabled again.
    Disable {
        #[arg(value_name = "CLIENT_ID")]
        id: String,
    },
    /// Enable a disabled client again.
    Enable {
        #[arg(value_name = "CLIENT_ID")]
        id: String,
    },
    /// Revoke a client: its password stops working and its connections are
    /// closed.
    Revoke {
        #[arg(value_name = "CLIENT_ID")]
        id: String,
    },
}

/// The rule flags: each names one rule, taken in command-line order.
const RULE_FLAGS: [(&str, Effect, Actions, &str); 6] = [
    (
        "allow-publish",
        Effect::Allow,
        Actions::Publish,
        "Allow publishing to topics matching FILTER",
    ),
    (
        "allow-subscribe",
        Effect::Allow,
        Actions::Subscribe,
        "Allow subscribing within FILTER",
    ),
    (
        "allow",
        Effect::Allow,
        Actions::Both,
        "Allow publishing and subscribing within FILTER",
    ),
    (
        "deny-publish",
        Effect::Deny,
        Actions::Publish,
        "Deny publishing to topics matching FILTER",
    ),
    (
        "deny-subscribe",
        Effect::Deny,
        Actions::Subscribe,
        "Deny subscriptions that reach into FILTER",
    ),
    (
        "deny",
        Effect::Deny,
        Actions::Both,
        "Deny publishing and subscribing within FILTER",
    ),
];
const RULES_JSON: &str = "rules-json";

/// Topic rules from the command line: the rule flags in the order given
/// (clap keeps each flag's values apart, so the order comes from their
/// positions), or a JSON list.
#[derive(Debug, Default)]
struct RuleFlags {
    rules: Vec<AclRule>,
    json: Option<PathBuf>,
}

impl RuleFlags {
    fn given(&self) -> bool {
        !self.rules.is_empty() || self.json.is_some()
    }

    /// The rules as the API takes them.
    fn body(&self) -> Outcome<Value> {
        let Some(file) = &self.json else {
            return serde_json::to_value(&self.rules)
                .map_err(|e| Failure::Other(anyhow::anyhow!("encoding the rules: {e}")));
        };
        let raw = if file.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::Other(anyhow::anyhow!("reading standard input: {e}")))?;
            s
        } else {
            std::fs::read_to_string(file)
                .map_err(|e| Failure::Other(anyhow::anyhow!("reading {}: {e}", file.display())))?
        };
        let rules: Value = serde_json::from_str(&raw)
            .map_err(|e| Failure::usage(format!("{} is not JSON: {e}", file.display())))?;
        if !rules.is_array() {
            return Err(Failure::usage(
                "the rules are a JSON list of {\"effect\", \"actions\", \"filter\"}",
            ));
        }
        // The server checks each rule and says what is wrong with it.
        Ok(rules)
    }
}

impl clap::FromArgMatches for RuleFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut placed: Vec<(usize, AclRule)> = Vec::new();
        for (id, effect, actions, _) in RULE_FLAGS {
            let (Some(filters), Some(positions)) = (m.get_many::<String>(id), m.indices_of(id))
            else {
                continue;
            };
            for (filter, at) in filters.zip(positions) {
                placed.push((
                    at,
                    AclRule {
                        effect,
                        actions,
                        filter: filter.clone(),
                    },
                ));
            }
        }
        placed.sort_by_key(|(at, _)| *at);
        Ok(RuleFlags {
            rules: placed.into_iter().map(|(_, rule)| rule).collect(),
            json: m.get_one::<PathBuf>(RULES_JSON).cloned(),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for RuleFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for (id, _, _, help) in RULE_FLAGS {
            cmd = cmd.arg(
                Arg::new(id)
                    .long(id)
                    .value_name("FILTER")
                    .action(ArgAction::Append)
                    .num_args(1)
                    .help(format!("{help} (repeatable; rules keep their order)")),
            );
        }
        cmd.arg(
            Arg::new(RULES_JSON)
                .long(RULES_JSON)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .conflicts_with_all(RULE_FLAGS.map(|(id, ..)| id))
                .help(
                    "The rules as a JSON list of {\"effect\": allow|deny, \"actions\": \
                     publish|subscribe|both, \"filter\": ...} from FILE (`-`: standard input)",
                ),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

pub async fn run(args: BrokerArgs) -> ExitCode {
    finish(execute(args).await)
}

struct Ctx {
    api: ApiClient,
    team: String,
    json: bool,
}

impl Ctx {
    fn url(&self, rest: &[&str]) -> reqwest::Url {
        let mut segments = vec!["teams", self.team.as_str(), "broker", "clients"];
        segments.extend_from_slice(rest);
        self.api.url(&segments)
    }

    /// A call about the client `id`: the API's bare "not found" becomes a
    /// message naming the client and the team.
    async fn on_client(
        &self,
        method: Method,
        id: &str,
        rest: &[&str],
        body: Option<&Value>,
    ) -> Outcome<Value> {
        let mut path = vec![id];
        path.extend_from_slice(rest);
        match self.api.call(method, self.url(&path), body).await {
            Err(Failure::Api { code, .. }) if code == "not_found" => Err(Failure::Api {
                message: format!(
                    "team {} has no broker client {id}; a client's id is the USERNAME \
                     that `redwall broker clients` lists",
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
}

async fn execute(args: BrokerArgs) -> Outcome<()> {
    let team = args
        .team
        .ok_or_else(|| Failure::usage("name the team with --team <id> (or REDWALL_TEAM)"))?;
    let ctx = Ctx {
        api: ApiClient::new(&args.conn)?,
        team,
        json: args.json,
    };
    use BrokerCommand as C;
    match args.command {
        C::Clients => {
            let v = ctx.api.call(Method::GET, ctx.url(&[]), None).await?;
            if ctx.json {
                ctx.print(&v, |_| {});
            } else {
                let names = instance_names(&ctx, &v).await;
                print_clients(&v, &names);
            }
        }
        C::Create { name, rules } => {
            let body = json!({ "name": name, "rules": rules.body()? });
            let v = ctx
                .api
                .call(Method::POST, ctx.url(&[]), Some(&body))
                .await?;
            ctx.print(&v, print_credentials);
            eprintln!(
                "created broker client {}: the password is shown this once and will not be \
                 shown again; store it now",
                text(&v["client"]["name"])
            );
            if items(&v["client"]["rules"]).is_empty() {
                eprintln!(
                    "it has no rules, so it may do nothing yet: give it some with \
                     `redwall broker rules {}`",
                    text(&v["username"])
                );
            }
        }
        C::Rules { id, rules, clear } => {
            if clear && rules.given() {
                return Err(Failure::usage("--clear takes no rules"));
            }
            if !clear && !rules.given() {
                return Err(Failure::usage(
                    "give the new rules (--allow-publish, --allow-subscribe, --allow, \
                     --deny-publish, --deny-subscribe, --deny, or --rules-json), \
                     or --clear to remove them all",
                ));
            }
            let body = rules.body()?;
            let v = ctx
                .on_client(Method::PUT, &id, &["rules"], Some(&body))
                .await?;
            ctx.print(&v, |v| {
                let rules = items(&v["rules"]);
                println!(
                    "{} rule(s) set on {} ({})",
                    rules.len(),
                    text(&v["name"]),
                    text(&v["id"])
                );
                for (i, rule) in rules.iter().enumerate() {
                    println!("  {}. {}", i + 1, rule_text(rule));
                }
            });
        }
        C::Rotate { id } => {
            let v = ctx
                .on_client(Method::POST, &id, &["rotate"], Some(&json!({})))
                .await?;
            ctx.print(&v, print_credentials);
            eprintln!(
                "new password for broker client {}: the old one no longer works; the new \
                 one is shown this once and will not be shown again; store it now",
                text(&v["client"]["name"])
            );
        }
        C::Disable { id } => {
            let v = ctx
                .on_client(Method::POST, &id, &["disable"], Some(&json!({})))
                .await?;
            ctx.print(&v, |_| println!("disabled broker client {id}"));
        }
        C::Enable { id } => {
            let v = ctx
                .on_client(Method::POST, &id, &["enable"], Some(&json!({})))
                .await?;
            ctx.print(&v, |_| println!("enabled broker client {id}"));
        }
        C::Revoke { id } => {
            ctx.on_client(Method::DELETE, &id, &[], None).await?;
            if !ctx.json {
                println!("revoked broker client {id}");
            }
        }
    }
    Ok(())
}

/// The credentials, on standard output alone (the notices go to standard
/// error, so `> file` keeps just these two lines).
fn print_credentials(v: &Value) {
    println!("username: {}", text(&v["username"]));
    println!("password: {}", text(&v["password"]));
}

/// Instance ids to names, for clients that are an instance's own identity.
/// Best effort: a caller who may not list instances sees the ids.
async fn instance_names(ctx: &Ctx, clients: &Value) -> HashMap<String, String> {
    if items(clients).iter().all(|c| c["instance_id"].is_null()) {
        return HashMap::new();
    }
    let url = ctx.api.url(&["teams", &ctx.team, "instances"]);
    let Ok(instances) = ctx.api.call(Method::GET, url, None).await else {
        return HashMap::new();
    };
    items(&instances)
        .iter()
        .filter_map(|i| Some((i["id"].as_str()?.to_string(), text(&i["name"]))))
        .collect()
}

fn print_clients(v: &Value, instance_names: &HashMap<String, String>) {
    let rows = items(v)
        .iter()
        .map(|c| {
            let instance = match c["instance_id"].as_str() {
                Some(id) => instance_names
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| id.to_string()),
                None => "-".to_string(),
            };
            let state = if c["disabled"] == true {
                "disabled"
            } else {
                "enabled"
            };
            vec![
                text(&c["name"]),
                text(&c["id"]),
                instance,
                state.to_string(),
                rules_summary(items(&c["rules"])),
            ]
        })
        .collect();
    table(&["NAME", "USERNAME", "INSTANCE", "STATE", "RULES"], rows);
}

/// `allow publish plant/#`
fn rule_text(rule: &Value) -> String {
    format!(
        "{} {} {}",
        text(&rule["effect"]),
        text(&rule["actions"]),
        text(&rule["filter"])
    )
}

/// `allow publish plant/#; deny both plant/secret/#`, or `(none)`.
fn rules_summary(rules: &[Value]) -> String {
    if rules.is_empty() {
        return "(none)".to_string();
    }
    rules.iter().map(rule_text).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: BrokerCommand,
    }

    fn parse(args: &[&str]) -> Result<BrokerCommand, clap::Error> {
        Cli::try_parse_from([&["broker"], args].concat()).map(|c| c.command)
    }

    fn rule(effect: Effect, actions: Actions, filter: &str) -> AclRule {
        AclRule {
            effect,
            actions,
            filter: filter.to_string(),
        }
    }

    #[test]
    fn rule_flags_keep_their_command_line_order_across_kinds() {
        let Ok(BrokerCommand::Rules { id, rules, clear }) = parse(&[
            "rules",
            "abc",
            "--deny",
            "plant/secret/#",
            "--allow-publish",
            "plant/#",
            "--deny-subscribe",
            "plant/+/raw",
            "--allow",
            "shared/#",
            "--allow-subscribe",
            "cmd/+",
            "--deny-publish",
            "plant/x",
            "--deny",
            "a",
        ]) else {
            panic!("parses");
        };
        assert_eq!(id, "abc");
        assert!(!clear);
        assert_eq!(
            rules.rules,
            vec![
                rule(Effect::Deny, Actions::Both, "plant/secret/#"),
                rule(Effect::Allow, Actions::Publish, "plant/#"),
                rule(Effect::Deny, Actions::Subscribe, "plant/+/raw"),
                rule(Effect::Allow, Actions::Both, "shared/#"),
                rule(Effect::Allow, Actions::Subscribe, "cmd/+"),
                rule(Effect::Deny, Actions::Publish, "plant/x"),
                rule(Effect::Deny, Actions::Both, "a"),
            ]
        );
        let body = rules.body().unwrap();
        assert_eq!(
            body[0],
            json!({"effect": "deny", "actions": "both", "filter": "plant/secret/#"})
        );
    }

    #[test]
    fn a_json_file_excludes_the_flags_and_create_needs_no_rules() {
        assert!(parse(&["create", "x", "--allow", "a/#", "--rules-json", "-"]).is_err());
        let Ok(BrokerCommand::Create { name, rules }) = parse(&["create", "gateway 1"]) else {
            panic!("parses");
        };
        assert_eq!(name, "gateway 1");
        assert!(!rules.given());
        let Ok(BrokerCommand::Create { rules, .. }) =
            parse(&["create", "x", "--rules-json", "rules.json"])
        else {
            panic!("parses");
        };
        assert_eq!(rules.json, Some(PathBuf::from("rules.json")));
    }

    #[test]
    fn rules_are_summarised_in_order() {
        let rules = [
            json!({"effect": "allow", "actions": "publish", "filter": "plant/#"}),
            json!({"effect": "deny", "actions": "both", "filter": "plant/secret/#"}),
        ];
        assert_eq!(
            rules_summary(&rules),
            "allow publish plant/#; deny both plant/secret/#"
        );
        assert_eq!(rules_summary(&[]), "(none)");
    }
}

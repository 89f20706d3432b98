//! Offline administration: works on the database directly, audited as the
//! local operator (client address 127.0.0.1, agent "redwall-cli").

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use redwall_crypto::Secret;
use redwall_hub::passwords::NewAccount;
use redwall_hub::{HubError, Who};
use redwall_server::audit::Actor;
use redwall_server::clock::SystemClock;
use redwall_server::config::Config;
use redwall_server::net::client::ClientInfo;
use redwall_server::AppState;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create a user (the first platform admin, or any other).
    CreateUser {
        #[arg(long)]
        username: String,
        /// Make the user a platform admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Import users from a Node-RED adminAuth list (JSON, or a settings.js).
    /// Their bcrypt hashes keep working and become argon2id at the next login.
    ImportNodeRedUsers { file: PathBuf },
}

pub async fn open(config: Config, master_key: Option<Secret>) -> anyhow::Result<AppState> {
    redwall_server::open_state(config, Arc::new(SystemClock), master_key).await
}

pub(crate) fn operator() -> (Actor, ClientInfo) {
    let who = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    (
        Actor {
            id: None,
            name: Some(format!("cli:{who}")),
        },
        ClientInfo {
            ip: std::net::IpAddr::from([127, 0, 0, 1]),
            user_agent: Some("redwall-cli".into()),
            https: false,
        },
    )
}

pub async fn run(
    cmd: AdminCommand,
    config: Config,
    master_key: Option<Secret>,
) -> anyhow::Result<ExitCode> {
    let state = open(config, master_key).await?;
    match cmd {
        AdminCommand::CreateUser {
            username,
            admin,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let (actor, client) = operator();
            let origin = client.origin();
            let who = Who {
                actor: Some(&actor),
                origin: &origin,
            };
            let user = state
                .hub
                .create_user(
                    who,
                    NewAccount {
                        username: &username,
                        password: password.expose(),
                        is_admin: admin,
                    },
                )
                .await
                .map_err(|e| anyhow!("{e}"))?;
            println!(
                "created {} {} (id {})",
                if user.is_admin {
                    "platform admin"
                } else {
                    "user"
                },
                user.username,
                user.id
            );
        }
        AdminCommand::ImportNodeRedUsers { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let users = redwall_server::import::parse_users(&text)?;
            let (actor, client) = operator();
            let mut imported = 0;
            let origin = client.origin();
            let who = Who {
                actor: Some(&actor),
                origin: &origin,
            };
            for u in users {
                let imported_user = state
                    .hub
                    .import_user(who, &u.username, &u.password, &u.permissions)
                    .await;
                match imported_user {
                    Ok(user) => {
                        imported += 1;
                        println!(
                            "imported {} (Node-RED permissions {})",
                            user.username, u.permissions
                        );
                    }
                    Err(HubError::Refused {
                        code: "username_taken",
                        ..
                    }) => {
                        println!("skipped {}: a user with this name exists", u.username);
                    }
                    Err(e @ HubError::Refused { .. }) => {
                        println!("skipped {:?}: {e}", u.username);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            println!("{imported} user(s) imported; they log in with their Node-RED passwords");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_password(from_stdin: bool) -> anyhow::Result<Secret> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let trimmed = line.trim_end_matches(['\r', '\n']).to_string();
        if trimmed.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(Secret::new(trimmed));
    }
    let first = rpassword::prompt_password("Password: ")?;
    let second = rpassword::prompt_password("Repeat: ")?;
    if first != second {
        bail!("the passwords differ");
    }
    Ok(Secret::new(first))
}

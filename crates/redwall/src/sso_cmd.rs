//! `redwall sso ...` and the directory part of `redwall config check`.

use anyhow::Context;
use clap::Subcommand;
use redwall_crypto::keyring::Keyring;
use redwall_crypto::Secret;
use redwall_server::config::Config;
use redwall_server::sso::config::LdapProvider;
use redwall_server::sso::ldap::Directory;
use redwall_server::sso::secrets;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum SsoCommand {
    /// Re-read every LDAP-linked user's groups with the service account and
    /// apply the group mapping now (a user gone from the directory loses
    /// the mapped roles), instead of waiting for their next login.
    Resync,
    /// Seal a provider secret (read from standard input) with the master
    /// key; put the output in `client_secret = { sealed = "..." }`.
    SealSecret,
    /// Link an existing Redwall user to a provider's subject, for providers
    /// that do not provision users (`provision = false`). The subject is
    /// the LDAP entry's `subject_attribute` value (or DN), or for OpenID
    /// Connect `{issuer}#{sub}`.
    Link {
        #[arg(long)]
        provider: String,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        username: String,
    },
}

pub async fn run(
    cmd: SsoCommand,
    config: Config,
    master_key: Option<Secret>,
) -> anyhow::Result<ExitCode> {
    match cmd {
        SsoCommand::Resync => resync(config, master_key).await,
        SsoCommand::SealSecret => seal_secret(&config, master_key),
        SsoCommand::Link {
            provider,
            subject,
            username,
        } => link(config, master_key, &provider, &subject, &username).await,
    }
}

async fn link(
    config: Config,
    master_key: Option<Secret>,
    provider: &str,
    subject: &str,
    username: &str,
) -> anyhow::Result<ExitCode> {
    let known = config.sso.ldap.iter().any(|p| p.name == provider)
        || config.sso.oidc.iter().any(|p| p.name == provider);
    if !known {
        eprintln!("error: no provider named {provider:?} is configured");
        return Ok(ExitCode::from(2));
    }
    let state = crate::admin::open(config, master_key).await?;
    let (actor, client) = crate::admin::operator();
    let origin = client.origin();
    let who = redwall_hub::Who {
        actor: Some(&actor),
        origin: &origin,
    };
    match state
        .hub
        .link_identity(who, provider, subject, username)
        .await
    {
        Ok(_) => {}
        Err(e @ redwall_hub::HubError::Refused { .. }) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    }
    println!("linked {username} to {provider} subject {subject}");
    Ok(ExitCode::SUCCESS)
}

fn service_password(keyring: &Keyring, p: &LdapProvider) -> Result<Secret, String> {
    secrets::resolve(keyring, &p.bind_password, |k| std::env::var(k).ok())
        .map_err(|why| format!("{}: bind_password: {why}", p.name))
}

/// Connect, TLS, service bind and user base of every LDAP provider: one
/// line per provider that fails. The master key is only read, never
/// created: a check must not change the data directory.
pub async fn check_ldap(config: &Config, master_key: Option<&Secret>) -> Vec<String> {
    if config.sso.ldap.is_empty() {
        return Vec::new();
    }
    let key_file = config.data_dir.join("master.key");
    let keyring = match (master_key, key_file.is_file()) {
        (Some(k), _) => Keyring::from_base64(k.expose().trim()).ok(),
        (None, true) => redwall_server::keys::load_or_create(&config.data_dir, None).ok(),
        (None, false) => None,
    };
    let mut out = Vec::new();
    for p in &config.sso.ldap {
        let password = match &keyring {
            Some(k) => service_password(k, p),
            // Without a master key only an environment secret can be read.
            None if p.bind_password.env.is_some() => service_password(&Keyring::generate(), p),
            None => Err(format!(
                "{}: bind_password is sealed, and no master key is available here to open it",
                p.name
            )),
        };
        let result = match password {
            Ok(pw) => redwall_server::sso::ldap::check(p, &pw).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => println!("  ldap {}: {} reachable, service bind OK", p.name, p.url),
            Err(e) => out.push(e),
        }
    }
    out
}

async fn resync(config: Config, master_key: Option<Secret>) -> anyhow::Result<ExitCode> {
    let state = crate::admin::open(config, master_key).await?;
    let (_, client) = crate::admin::operator();
    let identities = state
        .hub
        .linked_identities()
        .await
        .context("reading the linked identities")?;
    let (mut synced, mut gone, mut failed) = (0usize, 0usize, 0usize);
    for p in &state.config.sso.ldap {
        let linked: Vec<_> = identities
            .iter()
            .filter(|(prov, _, _)| *prov == p.name)
            .collect();
        if linked.is_empty() {
            continue;
        }
        let password = match service_password(&state.keyring, p) {
            Ok(pw) => pw,
            Err(e) => {
                println!("{e}: {} user(s) skipped", linked.len());
                failed += linked.len();
                continue;
            }
        };
        let mut dir = match Directory::open(p, &password).await {
            Ok(d) => d,
            Err(f) => {
                println!("{}: {}: {} user(s) skipped", p.name, f.detail, linked.len());
                failed += linked.len();
                continue;
            }
        };
        for (_, subject, user_id) in linked {
            let user = match state.hub.stored_user(user_id).await {
                Ok(user) => user,
                Err(redwall_hub::HubError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            let groups = match dir.find_subject(subject).await {
                Ok(Some(entry)) => entry.groups,
                Ok(None) => {
                    gone += 1;
                    println!(
                        "{} ({}): no longer in the directory: mapped roles removed",
                        user.username, p.name
                    );
                    Vec::new()
                }
                Err(f) => {
                    failed += 1;
                    println!("{} ({}): skipped: {}", user.username, p.name, f.detail);
                    continue;
                }
            };
            let outcome = state
                .hub
                .map_sso_groups(
                    &client.origin(),
                    &user,
                    &p.name,
                    &groups,
                    &state.config.sso.mappings,
                )
                .await
                .map_err(|e| anyhow::anyhow!("applying the mapping to {}: {e:?}", user.username))?;
            let teams: Vec<String> = outcome
                .teams
                .iter()
                .map(|(team, role)| format!("{team}={}", role.map_or("none", |r| r.name())))
                .collect();
            println!(
                "{} ({}): {} group(s); teams: {}; admin: {}",
                user.username,
                p.name,
                groups.len(),
                if teams.is_empty() {
                    "-".to_string()
                } else {
                    teams.join(", ")
                },
                outcome
                    .admin
                    .map_or("unmanaged", |a| if a { "yes" } else { "no" })
            );
            synced += 1;
        }
        dir.close().await;
    }
    println!("resynced {synced} user(s): {gone} no longer in the directory, {failed} skipped");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Reads a secret from standard input (one line; a trailing newline is not
/// part of it) and prints it sealed with the master key, which is created
/// in the data directory if there is none yet, as `serve` would.
fn seal_secret(config: &Config, master_key: Option<Secret>) -> anyhow::Result<ExitCode> {
    let created = master_key.is_none() && !config.data_dir.join("master.key").is_file();
    let keyring = redwall_server::keys::load_or_create(
        &config.data_dir,
        master_key.as_ref().map(|k| k.expose()),
    )
    .context("loading the master key")?;
    let input =
        Secret::new(std::io::read_to_string(std::io::stdin()).context("reading standard input")?);
    let plain = input.expose().trim_end_matches(['\r', '\n']);
    if plain.is_empty() {
        anyhow::bail!("no secret on standard input");
    }
    if created {
        eprintln!(
            "created a new master key in {}",
            config.data_dir.join("master.key").display()
        );
    }
    println!("{}", secrets::seal(&keyring, plain));
    Ok(ExitCode::SUCCESS)
}

/// Reads every OpenID Connect provider's discovery document and keys: one
/// line per provider that fails.
pub async fn check_oidc(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for p in &config.sso.oidc {
        match redwall_server::sso::oidc::check(p).await {
            Ok(line) => println!("  oidc {line}"),
            Err(e) => out.push(e),
        }
    }
    out
}

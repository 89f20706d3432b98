//! The `redwall` command: `serve`; the offline `admin`, `audit`, `config`
//! and `keys` commands that work on the same database and keys; and
//! `instance`, a client of the serving process's HTTP API.

mod admin;
mod agent_cmd;
mod broker_cmd;
mod client;
mod instance_cmd;
mod pipeline_cmd;
mod snapshot_cmd;
mod sso_cmd;

use anyhow::Context;
use clap::{Parser, Subcommand};
use redwall_crypto::Secret;
use redwall_server::clock::SystemClock;
use redwall_server::config::{Config, Severity};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "redwall",
    version,
    about = "A secure control plane for Node-RED fleets"
)]
struct Cli {
    /// A TOML configuration file (REDWALL_* environment variables override it).
    #[arg(long, global = true, env = "REDWALL_CONFIG")]
    config: Option<PathBuf>,
    /// Shortcut for database_url (sqlite://FILE or postgres://...).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Shortcut for data_dir.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Manage users without the server.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the keys that seal stored secrets.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Single sign-on maintenance.
    #[command(subcommand)]
    Sso(sso_cmd::SsoCommand),
    /// Manage a team's Node-RED instances on a running Redwall (its API,
    /// with a personal access token from REDWALL_TOKEN).
    Instance(instance_cmd::InstanceArgs),
    /// Manage a team broker's MQTT clients on a running Redwall (its API,
    /// with a personal access token from REDWALL_TOKEN).
    Broker(broker_cmd::BrokerArgs),
    /// Signed snapshots of a team's instances: list, take, compare, roll
    /// back, export and import, on a running Redwall (its API, with a
    /// personal access token from REDWALL_TOKEN).
    Snapshot(snapshot_cmd::SnapshotArgs),
    /// A team's instance groups (deploy targets): list, set, delete, on a
    /// running Redwall (its API, with a personal access token from
    /// REDWALL_TOKEN).
    Group(pipeline_cmd::GroupArgs),
    /// Deploy a snapshot to an instance or a group (or some of its
    /// instances), now or held for a deploy window (UTC), on a running
    /// Redwall (its API, with a personal access token from REDWALL_TOKEN).
    Deploy(pipeline_cmd::DeployArgs),
    /// Pipelines of stages a snapshot is promoted through, with approval
    /// by a second Owner: list, create, delete, promote, promotions,
    /// approve, on a running Redwall (its API, with a personal access
    /// token from REDWALL_TOKEN).
    Pipeline(pipeline_cmd::PipelineArgs),
    /// A team's remote agents: provision (a one-time enrolment bundle),
    /// list, show, ping, restart, revoke, delete, on a running Redwall (its
    /// API, with a personal access token from REDWALL_TOKEN).
    Agent(agent_cmd::AgentArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-seal every instance secret and environment value under a new key
    /// version, in one transaction (audited).
    RotateInstanceSecrets,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain and name the first entry altered, removed or
    /// inserted (after a prune, from its checkpoint on).
    Verify {
        /// Check an export file instead of the database (needs only the
        /// master key).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Write the entries older than DATE to FILE as JSON lines with their
    /// chain hashes, check the file, and record the export (audited).
    Export {
        /// 2026-01-31 (midnight UTC) or an RFC 3339 time.
        #[arg(long)]
        before: String,
        /// A new file (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Remove the entries older than DATE once an export holds them all,
    /// behind a chained checkpoint entry, so `audit verify` still proves the
    /// rest. Refused while the chain does not verify.
    Prune {
        /// 2026-01-31 (midnight UTC) or an RFC 3339 time.
        #[arg(long)]
        before: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Explain every invalid or unsafe setting.
    Check,
}

fn main() -> ExitCode {
    keep_hash_buffers_out_of_the_heap();
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // Redwall shares its machine with the Node-RED instances it runs, and
    // its own work per request is small: half the cores (at least one)
    // leaves the rest to the instances, and fewer workers hand requests
    // between threads less often (measured in BENCHMARKS.md).
    let workers = std::env::var("REDWALL_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get() / 2)
                .max(1)
        });
    builder.worker_threads(workers);
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Each argon2id hash allocates a 19 MiB block. glibc raises its mmap
/// threshold after the first such block is freed, so later blocks come from
/// the heap and stay resident: a server idled at ~70 MB after three hashes
/// and grew to ~126 MB with more login threads. Fixing the threshold keeps
/// large blocks in mmap, returned to the system when freed (idle ~13 MB,
/// same throughput; BENCHMARKS.md).
fn keep_hash_buffers_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is called once,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref(), |k| std::env::var(k).ok())?;
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(url) = &cli.database_url {
        config.database_url = Some(url.clone());
    }
    Ok(config)
}

fn master_key() -> Option<Secret> {
    std::env::var("REDWALL_MASTER_KEY").ok().map(Secret::new)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A client of a (maybe remote) server: the local configuration is not its business.
    if let Command::Instance(args) = cli.command {
        return Ok(instance_cmd::run(args).await);
    }
    if let Command::Broker(args) = cli.command {
        return Ok(broker_cmd::run(args).await);
    }
    if let Command::Snapshot(args) = cli.command {
        return Ok(snapshot_cmd::run(args).await);
    }
    if let Command::Group(args) = cli.command {
        return Ok(pipeline_cmd::run_group(args).await);
    }
    if let Command::Deploy(args) = cli.command {
        return Ok(pipeline_cmd::run_deploy(args).await);
    }
    if let Command::Pipeline(args) = cli.command {
        return Ok(pipeline_cmd::run_pipeline(args).await);
    }
    if let Command::Agent(args) = cli.command {
        return Ok(agent_cmd::run(args).await);
    }
    let config = load_config(&cli)?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Admin(cmd) => admin::run(cmd, config, master_key()).await,
        Command::Audit(AuditCommand::Verify { file: None }) => verify_audit(config).await,
        Command::Audit(AuditCommand::Verify { file: Some(file) }) => {
            verify_export_file(config, &file)
        }
        Command::Audit(AuditCommand::Export { before, out }) => {
            export_audit(config, &before, &out).await
        }
        Command::Audit(AuditCommand::Prune { before }) => prune_audit(config, &before).await,
        Command::Config(ConfigCommand::Check) => Ok(check_config(&config).await),
        Command::Sso(cmd) => sso_cmd::run(cmd, config, master_key()).await,
        Command::Keys(KeysCommand::RotateInstanceSecrets) => rotate_instance_secrets(config).await,
        // Handled above, before any configuration is read.
        Command::Instance(_)
        | Command::Broker(_)
        | Command::Snapshot(_)
        | Command::Group(_)
        | Command::Deploy(_)
        | Command::Pipeline(_)
        | Command::Agent(_) => Ok(ExitCode::FAILURE),
    }
}

async fn rotate_instance_secrets(config: Config) -> anyhow::Result<ExitCode> {
    let state = admin::open(config, master_key()).await?;
    let (actor, client) = admin::operator();
    let origin = client.origin();
    let who = redwall_hub::Who {
        actor: Some(&actor),
        origin: &origin,
    };
    let report = state
        .hub
        .rotate_instance_secrets(who)
        .await
        .context("rotating the instance secrets")?;
    println!(
        "re-sealed {} instance secret(s) and environment value(s): key version {} -> {}",
        report.resealed, report.from_version, report.to_version
    );
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    redwall_server::logging::init(&config.log);
    let running = redwall_server::start(redwall_server::StartOptions {
        config,
        clock: Arc::new(SystemClock),
        master_key: master_key(),
        run_instances: true,
    })
    .await?;
    // The setup token goes to the console only, never into the structured log.
    if let Some(token) = &running.setup_token {
        println!();
        println!("  Redwall has no users yet. Create the first platform admin within one hour:");
        println!();
        println!(
            "    open {}/setup and enter the setup token",
            running.base_url()
        );
        println!();
        println!("    {}", token.expose());
        println!();
        println!("  or from a script:");
        println!();
        println!("    curl -k -X POST {}/api/v1/setup \\", running.base_url());
        println!("      -H 'Content-Type: application/json' \\");
        println!(
            "      -d '{{\"setup_token\":\"{}\",\"username\":\"admin\",\"password\":\"<at least 12 characters>\"}}'",
            token.expose()
        );
        println!();
        println!("  (or run `redwall admin create-user --admin` on this machine)");
        println!();
    }
    println!("Redwall is listening on {}", running.base_url());
    running.wait().await?;
    Ok(ExitCode::SUCCESS)
}

async fn verify_audit(config: Config) -> anyhow::Result<ExitCode> {
    let state = admin::open(config, master_key()).await?;
    let started = std::time::Instant::now();
    let report = state
        .hub
        .check_audit_chain()
        .await
        .context("reading the audit log")?;
    let took = started.elapsed();
    match report.problem {
        None => {
            println!(
                "audit chain intact: {} entries verified (last seq {}) in {:.2}s",
                report.checked,
                report.last_seq.map_or("-".to_string(), |s| s.to_string()),
                took.as_secs_f64()
            );
            if let Some(through) = report.pruned_through {
                println!(
                    "  entries 1 to {through} were pruned; the chain starts at their checkpoint"
                );
            }
            let pending = state.hub.pending_audit_entries().await.unwrap_or(0);
            if pending > 0 {
                println!(
                    "  {pending} entries committed with their changes are not chained yet; \
                     the audit writer chains them as soon as it runs"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(p) => {
            println!(
                "audit chain BROKEN at entry {}: {:?}: {} ({} entries checked)",
                p.seq, p.kind, p.message, report.checked
            );
            Ok(ExitCode::from(2))
        }
    }
}

fn parse_before(before: &str) -> anyhow::Result<i64> {
    redwall_hub::retention::parse_date(before)
        .ok_or_else(|| anyhow::anyhow!("--before must be a date (2026-01-31) or an RFC 3339 time"))
}

fn verify_export_file(config: Config, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let key_file = config.data_dir.join("master.key");
    let from_env = master_key();
    if from_env.is_none() && !key_file.is_file() {
        anyhow::bail!(
            "no master key: set REDWALL_MASTER_KEY or point --data-dir at the directory holding master.key"
        );
    }
    let keyring = redwall_server::keys::load_or_create(
        &config.data_dir,
        from_env.as_ref().map(|s| s.expose()),
    )?;
    let key = redwall_crypto::chain::ChainKey::from_keyring(&keyring);
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let report = redwall_store::verify_export(&key, reader)?;
    match report.problem {
        None => {
            println!(
                "export intact: {} entries verified (seq {} to {})",
                report.checked,
                report.first_seq.map_or("-".into(), |s| s.to_string()),
                report.last_seq.map_or("-".into(), |s| s.to_string()),
            );
            println!(
                "  starts after hash {} (zeros: the start of the log; else the previous export's last hash)",
                report.starts_after.as_deref().unwrap_or("-")
            );
            println!("  last hash {}", report.last_hash.as_deref().unwrap_or("-"));
            Ok(ExitCode::SUCCESS)
        }
        Some((line, why)) => {
            println!(
                "export BROKEN at line {line}: {why} ({} entries checked)",
                report.checked
            );
            Ok(ExitCode::from(2))
        }
    }
}

async fn export_audit(
    config: Config,
    before: &str,
    out: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let before = parse_before(before)?;
    let state = admin::open(config, master_key()).await?;
    let (actor, client) = admin::operator();
    let origin = client.origin();
    let who = redwall_hub::Who {
        actor: Some(&actor),
        origin: &origin,
    };
    let exported = redwall_hub::retention::export_before(&state.hub, who, before, out).await?;
    match exported {
        None => println!("no audit entries before that time: nothing exported"),
        Some(e) => println!(
            "exported entries {} to {} ({} entries) to {}; recorded as entry {}",
            e.cut.first_seq,
            e.cut.through_seq,
            e.cut.entries(),
            out.display(),
            e.recorded_seq
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn prune_audit(config: Config, before: &str) -> anyhow::Result<ExitCode> {
    let before = parse_before(before)?;
    let state = admin::open(config, master_key()).await?;
    let (actor, client) = admin::operator();
    let origin = client.origin();
    let who = redwall_hub::Who {
        actor: Some(&actor),
        origin: &origin,
    };
    let pruned = redwall_hub::retention::prune_before(&state.hub, who, before).await?;
    match &pruned {
        None => println!("no audit entries before that time: nothing pruned"),
        Some(p) => println!(
            "pruned entries {} to {} ({} entries, exported as recorded in entry {}); checkpoint is entry {}",
            p.cut.first_seq,
            p.cut.through_seq,
            p.cut.entries(),
            p.export_seq,
            p.checkpoint_seq
        ),
    }
    if let Some(p) = pruned.as_ref().filter(|p| p.kept_unexported > 0) {
        println!(
            "  {} later entries before that time were kept: no export holds them yet",
            p.kept_unexported
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn check_config(config: &Config) -> ExitCode {
    let problems = config.check();
    // The directories are only tried when the settings themselves are sound.
    let unreachable = if problems.iter().any(|p| p.severity == Severity::Error) {
        Vec::new()
    } else {
        sso_cmd::check_ldap(config, master_key().as_ref()).await
    };
    for line in &unreachable {
        println!("error: sso.ldap: {line}");
    }
    let no_discovery = if problems.iter().any(|p| p.severity == Severity::Error) {
        Vec::new()
    } else {
        sso_cmd::check_oidc(config).await
    };
    for line in &no_discovery {
        println!("error: sso.oidc: {line}");
    }
    if !unreachable.is_empty() || !no_discovery.is_empty() {
        return ExitCode::FAILURE;
    }
    if problems.is_empty() {
        println!("configuration OK");
        println!("  database: {}", redact_url(&config.database_url()));
        println!(
            "  listen:   {} (tls: {:?})",
            config.server.listen, config.tls.mode
        );
        println!("  sandbox:  {}", config.sandbox_summary());
        println!("  broker:   {}", config.broker_summary());
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        println!("{p}");
    }
    if problems.iter().any(|p| p.severity == Severity::Error) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A database URL without its password, for display.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

//! `redwall-agent`: the command line over the library. Exit statuses:
//! 0 done (or stopped by SIGTERM/SIGINT), 1 failed, 2 bad usage (clap),
//! 3 revoked by the hub, 4 key refused by the hub. `run` may exec another
//! build of the agent (an update from the hub, see `launcher.rs`).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use redwall_agent::launcher;
use redwall_agent::state::DEFAULT_NODE_RED_PORT;
use redwall_agent::{
    enrol_with, read_bundle_arg, run_dir, NodeRedConfig, RunOptions, RunOutcome, DEFAULT_DIR,
};
use tracing_subscriber::EnvFilter;

/// The Redwall agent: enrols with a Redwall hub, then keeps an outbound
/// connection to it.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The agent's state directory (agent.key, agent.json).
    #[arg(long, global = true, env = "REDWALL_AGENT_DIR", default_value = DEFAULT_DIR)]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enrol this agent with a hub, once, with the provisioning bundle
    /// `redwall agent provision` printed.
    Enrol {
        /// The bundle line (rwbundle1....), or @FILE to read it from a file
        /// (keeps the one-time token out of shell history and `ps`).
        #[arg(long, env = "REDWALL_AGENT_BUNDLE", hide_env_values = true)]
        bundle: String,
        /// The agent's name in its team: 2 to 40 of a-z, 0-9 and '-'.
        #[arg(long)]
        name: String,
        /// Run this Node-RED: its `node-red` package directory (the one
        /// holding red.js). Without it the agent runs no Node-RED.
        #[arg(long, value_name = "DIR")]
        node_red_path: Option<PathBuf>,
        /// The node binary for Node-RED (default: `node` on PATH).
        #[arg(long, value_name = "PATH", requires = "node_red_path")]
        node: Option<PathBuf>,
        /// The port Node-RED listens on, on 127.0.0.1 only.
        #[arg(long, value_name = "N", requires = "node_red_path", default_value_t = DEFAULT_NODE_RED_PORT)]
        port: u16,
    },
    /// Connect to the hub and stay connected (what the systemd unit runs).
    Run,
    /// The site's MQTT broker, as the agent's child process: reads its
    /// configuration as JSON on stdin (see `site_broker::child`). Not for
    /// people: `run` starts it when DIR/site-broker.toml exists.
    #[command(hide = true)]
    SiteBroker,
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    if let Command::SiteBroker = cli.command {
        // Its own process and runtime, before anything else of the agent.
        return redwall_agent::site_broker::child::main();
    }
    redwall_agent::tls::install_crypto_provider();
    // One thread is plenty for one connection, and keeps the agent small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Enrol {
                bundle,
                name,
                node_red_path,
                node,
                port,
            } => {
                let node_red = node_red_path.map(|package_dir| NodeRedConfig {
                    package_dir,
                    node: node.unwrap_or_else(|| PathBuf::from("node")),
                    port,
                });
                let enrolled = match read_bundle_arg(&bundle) {
                    Ok(b) => enrol_with(&b, &name, &cli.dir, node_red).await,
                    Err(e) => Err(e),
                };
                match enrolled {
                    Ok(e) => {
                        println!("enrolled as {} (agent {})", e.name, e.agent_id);
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Run => run(&cli.dir).await,
            Command::SiteBroker => ExitCode::FAILURE,
        }
    })
}

/// `run`: first the launcher (which build should run here?), then the
/// agent, and the switches to another build it asks for. A switch execs,
/// keeping the PID (systemd sees the same service go on); only a failed
/// exec comes back here, and then this build runs on.
async fn run(dir: &std::path::Path) -> ExitCode {
    if let Some(switch) = launcher::at_start(dir) {
        let err = switch.exec();
        switch.failed(dir, &err);
    }
    let options = RunOptions {
        self_update: true,
        systemd_notify: true,
        keep_own_log: true,
        ..RunOptions::default()
    };
    loop {
        match run_dir(dir, &options, stop_signal()).await {
            Ok(RunOutcome::Switch(switch)) => {
                let err = switch.exec();
                switch.failed(dir, &err);
            }
            Ok(outcome) => return ExitCode::from(outcome.exit_code()),
            Err(e) => {
                tracing::error!("cannot start: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// Logs go to stderr (the journal, under systemd); `REDWALL_AGENT_LOG`
/// filters them like `RUST_LOG` (default `info`).
fn init_logging() {
    let filter =
        EnvFilter::try_from_env("REDWALL_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .finish()
        // The agent's own lines are also kept for the hub, once `run`
        // has opened the journal.
        .with(redwall_agent::site_events::AgentLogLayer)
        .init();
}

/// Completes on SIGTERM (systemd stopping the unit) or SIGINT (Ctrl-C).
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: closing the connection (and stopping Node-RED)"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: closing the connection (and stopping Node-RED)"),
    }
}

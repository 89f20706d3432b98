//! The agent's main loop: keep one connection to the hub, dialling again
//! with a growing, jittered delay whenever it drops, until the hub revokes
//! the agent, refuses its key, or the agent is told to stop.
//!
//! With Node-RED configured, it is started first and stopped last: its
//! supervision runs beside the connection, never inside it, so a lost link
//! leaves it running. The snapshots the hub sends go to Node-RED through
//! [`NodeRedRunner`]; [`run_with`] lets a simulated agent put another
//! [`SnapshotRunner`] in its place.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use redwall_policy::agent_protocol::reconnect_delay_ms;
use tracing::{error, warn};

use crate::apply::{Deployments, SnapshotRunner};
use crate::hub_url::{BadHubUrl, HubEndpoint};
use crate::launcher::Switch;
use crate::node_red::{NodeRed, NodeRedError};
use crate::node_red_deploy::{DeployOptions, NodeRedRunner};
use crate::self_update::Updates;
use crate::session::{session, Dialer, Local, SessionEnd};
use crate::state::{Agent, StateError};
use crate::tls::{self, HubTrust, TlsSetupError};

/// Why [`run`] returned; each maps to the binary's exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Told to stop (SIGTERM, SIGINT): the hub was told with code 1000.
    Shutdown,
    /// The hub revoked (or deleted) this agent: it must never dial again.
    Revoked,
    /// The hub did not accept the agent's answer: wrong key, or an agent
    /// the hub no longer knows. Dialling again cannot help.
    Unauthenticated,
    /// Only with [`RunOptions::self_update`]: another build must run now
    /// (an update installed, or a new build rolling back). Node-RED was
    /// stopped; the caller execs it ([`Switch::exec`]).
    Switch(Switch),
}

impl RunOutcome {
    /// The process exit status: 0, 3 (revoked) or 4 (unauthenticated). The
    /// systemd unit names 3 and 4 in `RestartPreventExitStatus=`. A switch
    /// the caller did not make is a failure (1): systemd starts again.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Shutdown => 0,
            Self::Revoked => 3,
            Self::Unauthenticated => 4,
            Self::Switch(_) => 1,
        }
    }
}

/// How the reconnect delay grows (milliseconds), how long a deploy's
/// steps may take, and whether the agent updates itself.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub reconnect_base_ms: u64,
    pub reconnect_max_ms: u64,
    pub deploy: DeployOptions,
    /// The `redwall-agent` binary only: report the build that runs in the
    /// hello, take the hub's updates (returning [`RunOutcome::Switch`]),
    /// and as a new build confirm or roll back. Off by default, because an
    /// agent run inside another program must never exec over it.
    pub self_update: bool,
    /// The `redwall-agent` binary only: tell systemd it is ready and, when
    /// the unit sets a watchdog, that the main loop still moves
    /// ([`crate::watchdog`]).
    pub systemd_notify: bool,
    /// How the site broker's child is run, when `DIR/site-broker.toml`
    /// turns it on (its executable: this program's own by default).
    pub site_broker: crate::site_broker::SiteBrokerOptions,
    /// The `redwall-agent` binary only: keep the agent's own log lines for
    /// the hub too ([`crate::site_events::AgentLogLayer`]), which is
    /// one per process.
    pub keep_own_log: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            reconnect_base_ms: 500,
            reconnect_max_ms: 30_000,
            deploy: DeployOptions::default(),
            self_update: false,
            systemd_notify: false,
            site_broker: crate::site_broker::SiteBrokerOptions::default(),
            keep_own_log: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("agent.json: {0}")]
    HubUrl(#[from] BadHubUrl),
    #[error("agent.json: {0}")]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    NodeRed(#[from] NodeRedError),
    #[error("{0}")]
    LocalEndpoints(String),
    #[error("{0}")]
    Bridge(String),
    #[error("{0}")]
    SiteBroker(String),
}

/// Loads the agent from `dir` and runs it (see [`run`]). Fails only if the
/// agent cannot start at all (not enrolled, exposed key, broken files).
pub async fn run_dir(
    dir: &Path,
    options: &RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<RunOutcome, RunError> {
    let agent = Agent::load(dir)?;
    run(&agent, options, shutdown).await
}

/// [`run_dir`] with `runner` in place of the agent's own (see [`run_with`]).
pub async fn run_dir_with(
    dir: &Path,
    options: &RunOptions,
    runner: Arc<dyn SnapshotRunner>,
    shutdown: impl Future<Output = ()>,
) -> Result<RunOutcome, RunError> {
    let agent = Agent::load(dir)?;
    run_with(&agent, options, Some(runner), shutdown).await
}

/// How long a connection must have lasted for the next dial to start
/// from the shortest delay again.
const STABLE_CONNECTION: std::time::Duration = std::time::Duration::from_secs(30);

/// Starts Node-RED if the agent has one, then keeps the agent connected
/// until the hub revokes or refuses it, or `shutdown` completes; Node-RED
/// is stopped before returning. Connection failures are never returned:
/// they are logged and the agent dials again. A Node-RED that cannot be
/// set up (its install gone, its keys exposed, another agent on the same
/// directory) is an error; one that fails to start or crashes is reported
/// to the hub as `failed` instead.
pub async fn run(
    agent: &Agent,
    options: &RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<RunOutcome, RunError> {
    run_with(agent, options, None, shutdown).await
}

/// [`run`], with the hub's snapshots handed to `runner` instead of the
/// agent's Node-RED (`None`: Node-RED if the agent runs one, else every
/// deploy is answered "this agent runs no Node-RED"). For simulated agents
/// such as `examples/swarm.rs`; the `redwall-agent` binary passes `None`.
pub async fn run_with(
    agent: &Agent,
    options: &RunOptions,
    runner: Option<Arc<dyn SnapshotRunner>>,
    shutdown: impl Future<Output = ()>,
) -> Result<RunOutcome, RunError> {
    let hub = HubEndpoint::parse(&agent.config.hub_url)?;
    let dialer = Dialer::new(hub, tls::client_config(&HubTrust::of(&agent.config))?);
    // Before Node-RED: hashing the executable takes a moment, and a new
    // build's time to connect is already running.
    let updates = Arc::new(Updates::open(agent, options.self_update));
    // The site's audit events and log lines, kept until the hub has them.
    // Without them the agent still runs its flows: that is its first job.
    let site_events = match crate::site_events::SiteEvents::open(&agent.dir) {
        Ok(opened) => {
            if options.keep_own_log {
                crate::site_events::keep_agent_log(opened.1.clone());
            }
            Some(opened)
        }
        Err(e) => {
            error!("the site's audit events and logs cannot be kept for the hub: {e}");
            None
        }
    };
    let mut node_red_output = None;
    // The site broker first: Node-RED and the bridge connect to it.
    let site_broker = crate::site_broker::start_in(&agent.dir, &options.site_broker).await?;
    let node_red = match &agent.config.node_red {
        Some(config) => {
            let node_red = Arc::new(NodeRed::open(&agent.dir, config)?);
            if let Some(site_broker) = &site_broker {
                node_red.set_platform_env(site_broker.node_red_env());
            }
            if let Some((_, sender, _)) = &site_events {
                node_red.report_to(sender.clone());
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(crate::site_events::keep_node_red_output(
                    node_red.clone(),
                    sender.clone(),
                    stopped,
                ));
                node_red_output = Some((stop, task));
            }
            node_red.start().await;
            Some(node_red)
        }
        None => None,
    };
    let runner = runner.or_else(|| {
        node_red.as_ref().map(|n| {
            Arc::new(NodeRedRunner::new(n.clone(), options.deploy.clone()))
                as Arc<dyn SnapshotRunner>
        })
    });
    let deployments = Arc::new(Deployments::open(agent, runner));
    let progress = if options.systemd_notify {
        crate::watchdog::start()
    } else {
        crate::watchdog::Progress::default()
    };
    let mut local = Local::new(node_red.clone(), deployments, updates, progress);
    let site_keeper = site_events.map(|(events, _, keeper)| {
        local.site_events = Some(events);
        keeper
    });
    let (endpoints_stop, endpoints_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(node_red) = &node_red {
        local.site_access = crate::site_endpoints::start(&agent.dir, node_red, endpoints_stopped)?;
    }
    let bridge = crate::site_mqtt::start(&agent.dir, site_broker.as_ref())?;
    local.bridge_stats = bridge.as_ref().map(|b| b.stats_reader());
    let outcome = stay_connected(agent, options, &dialer, &mut local, shutdown).await;
    let _ = endpoints_stop.send(());
    if let Some(bridge) = bridge {
        bridge.shutdown().await;
    }
    if let Some(node_red) = node_red {
        node_red.stop().await;
    }
    // Its last lines and events kept; the journals close with `local`.
    if let Some((stop, task)) = node_red_output {
        let _ = stop.send(());
        let _ = task.await;
    }
    if let Some(keeper) = site_keeper {
        keeper.stop().await;
    }
    if let Some(site_broker) = site_broker {
        site_broker.shutdown().await;
    }
    if let RunOutcome::Switch(switch) = &outcome {
        local.updates.start_clock(switch);
    }
    Ok(outcome)
}

async fn stay_connected(
    agent: &Agent,
    options: &RunOptions,
    dialer: &Dialer,
    local: &mut Local,
    shutdown: impl Future<Output = ()>,
) -> RunOutcome {
    tokio::pin!(shutdown);
    // Failed dials in a row since the last connection that held.
    let mut attempt: u32 = 0;
    let updates = local.updates.clone();
    loop {
        local.progress.mark();
        // An update installed while the link was down.
        if let Ok(switch) = local.switch_rx.try_recv() {
            return RunOutcome::Switch(switch);
        }
        let started = std::time::Instant::now();
        // A new build not welcomed by its deadline goes back, whatever the
        // connection is doing (dialling, waiting for a silent hub).
        let end = tokio::select! {
            end = session(agent, dialer, local, &mut shutdown) => end,
            () = updates.rollback_due() => match updates.roll_back_late() {
                Some(switch) => return RunOutcome::Switch(switch),
                None => continue,
            },
        };
        match end {
            SessionEnd::Switch(switch) => return RunOutcome::Switch(switch),
            SessionEnd::Shutdown => return RunOutcome::Shutdown,
            SessionEnd::Revoked => {
                error!(
                    "revoked by the hub: agent {} ({}) will not connect again; enrol it anew to bring it back",
                    agent.config.name, agent.config.agent_id
                );
                return RunOutcome::Revoked;
            }
            SessionEnd::Unauthenticated => {
                error!(
                    "the hub refused this agent's key: agent {} ({}) is unknown to the hub (deleted?) or agent.key is not the key it enrolled with; enrol it anew",
                    agent.config.name, agent.config.agent_id
                );
                return RunOutcome::Unauthenticated;
            }
            SessionEnd::Lost { welcomed, why } => {
                // Only a connection that held a while starts the delays
                // afresh: one welcomed and closed at once (a copy of this
                // agent taking over, a hub that drops it) keeps backing off.
                if welcomed && started.elapsed() >= STABLE_CONNECTION {
                    attempt = 0;
                }
                let delay = reconnect_delay_ms(
                    attempt,
                    options.reconnect_base_ms,
                    options.reconnect_max_ms,
                    rand::random::<f64>(),
                );
                attempt = attempt.saturating_add(1);
                warn!("{why}; dialling again in {delay} ms");
                let redial_at =
                    tokio::time::Instant::now() + std::time::Duration::from_millis(delay);
                // Waiting is progress too: it is marked while it lasts.
                let waiting = async {
                    while tokio::time::Instant::now() < redial_at {
                        local.progress.mark();
                        tokio::time::sleep_until(
                            redial_at.min(tokio::time::Instant::now() + crate::watchdog::TICK),
                        )
                        .await;
                    }
                };
                tokio::select! {
                    () = waiting => {}
                    () = shutdown.as_mut() => return RunOutcome::Shutdown,
                    Some(switch) = local.switch_rx.recv() => return RunOutcome::Switch(switch),
                    () = updates.rollback_due() => {
                        if let Some(switch) = updates.roll_back_late() {
                            return RunOutcome::Switch(switch);
                        }
                    }
                }
            }
        }
    }
}

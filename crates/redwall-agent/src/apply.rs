//! Snapshots the hub sends to run: checked ([`crate::snapshot`]), handed
//! to a [`SnapshotRunner`] one at a time, and the last one that ran kept on
//! disk so the agent still reports it after a restart.
//!
//! A deploy runs on a task of its own (see `session.rs`): the connection's
//! loop keeps sending heartbeats while Node-RED loads and settles, and the
//! answer goes out on whichever connection is up when it is done.
//!
//! # The kept snapshot
//!
//! `DIR/running-snapshot.json` (mode 0600) holds the last snapshot that ran,
//! exactly as the hub sent it: the credentials still sealed for this agent,
//! so the file holds no secret the box key does not already guard. It is
//! replaced whole (scratch file, fsync, rename), only after the runner said
//! the snapshot runs. At start it is verified again like a new snapshot; a
//! file that fails (edited, or signed by a key the agent no longer trusts)
//! is not believed, and the agent reports no snapshot.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use redwall_crypto::signing::PublicKey;
use redwall_policy::agent_protocol::SignedSnapshot;
use redwall_policy::snapshot_format::Statement;
use tracing::{info, warn};

use crate::snapshot::{Verified, Verifier};
use crate::state::{write_private_atomically, Agent, StateError};

/// The last snapshot that ran, in the state directory.
pub const RUNNING_FILE: &str = "running-snapshot.json";
/// The largest kept file read back: a deploy frame's limit, with room.
const RUNNING_FILE_LIMIT: u64 = 48 << 20;
/// The answer to a deploy when the agent has nothing to run it with.
pub const NO_NODE_RED: &str = "this agent runs no Node-RED";

/// What a runner's future resolves to: `Ok` once the snapshot runs (with
/// anything worth adding to the answer), `Err` with the whole answer when
/// it was refused or rolled back, saying which.
pub type RunResult = Result<String, String>;

/// Makes a verified snapshot what runs. The agent's own is
/// [`crate::node_red_deploy::NodeRedRunner`]; [`RecordOnly`] stands in for
/// simulated agents. Called with one snapshot at a time.
pub trait SnapshotRunner: Send + Sync {
    /// `previous` is the snapshot that ran before, if any.
    fn run<'a>(
        &'a self,
        snapshot: &'a Verified,
        previous: Option<&'a Statement>,
    ) -> Pin<Box<dyn Future<Output = RunResult> + Send + 'a>>;
}

/// A runner that runs nothing: the snapshot was verified in full (as on
/// any agent) and is then only recorded as running. For simulated agents
/// (`examples/swarm.rs`), so a rollout can be measured without Node-RED;
/// the `redwall-agent` binary never uses it.
pub struct RecordOnly;

impl SnapshotRunner for RecordOnly {
    fn run<'a>(
        &'a self,
        _snapshot: &'a Verified,
        _previous: Option<&'a Statement>,
    ) -> Pin<Box<dyn Future<Output = RunResult> + Send + 'a>> {
        Box::pin(async { Ok(String::new()) })
    }
}

/// The snapshots of one agent: what checks them, what runs them, and which
/// one runs now. Outlives connections.
pub struct Deployments {
    verifier: Verifier,
    dir: PathBuf,
    runner: Option<Arc<dyn SnapshotRunner>>,
    running: Mutex<Option<Statement>>,
    /// One deploy at a time, in the order they arrived.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Deployments {
    /// For `agent`, with `runner` (none: every deploy is answered
    /// [`NO_NODE_RED`]). Reads back the kept snapshot, if it still verifies.
    pub fn open(agent: &Agent, runner: Option<Arc<dyn SnapshotRunner>>) -> Self {
        let verifier = Verifier {
            // Checked at enrolment; an agent.json edited since simply
            // verifies nothing.
            hub_key: PublicKey::from_base64(&agent.config.hub_signing_key).ok(),
            team_id: agent.config.team_id.clone(),
            box_key: agent.box_key.as_ref().and_then(|k| {
                redwall_crypto::agent_box::AgentBoxKey::from_bytes(k.to_bytes().as_slice()).ok()
            }),
        };
        let running = match load_kept(&agent.dir, &verifier) {
            Ok(kept) => kept,
            Err(why) => {
                warn!("{why}; this agent reports no running snapshot until the hub sends one");
                None
            }
        };
        if let Some(s) = &running {
            info!("the last snapshot that ran here is {}", s.id);
        }
        Self {
            verifier,
            dir: agent.dir.clone(),
            runner,
            running: Mutex::new(running),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The id of the snapshot that runs, for heartbeats.
    pub fn running(&self) -> Option<String> {
        self.lock_running().as_ref().map(|s| s.id.clone())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Option<Statement>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks and runs `signed`, after any deploy still under way. Returns
    /// the answer for the hub: whether the snapshot runs, and the message.
    pub async fn deploy(&self, signed: &SignedSnapshot) -> (bool, String) {
        let Some(runner) = &self.runner else {
            return (false, NO_NODE_RED.to_owned());
        };
        let _one = self.one_at_a_time.lock().await;
        let verified = match self.verifier.verify(signed) {
            Ok(v) => v,
            Err(why) => return (false, format!("refused, nothing was changed: {why}")),
        };
        let id = verified.statement.id.clone();
        let previous = self.lock_running().clone();
        match runner.run(&verified, previous.as_ref()).await {
            Err(message) => (false, message),
            Ok(note) => {
                *self.lock_running() = Some(verified.statement.clone());
                let mut message = format!("runs snapshot {id}");
                if !note.is_empty() {
                    message = format!("{message} ({note})");
                }
                if let Err(e) = keep(&self.dir, signed) {
                    // It runs all the same; only a restart of the agent
                    // would forget it, so the hub is told.
                    warn!("snapshot {id} runs but could not be kept: {e}");
                    message.push_str(&format!("; it could not be kept on disk ({e}), so after a restart this agent will not report it"));
                }
                (true, message)
            }
        }
    }
}

/// Replaces the kept snapshot with `signed`.
fn keep(dir: &Path, signed: &SignedSnapshot) -> Result<(), StateError> {
    let json = serde_json::to_vec(signed).map_err(|e| StateError::BadConfig {
        path: dir.join(RUNNING_FILE).display().to_string(),
        why: e.to_string(),
    })?;
    write_private_atomically(dir, RUNNING_FILE, &json)
}

/// The kept snapshot's statement if there is one and it verifies; why not
/// otherwise (missing is not an error).
fn load_kept(dir: &Path, verifier: &Verifier) -> Result<Option<Statement>, String> {
    use std::io::Read as _;
    let path = dir.join(RUNNING_FILE);
    let shown = path.display();
    let file = match std::fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(|e| format!("cannot open {shown}: {e}"))?,
    };
    let mut bytes = Vec::new();
    file.take(RUNNING_FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > RUNNING_FILE_LIMIT {
        return Err(format!("{shown} is too large to be a snapshot"));
    }
    let signed: SignedSnapshot =
        serde_json::from_slice(&bytes).map_err(|e| format!("{shown} is not a snapshot: {e}"))?;
    let verified = verifier
        .verify(&signed)
        .map_err(|e| format!("{shown} is not trusted: {e}"))?;
    Ok(Some(verified.statement.clone()))
}

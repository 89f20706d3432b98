//! Which build runs: the first thing `redwall-agent run` does, in every
//! build, before it opens a connection or starts Node-RED.
//!
//! systemd only ever starts the installed binary, and the agent cannot
//! replace it (it runs unprivileged), so the build the hub sent is reached
//! by `exec` from the installed one: same PID, so systemd sees no exit and
//! keeps supervising the same service. [`at_start`] reads the records of
//! [`crate::builds`] and says whether to exec another build ([`Switch`]):
//!
//! - an update pending, and this process is its new build: run (the run
//!   loop rolls back if the hub has not welcomed it by the deadline);
//! - an update pending, and this is another build (systemd restarted the
//!   installed binary after the new build crashed): start the new build
//!   again while its deadline lasts, else roll back and answer the hub;
//! - no update pending, and `builds/current` names another build: start
//!   that one, once it has been checked again like a build just sent
//!   (signature under the enrolled key, platform, size, digest), so an
//!   update survives restarts but a build file changed on disk never runs.
//!
//! Every start by this launcher counts a hop in [`HOPS_ENV`]; at
//! [`MAX_LAUNCH_HOPS`] it runs as it is rather than exec again, so no
//! state on disk can make builds start each other forever. The deliberate
//! switches (into a new build, back to the old one) reset the count: each
//! follows a change on disk that cannot repeat by itself.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use redwall_crypto::signing::PublicKey;
use tracing::{error, info, warn};

use crate::builds::{self, Pending};
use crate::enrol::platform;
use crate::state::load_config;
use crate::update::short;

/// How many starts in a row the launcher made (unset: none).
pub const HOPS_ENV: &str = "REDWALL_AGENT_EXEC_HOPS";
/// The most launcher starts in a row: the installed binary into the
/// current build, and once more into a pending new build.
pub const MAX_LAUNCH_HOPS: u32 = 2;

static OWN_SHA256: OnceLock<Option<String>> = OnceLock::new();

/// SHA-256 of the executable this process runs (`/proc/self/exe`, which
/// stays the file that was executed even if its path is replaced), read
/// once per process: it is what the hello reports, and what tells a new
/// build from an old one. `None` if it cannot be read.
pub fn own_sha256() -> Option<String> {
    OWN_SHA256
        .get_or_init(|| match builds::file_sha256(Path::new("/proc/self/exe")) {
            Ok(sha) => Some(sha),
            Err(e) => {
                warn!("cannot read this agent's own executable: {e}; the hub is told no build");
                None
            }
        })
        .clone()
}

/// Why another build is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchKind {
    /// Into the new build of an update.
    NewBuild,
    /// Back to the build that ran before an update that failed.
    RollBack,
    /// Into the build `builds/current` names (at start).
    Current,
}

/// Another build to exec, replacing this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    pub path: PathBuf,
    pub kind: SwitchKind,
    /// The hop count the next process sees (0: the variable is removed).
    hops: u32,
}

impl Switch {
    pub(crate) fn new(path: PathBuf, kind: SwitchKind) -> Self {
        Self {
            path,
            kind,
            hops: 0,
        }
    }

    /// Execs the build with this process's arguments and environment
    /// (`--dir`, `REDWALL_AGENT_DIR`, ...), keeping its PID. Returns only
    /// if the exec failed. Every file the agent opened is close-on-exec
    /// (Rust's default), so nothing leaks into the next build; Node-RED
    /// must have been stopped before (`run` does), since the next build's
    /// supervisor would otherwise find it orphaned and kill it.
    pub fn exec(&self) -> std::io::Error {
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let mut command = std::process::Command::new(&self.path);
        command.args(args);
        if self.hops == 0 {
            command.env_remove(HOPS_ENV);
        } else {
            command.env(HOPS_ENV, self.hops.to_string());
        }
        info!("starting build at {}", self.path.display());
        command.exec()
    }

    /// The exec failed with `err`, and this process goes on as the build
    /// it is. Into a new build: that update is rolled back at once (the
    /// hub is told on the next connection). Otherwise only logged.
    pub fn failed(&self, dir: &Path, err: &std::io::Error) {
        match self.kind {
            SwitchKind::NewBuild => {
                let why = format!("cannot start the new build: {err}");
                error!("{why}");
                match builds::read_pending(dir) {
                    Ok(Some(pending)) if pending.new_path == self.path => {
                        if let Err(e) = builds::roll_back(dir, &pending, &why) {
                            error!("cannot record the rollback: {e}");
                        }
                    }
                    _ => {}
                }
            }
            SwitchKind::RollBack => error!(
                "cannot go back to the build at {}: {err}; this build runs on",
                self.path.display()
            ),
            SwitchKind::Current => warn!(
                "cannot start the build at {}: {err}; this build runs instead",
                self.path.display()
            ),
        }
    }
}

/// What the records say to do, for a process running `own`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Run as this build.
    Run,
    /// Run: this process is the pending update's new build.
    RunAsNewBuild,
    /// The new build connected and `current` names it, but the pending
    /// record outlived a crash: finish the confirmation, then decide again.
    FinishConfirmation,
    /// Start the pending update's new build again: its deadline lasts.
    RetryNewBuild,
    /// The pending update's deadline passed: roll back, then decide again.
    RollBack,
    /// Start the build `current` names.
    RunCurrent(String),
}

/// The decision alone, from what is on disk and the time.
pub(crate) fn decide(
    own: &str,
    pending: Option<&Pending>,
    current: Option<&str>,
    now_unix: i64,
) -> Decision {
    match pending {
        Some(p) if p.new_sha256 == own => Decision::RunAsNewBuild,
        Some(p) if current == Some(p.new_sha256.as_str()) => Decision::FinishConfirmation,
        Some(p) if now_unix < p.deadline_unix => Decision::RetryNewBuild,
        Some(_) => Decision::RollBack,
        None => match current {
            Some(sha) if sha != own => Decision::RunCurrent(sha.to_owned()),
            _ => Decision::Run,
        },
    }
}

fn hops_from_env() -> u32 {
    std::env::var(HOPS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads the records in `dir` and acts on them: `Some` is a build to exec
/// before anything else; `None` means run as this build. Never fails: a
/// record it cannot act on is logged and this build runs.
pub fn at_start(dir: &Path) -> Option<Switch> {
    let own = own_sha256()?;
    let hops = hops_from_env();
    let hub_key = load_config(dir)
        .ok()
        .and_then(|c| PublicKey::from_base64(&c.hub_signing_key).ok());
    let mut pending = match builds::read_pending(dir) {
        Ok(p) => p,
        Err(why) => {
            warn!("{why}; forgetting that update");
            let _ = builds::remove_pending(dir);
            None
        }
    };
    // Each pass either returns or clears `pending`, so this ends.
    loop {
        let current = builds::read_current(dir);
        let decision = decide(
            &own,
            pending.as_ref(),
            current.as_deref(),
            builds::now_unix(),
        );
        match (decision, pending.take()) {
            (Decision::Run, _) => return None,
            (Decision::RunAsNewBuild, Some(p)) => {
                info!(
                    "this is build {} ({}), new: it must connect to the hub within {} s",
                    p.new_version,
                    short(&own),
                    (p.deadline_unix - builds::now_unix()).max(0)
                );
                return None;
            }
            (Decision::FinishConfirmation, Some(p)) => {
                let _ = builds::remove_pending(dir);
                builds::prune(dir, &[&p.new_sha256]);
            }
            (Decision::RetryNewBuild, Some(p)) => {
                let why = if hops >= MAX_LAUNCH_HOPS {
                    format!(
                        "build {} was started {hops} times in a row without running",
                        short(&p.new_sha256)
                    )
                } else {
                    match verify(dir, &p.new_sha256, hub_key.as_ref()) {
                        Ok(()) => {
                            info!(
                                "starting the new build {} again (its time to connect lasts)",
                                short(&p.new_sha256)
                            );
                            return Some(Switch {
                                path: p.new_path,
                                kind: SwitchKind::NewBuild,
                                hops: hops + 1,
                            });
                        }
                        Err(e) => format!("build {} no longer verifies: {e}", short(&p.new_sha256)),
                    }
                };
                roll_back(dir, &p, &why);
            }
            (Decision::RollBack, Some(p)) => {
                let why = format!(
                    "build {} did not connect to the hub within {} s",
                    short(&p.new_sha256),
                    p.confirm_within_secs
                );
                roll_back(dir, &p, &why);
            }
            (Decision::RunCurrent(sha), _) => {
                if hops >= MAX_LAUNCH_HOPS {
                    warn!(
                        "not starting build {} ({hops} starts in a row); this build runs",
                        short(&sha)
                    );
                    return None;
                }
                return match verify(dir, &sha, hub_key.as_ref()) {
                    Ok(()) => {
                        info!("starting build {}, the one the hub installed", short(&sha));
                        Some(Switch {
                            path: builds::build_path(dir, &sha),
                            kind: SwitchKind::Current,
                            hops: hops + 1,
                        })
                    }
                    Err(e) => {
                        warn!("build {} is not started: {e}; this build runs", short(&sha));
                        None
                    }
                };
            }
            // A decision about a pending update is only made with one.
            (_, None) => return None,
        }
    }
}

fn verify(dir: &Path, sha: &str, hub_key: Option<&PublicKey>) -> Result<(), String> {
    let key = hub_key.ok_or("agent.json holds no usable hub key")?;
    builds::verify_installed(dir, sha, key, &platform()).map(|_| ())
}

fn roll_back(dir: &Path, pending: &Pending, why: &str) {
    warn!("rolling back: {why}");
    if let Err(e) = builds::roll_back(dir, pending, why) {
        error!("cannot record the rollback: {e}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn pending(new: &str, deadline: i64) -> Pending {
        Pending {
            command_id: "c".into(),
            new_sha256: new.into(),
            new_version: "2".into(),
            new_path: PathBuf::from("/x"),
            old_sha256: "o".into(),
            old_path: PathBuf::from("/o"),
            deadline_unix: deadline,
            confirm_within_secs: 60,
        }
    }

    #[test]
    fn without_records_the_build_runs_as_it_is() {
        assert_eq!(decide("a", None, None, 100), Decision::Run);
        assert_eq!(decide("a", None, Some("a"), 100), Decision::Run);
    }

    #[test]
    fn the_current_build_is_started_by_any_other() {
        assert_eq!(
            decide("a", None, Some("b"), 100),
            Decision::RunCurrent("b".into())
        );
    }

    #[test]
    fn a_pending_update_is_run_retried_or_rolled_back() {
        let p = pending("n", 100);
        // The new build itself runs, even after its deadline: its own
        // timer then rolls back (after a welcome it would confirm).
        assert_eq!(decide("n", Some(&p), None, 50), Decision::RunAsNewBuild);
        assert_eq!(
            decide("n", Some(&p), Some("n"), 500),
            Decision::RunAsNewBuild
        );
        // Another build: try the new one again while its time lasts.
        assert_eq!(decide("o", Some(&p), None, 99), Decision::RetryNewBuild);
        assert_eq!(
            decide("o", Some(&p), Some("o"), 99),
            Decision::RetryNewBuild
        );
        assert_eq!(decide("o", Some(&p), None, 100), Decision::RollBack);
        assert_eq!(decide("o", Some(&p), Some("x"), 1000), Decision::RollBack);
        // current already names the new build: it had connected.
        assert_eq!(
            decide("o", Some(&p), Some("n"), 1000),
            Decision::FinishConfirmation
        );
    }
}

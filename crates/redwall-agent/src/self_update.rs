//! Updates while the agent runs: the hub's `update` message, and the new
//! build's side of it (confirm on the first welcome, roll back when the
//! deadline passes first).
//!
//! An offered build is checked ([`crate::update`]), installed and recorded
//! as pending ([`crate::builds`]) on a blocking task; then the connection
//! closes normally and `run` returns [`crate::RunOutcome::Switch`], so
//! Node-RED is stopped cleanly before the binary execs the new build. A
//! refused build changes nothing and is answered at once (not ok). The ok
//! answer comes from the new build once the hub welcomed it; a failure
//! after the switch comes from the old build after the rollback. Both go
//! through `update-answer.json` (see [`Updates::on_welcome`]).
//!
//! Only the `redwall-agent` binary updates itself ([`crate::RunOptions`]'s
//! `self_update`): an agent run inside another program (tests, the swarm
//! example) must never exec over it, and reports no build.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redwall_crypto::signing::PublicKey;
use redwall_policy::agent_protocol::{SignedBuild, DEFAULT_UPDATE_CONFIRM_SECS};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::builds::{self, OwedAnswer, Pending};
use crate::enrol::platform;
use crate::launcher::{own_sha256, Switch, SwitchKind};
use crate::session::Done;
use crate::state::Agent;
use crate::update::{short, verify_build};

/// The longest a new build may be given to connect: a day.
pub const MAX_CONFIRM_SECS: u64 = 24 * 60 * 60;
/// The answer to an update when the agent runs inside another program.
pub const NOT_SELF_UPDATING: &str =
    "this agent runs inside another program and does not update itself";
/// The answer to an update while another is being installed.
pub const ALREADY_UPDATING: &str = "another update is being installed";

/// Seconds a new build gets to connect: the hub's, 0 meaning the default,
/// at most [`MAX_CONFIRM_SECS`] (a deadline days away would leave a broken
/// build in place that long).
pub fn confirm_secs(asked: u64) -> u64 {
    if asked == 0 {
        DEFAULT_UPDATE_CONFIRM_SECS
    } else {
        asked.min(MAX_CONFIRM_SECS)
    }
}

/// The agent's updates: its own build, and the update it is the new
/// build of until the hub welcomes it.
pub(crate) struct Updates {
    enabled: bool,
    dir: PathBuf,
    own_sha256: Option<String>,
    hub_key: Option<PublicKey>,
    /// The pending update this process is the new build of, until the
    /// first welcome confirms it (or its deadline rolls it back).
    confirming: Mutex<Option<Pending>>,
    /// The command whose build is being checked and installed (or was
    /// installed and is being switched to).
    installing: Mutex<Option<String>>,
}

impl Updates {
    /// Reads this process's build and the pending update (with
    /// `enabled`; otherwise the agent knows no build and takes no update).
    pub(crate) fn open(agent: &Agent, enabled: bool) -> Self {
        let own_sha256 = if enabled { own_sha256() } else { None };
        let confirming = match (&own_sha256, builds::read_pending(&agent.dir)) {
            (Some(own), Ok(Some(p))) if &p.new_sha256 == own => Some(p),
            (_, Err(why)) if enabled => {
                warn!("{why}");
                None
            }
            _ => None,
        };
        Self {
            enabled,
            dir: agent.dir.clone(),
            own_sha256,
            // Checked at enrolment; an agent.json edited since verifies
            // nothing, so every build is refused.
            hub_key: PublicKey::from_base64(&agent.config.hub_signing_key).ok(),
            confirming: Mutex::new(confirming),
            installing: Mutex::new(None),
        }
    }

    /// SHA-256 of the running executable, for the hello.
    pub(crate) fn own_sha256(&self) -> Option<String> {
        self.own_sha256.clone()
    }

    fn lock_installing(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.installing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_confirming(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        self.confirming.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hub welcomed this process. If it is a pending update's new
    /// build, the update is confirmed now. Returns the answer owed to the
    /// hub, if any: the send must follow, then [`Updates::answered`].
    pub(crate) fn on_welcome(&self) -> Option<OwedAnswer> {
        if !self.enabled {
            return None;
        }
        let pending = self.lock_confirming().take();
        if let Some(p) = pending {
            match builds::confirm(&self.dir, &p) {
                Ok(answer) => info!("update {}: {}", p.command_id, answer.message),
                Err(e) => {
                    // Without `current` the update would not survive a
                    // restart: leave it pending, and the deadline rolls back.
                    error!("cannot confirm the update: {e}");
                    *self.lock_confirming() = Some(p);
                }
            }
        }
        match builds::read_answer(&self.dir) {
            Ok(answer) => answer,
            Err(why) => {
                warn!("{why}; it is dropped");
                let _ = builds::remove_answer(&self.dir);
                None
            }
        }
    }

    /// The owed answer for `command_id` reached the connection.
    pub(crate) fn answered(&self, command_id: &str) {
        if let Ok(Some(a)) = builds::read_answer(&self.dir) {
            if a.command_id == command_id {
                if let Err(e) = builds::answer_sent(&self.dir) {
                    warn!("{e}; the answer may be sent again");
                }
            }
        }
    }

    /// Completes when this process is an unconfirmed new build whose
    /// deadline has passed; never otherwise.
    pub(crate) async fn rollback_due(&self) {
        let deadline = self.lock_confirming().as_ref().map(|p| p.deadline_unix);
        let Some(deadline) = deadline else {
            return std::future::pending().await;
        };
        let left = u64::try_from(deadline - builds::now_unix()).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(left)).await;
        if self.lock_confirming().is_none() {
            // Welcomed meanwhile.
            std::future::pending::<()>().await;
        }
    }

    /// The deadline passed without a welcome: records the rollback and
    /// says which build to go back to. `None` if nothing is pending.
    pub(crate) fn roll_back_late(&self) -> Option<Switch> {
        let p = self.lock_confirming().take()?;
        let why = format!(
            "build {} did not connect to the hub within {} s",
            short(&p.new_sha256),
            p.confirm_within_secs
        );
        warn!("rolling back: {why}");
        if let Err(e) = builds::roll_back(&self.dir, &p, &why) {
            // The old build's launcher finds the update still pending,
            // past its deadline, and records the rollback itself.
            error!("cannot record the rollback: {e}");
        }
        Some(Switch::new(p.old_path, SwitchKind::RollBack))
    }

    /// Just before `run` returns `switch`: the new build's time to connect
    /// starts now, not when the update was installed, since closing the
    /// connection and stopping Node-RED took some of it (seconds, when
    /// Node-RED is slow to stop). Best effort: the installed deadline stands
    /// if the record cannot be rewritten.
    pub(crate) fn start_clock(&self, switch: &Switch) {
        if switch.kind != SwitchKind::NewBuild {
            return;
        }
        if let Ok(Some(mut p)) = builds::read_pending(&self.dir) {
            if p.new_path == switch.path {
                let secs = i64::try_from(p.confirm_within_secs).unwrap_or(i64::MAX);
                p.deadline_unix = builds::now_unix().saturating_add(secs);
                if let Err(e) = builds::write_pending(&self.dir, &p) {
                    warn!("{e}; the new build's time to connect runs from its install");
                }
            }
        }
    }

    /// The hub's `update` message: checks and installs off the connection's
    /// loop (decoding and hashing tens of megabytes takes a moment), then
    /// hands the loop what to do.
    pub(crate) fn offer(
        self: &Arc<Self>,
        id: String,
        build: SignedBuild,
        confirm_within_secs: u64,
        done: mpsc::UnboundedSender<Done>,
        switches: mpsc::UnboundedSender<Switch>,
    ) {
        let answer = |ok: bool, message: &str| Done {
            id: id.clone(),
            ok,
            message: message.to_owned(),
        };
        if !self.enabled {
            let _ = done.send(answer(false, NOT_SELF_UPDATING));
            return;
        }
        // Handed over again on a new connection (the hub had no answer):
        // one given already is given again, never acted on twice; a
        // rolled-back build is not tried a second time.
        if let Some(given) = builds::answer_for(&self.dir, &id) {
            info!("update {id} again: {}", given.message);
            let _ = done.send(answer(given.ok, &given.message));
            return;
        }
        {
            let mut installing = self.lock_installing();
            match installing.as_deref() {
                // Being installed: that install answers.
                Some(current) if current == id => {
                    info!("update {id} again: being installed");
                    return;
                }
                Some(_) => {
                    let _ = done.send(answer(false, ALREADY_UPDATING));
                    return;
                }
                None => *installing = Some(id.clone()),
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            let work = {
                let this = this.clone();
                let id = id.clone();
                tokio::task::spawn_blocking(move || this.install(&id, &build, confirm_within_secs))
            };
            let (ok, message) = match work.await {
                Ok(Ok(switch)) => {
                    // No answer yet: the new build gives it once it is
                    // connected, or the old one after rolling back.
                    let _ = switches.send(switch);
                    return;
                }
                Ok(Err(answer)) => answer,
                Err(e) => (false, format!("the update failed: {e}")),
            };
            info!("update {id}: {message}");
            *this.lock_installing() = None;
            let _ = done.send(Done { id, ok, message });
        });
    }

    /// Checks, installs and records the build; the switch to make, or the
    /// answer to give now (ok when this build runs already).
    fn install(
        &self,
        id: &str,
        build: &SignedBuild,
        confirm_within_secs: u64,
    ) -> Result<Switch, (bool, String)> {
        let refused = |why: String| (false, format!("refused the build: {why}"));
        let key = self
            .hub_key
            .as_ref()
            .ok_or_else(|| refused("agent.json holds no usable hub key".into()))?;
        let checked = verify_build(build, key, &platform()).map_err(|e| refused(e.to_string()))?;
        let new = checked.statement.sha256.clone();
        let own = self
            .own_sha256
            .clone()
            .ok_or_else(|| refused("this agent cannot read its own executable".into()))?;
        if new == own {
            // The hub may send the same update again after a reconnect.
            return Err((
                true,
                format!(
                    "runs build {} ({}) already",
                    checked.statement.version,
                    short(&new)
                ),
            ));
        }
        // The way back must exist before the way forward is taken: the
        // file this process runs, unchanged since it started.
        let old_path = std::env::current_exe()
            .map_err(|e| refused(format!("cannot tell where this build is: {e}")))?;
        match builds::file_sha256(&old_path) {
            Ok(sha) if sha == own => {}
            _ => {
                return Err(refused(format!(
                    "{} is no longer the build that runs (replaced since the agent started?); restart the agent, then update",
                    old_path.display()
                )))
            }
        }
        let new_path = builds::install(&self.dir, build, &checked)
            .map_err(|e| (false, format!("cannot install the build: {e}")))?;
        // `current` naming the new build while it is pending would read,
        // after a crash, as a finished confirmation (see the launcher).
        if builds::read_current(&self.dir).as_deref() == Some(new.as_str()) {
            builds::set_current(&self.dir, None)
                .map_err(|e| (false, format!("cannot install the build: {e}")))?;
        }
        let secs = confirm_secs(confirm_within_secs);
        let pending = Pending {
            command_id: id.to_owned(),
            new_sha256: new.clone(),
            new_version: checked.statement.version.clone(),
            new_path: new_path.clone(),
            old_sha256: own,
            old_path,
            deadline_unix: builds::now_unix()
                .saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)),
            confirm_within_secs: secs,
        };
        builds::write_pending(&self.dir, &pending)
            .map_err(|e| (false, format!("cannot record the update: {e}")))?;
        info!(
            "update {id}: build {} ({}) installed; switching to it, it must connect within {secs} s",
            checked.statement.version,
            short(&new)
        );
        Ok(Switch::new(new_path, SwitchKind::NewBuild))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_to_connect_is_bounded() {
        assert_eq!(confirm_secs(0), DEFAULT_UPDATE_CONFIRM_SECS);
        assert_eq!(confirm_secs(3), 3);
        assert_eq!(confirm_secs(u64::MAX), MAX_CONFIRM_SECS);
    }
}

//! The pace of an agent's heartbeats: which to record now, and the newest
//! kept back until the connection's pace
//! (`redwall_policy::pace::Pace`) allows it. Only the
//! gateway's connection loop (`agent_gateway.rs`) uses it; it records
//! nothing itself.

use std::time::Duration;

use redwall_policy::agent_protocol::AgentStatus;
use redwall_policy::pace::Pace;
use tokio::time::Instant;

/// How often at most a connection's kept-back heartbeats are logged.
const KEPT_BACK_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// A connection's heartbeats. One that comes faster than the pace is not
/// recorded then: it is kept as the newest status, replacing any kept
/// before (a status says all an older one did), and recorded once the pace
/// allows. So a flood costs one write per half interval, however many
/// heartbeats it sends, and the last status sent is the one the hub shows.
/// The connection is read as ever meanwhile; a heartbeat kept when it ends
/// is dropped (the agent's next connection sends a fresh one at once).
pub(super) struct Beats {
    pace: Pace,
    /// The pace's clock: milliseconds since the connection began.
    began: Instant,
    /// The newest status not yet recorded, and when it may be.
    kept: Option<AgentStatus>,
    pub(super) due_at: Option<Instant>,
    /// Heartbeats kept back since the last warning, and when that was: one
    /// line a minute at most, never one per heartbeat.
    kept_back: u64,
    warned_at: Option<Instant>,
}

impl Beats {
    pub(super) fn new(heartbeat_secs: u64) -> Beats {
        Beats {
            pace: Pace::heartbeats(heartbeat_secs, 0),
            began: Instant::now(),
            kept: None,
            due_at: None,
            kept_back: 0,
            warned_at: None,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A heartbeat that just came: `Some` to record now, `None` when it is
    /// kept back.
    pub(super) fn offer(&mut self, status: AgentStatus) -> Option<AgentStatus> {
        if self.kept.is_none() {
            match self.pace.admit(self.now_ms()) {
                Ok(()) => return Some(status),
                Err(wait) => self.due_at = Some(Instant::now() + wait),
            }
        }
        self.kept = Some(status);
        self.kept_back += 1;
        None
    }

    /// The kept status, once the pace allows it.
    pub(super) fn take_due(&mut self) -> Option<AgentStatus> {
        if self.due_at.is_none_or(|at| at > Instant::now()) {
            return None;
        }
        match self.pace.admit(self.now_ms()) {
            Ok(()) => {
                self.due_at = None;
                self.kept.take()
            }
            Err(wait) => {
                self.due_at = Some(Instant::now() + wait);
                None
            }
        }
    }

    /// Logs the heartbeats kept back since the last line, when more than a
    /// few and the last line is a minute old. Counts only.
    pub(super) fn warn_if_due(&mut self, agent_id: &str) {
        if self.kept_back < 10
            || self
                .warned_at
                .is_some_and(|at| at.elapsed() < KEPT_BACK_LOGGED_EVERY)
        {
            return;
        }
        tracing::warn!(
            agent = agent_id,
            heartbeats = self.kept_back,
            gap_ms = u64::try_from(self.pace.gap().as_millis()).unwrap_or(u64::MAX),
            "an agent sends heartbeats faster than its interval: only the newest is recorded, one per gap"
        );
        self.warned_at = Some(Instant::now());
        self.kept_back = 0;
    }
}

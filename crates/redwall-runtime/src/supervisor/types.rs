use std::time::Duration;

use serde::Serialize;

/// Where an instance is in its life cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InstanceStatus {
    Stopped,
    Starting,
    Running {
        pid: u32,
        since_unix_ms: i64,
    },
    /// Exited unexpectedly; a restart is scheduled.
    Crashed {
        reason: String,
        at_unix_ms: i64,
        restarts: u32,
    },
    /// Crashed too often; no more restarts until someone starts it again.
    CrashLoop {
        reason: String,
    },
}

impl InstanceStatus {
    pub fn is_running(&self) -> bool {
        matches!(self, InstanceStatus::Running { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line an instance wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub at_unix_ms: i64,
    pub stream: LogStream,
    pub text: String,
}

/// An audit event emitted by Node-RED (deploys, logins to the comms socket,
/// permission failures...).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRedAuditEvent {
    /// Node-RED's event name, e.g. `flows.set`.
    pub event: String,
    /// The username from the admin token, when the event came from a request.
    pub user: Option<String>,
    /// The whole event as Node-RED logged it.
    pub raw: serde_json::Value,
}

/// Where the supervisor reports. Called from async tasks: implementations
/// must return quickly (forward into a channel) and never block.
pub trait Reporter: Send + Sync + 'static {
    fn status_changed(&self, instance_id: &str, status: &InstanceStatus);
    fn audit(&self, instance_id: &str, event: NodeRedAuditEvent);
}

/// Timings of supervision; the defaults suit production, tests shorten them.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Delay before the first restart; doubled after each further crash.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// `crash_limit` crashes within `crash_window` end in `CrashLoop`.
    pub crash_limit: usize,
    pub crash_window: Duration,
    /// Grace between SIGTERM and SIGKILL on stop.
    pub stop_timeout: Duration,
    /// How long a start may take before it counts as a crash.
    pub ready_timeout: Duration,
    pub ready_poll: Duration,
    /// Lines kept per instance for [`crate::Supervisor::logs`].
    pub log_lines: usize,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            crash_limit: 5,
            crash_window: Duration::from_secs(120),
            stop_timeout: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(60),
            ready_poll: Duration::from_millis(50),
            log_lines: 1000,
        }
    }
}

impl SupervisorOptions {
    pub(crate) fn backoff(&self, crashes: usize) -> Duration {
        let exp = u32::try_from(crashes.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(16);
        self.backoff_initial
            .saturating_mul(1 << exp)
            .min(self.backoff_max)
    }
}

pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let o = SupervisorOptions::default();
        let secs: Vec<u64> = (1..=7).map(|n| o.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn status_serialises_with_a_state_tag() {
        let s = serde_json::to_value(InstanceStatus::CrashLoop { reason: "x".into() }).unwrap();
        assert_eq!(s, serde_json::json!({"state": "crash_loop", "reason": "x"}));
        let s = serde_json::to_value(InstanceStatus::Stopped).unwrap();
        assert_eq!(s, serde_json::json!({"state": "stopped"}));
    }
}

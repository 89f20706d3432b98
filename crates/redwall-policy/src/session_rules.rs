//! When a session stops being valid.

use crate::{Micros, MICROS_PER_SECOND};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionLifetimes {
    /// From login, whatever the activity.
    pub absolute_secs: i64,
    /// Without a request.
    pub idle_secs: i64,
}

impl Default for SessionLifetimes {
    fn default() -> Self {
        SessionLifetimes {
            absolute_secs: 14 * 24 * 3600,
            idle_secs: 60 * 60,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    Active,
    IdleExpired,
    Expired,
}

impl SessionLifetimes {
    pub fn absolute_expiry(&self, created_at: Micros) -> Micros {
        created_at.saturating_add(self.absolute_secs.saturating_mul(MICROS_PER_SECOND))
    }

    /// The state of a session with absolute expiry `expires_at` that was last
    /// used at `last_seen_at`.
    pub fn state(&self, expires_at: Micros, last_seen_at: Micros, now: Micros) -> SessionState {
        if now >= expires_at {
            SessionState::Expired
        } else if now.saturating_sub(last_seen_at) >= self.idle_secs * MICROS_PER_SECOND {
            SessionState::IdleExpired
        } else {
            SessionState::Active
        }
    }

    /// Problems with configured values, in plain words.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.idle_secs < 60 {
            out.push("session idle timeout must be at least 60 seconds".into());
        }
        if self.absolute_secs < self.idle_secs {
            out.push("session absolute lifetime must not be shorter than the idle timeout".into());
        }
        if self.absolute_secs > 90 * 24 * 3600 {
            out.push("session absolute lifetime must be at most 90 days".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = MICROS_PER_SECOND;

    #[test]
    fn defaults_are_fourteen_days_and_one_hour() {
        let l = SessionLifetimes::default();
        assert_eq!(l.absolute_secs, 1_209_600);
        assert_eq!(l.idle_secs, 3_600);
        assert!(l.problems().is_empty());
    }

    #[test]
    fn idle_then_absolute_expiry() {
        let l = SessionLifetimes::default();
        let exp = l.absolute_expiry(0);
        assert_eq!(l.state(exp, 0, 3_599 * S), SessionState::Active);
        assert_eq!(l.state(exp, 0, 3_600 * S), SessionState::IdleExpired);
        let busy = exp - S;
        assert_eq!(l.state(exp, busy, exp - 1), SessionState::Active);
        assert_eq!(l.state(exp, busy, exp), SessionState::Expired);
    }

    #[test]
    fn nonsense_lifetimes_are_explained() {
        let l = SessionLifetimes {
            absolute_secs: 10,
            idle_secs: 30,
        };
        assert_eq!(l.problems().len(), 2);
    }
}

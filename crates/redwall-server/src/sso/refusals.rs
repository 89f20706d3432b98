//! Refused SSO requests an anonymous client can cause at will (a callback
//! with a bad or replayed state, a provider error, a malformed query, a
//! throttled request), audited in aggregate: per client address, provider
//! and reason, the first refusal of each minute is written at once and the
//! rest of that minute are counted and written as one entry (`count`) when
//! the minute is over. A flood costs at most two rows per minute per kind.
//!
//! Deliberately small and local to SSO so that a general "aggregated
//! refusal" recorder for the audit log can replace it: callers only use
//! [`RefusalTally::record`] and [`RefusalTally::flush`].
//!
//! The counts of the current minute are kept in this process's memory; a
//! second replica keeps its own, and a stop loses at most one minute's
//! counts (the first refusal of that minute is already written).

use crate::audit;
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::{Micros, MICROS_PER_SECOND};
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

const WINDOW: Micros = 60 * MICROS_PER_SECOND;
/// Beyond this many (address, provider, reason) windows in memory, new
/// addresses are counted together under 0.0.0.0 ("many addresses").
const MAX_KEYS: usize = 10_000;

type Key = (IpAddr, String, &'static str);

struct Window {
    /// The minute (WINDOW index) this window counts.
    minute: i64,
    /// Refusals after the first in that minute, not yet written.
    more: u64,
    last_at: Micros,
}

#[derive(Default)]
pub struct RefusalTally {
    windows: Mutex<HashMap<Key, Window>>,
}

/// A summary to write: refusals counted but not yet audited.
struct Summary {
    ip: IpAddr,
    provider: String,
    reason: &'static str,
    count: u64,
    from: Micros,
    to: Micros,
}

impl RefusalTally {
    /// Counts one refusal; answers whether it is the first of its minute
    /// (to be written now), and any summary of a past minute that is due.
    fn count(
        &self,
        ip: IpAddr,
        provider: &str,
        reason: &'static str,
        now: Micros,
    ) -> (bool, Option<Summary>) {
        let minute = now.div_euclid(WINDOW);
        let Ok(mut w) = self.windows.lock() else {
            return (true, None);
        };
        let mut key = (ip, provider.to_string(), reason);
        if !w.contains_key(&key) && w.len() >= MAX_KEYS {
            key.0 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        }
        match w.get_mut(&key) {
            Some(win) if win.minute == minute => {
                win.more += 1;
                win.last_at = now;
                (false, None)
            }
            Some(win) => {
                let due = summary_of(&key, win);
                *win = Window {
                    minute,
                    more: 0,
                    last_at: now,
                };
                (true, due)
            }
            None => {
                w.insert(
                    key,
                    Window {
                        minute,
                        more: 0,
                        last_at: now,
                    },
                );
                (true, None)
            }
        }
    }

    /// Audits one refusal: written now if it is the first of its kind from
    /// this address this minute, otherwise counted for the minute's summary.
    pub async fn record(
        &self,
        state: &AppState,
        client: &ClientInfo,
        provider: &str,
        reason: &'static str,
        extra: serde_json::Value,
    ) -> ApiResult<()> {
        state.metrics.login_failed();
        let (first, due) = self.count(client.ip, provider, reason, state.now());
        if let Some(s) = due {
            write_summary(state, s).await?;
        }
        if first {
            let mut detail = json!({ "provider": provider, "reason": reason });
            if let (Some(d), serde_json::Value::Object(more)) = (detail.as_object_mut(), extra) {
                d.extend(more);
            }
            audit::record(
                state,
                None,
                client,
                AuditEvent::SsoLoginFailed,
                Outcome::Failure,
                Some(format!("provider:{provider}")),
                detail,
            )
            .await?;
        }
        Ok(())
    }

    /// Writes the summaries of every minute that is over, and forgets
    /// windows with nothing left to say. Called by the housekeeping task.
    pub async fn flush(&self, state: &AppState) -> ApiResult<()> {
        let minute = state.now().div_euclid(WINDOW);
        let due: Vec<Summary> = match self.windows.lock() {
            Ok(mut w) => {
                let mut due = Vec::new();
                w.retain(|key, win| {
                    if win.minute >= minute {
                        return true;
                    }
                    due.extend(summary_of(key, win));
                    false
                });
                due
            }
            Err(_) => Vec::new(),
        };
        for s in due {
            write_summary(state, s).await?;
        }
        Ok(())
    }
}

fn summary_of(key: &Key, win: &Window) -> Option<Summary> {
    (win.more > 0).then(|| Summary {
        ip: key.0,
        provider: key.1.clone(),
        reason: key.2,
        count: win.more,
        from: win.minute * WINDOW,
        to: win.last_at,
    })
}

async fn write_summary(state: &AppState, s: Summary) -> ApiResult<()> {
    let client = ClientInfo {
        ip: s.ip,
        user_agent: None,
        https: false,
    };
    audit::record(
        state,
        None,
        &client,
        AuditEvent::SsoLoginFailed,
        Outcome::Failure,
        Some(format!("provider:{}", s.provider)),
        json!({
            "provider": s.provider,
            "reason": s.reason,
            // Refusals after the first of the minute (which has its own entry).
            "count": s.count,
            "from": crate::clock::rfc3339(s.from),
            "to": crate::clock::rfc3339(s.to),
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

    #[test]
    fn the_first_of_a_minute_is_written_and_the_rest_summed() {
        let t = RefusalTally::default();
        assert!(matches!(t.count(IP, "corp", "bad_state", 0), (true, None)));
        for i in 1..=99 {
            assert!(matches!(t.count(IP, "corp", "bad_state", i), (false, None)));
        }
        // Another kind, provider or address has its own first entry.
        assert!(t.count(IP, "corp", "provider_error", 5).0);
        assert!(t.count(IP, "other", "bad_state", 5).0);
        assert!(
            t.count(IpAddr::V4(Ipv4Addr::LOCALHOST), "corp", "bad_state", 5)
                .0
        );
        // The next minute: written again, with the last minute's sum due.
        let (first, due) = t.count(IP, "corp", "bad_state", WINDOW + 1);
        assert!(first);
        let due = due.map(|d| (d.count, d.from, d.to));
        assert_eq!(due, Some((99, 0, 99)), "a summary is due");
        let (first, due) = t.count(IP, "corp", "bad_state", 3 * WINDOW);
        assert!(
            first && due.is_none(),
            "nothing more to say about that minute"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let t = RefusalTally::default();
        for i in 1..(MAX_KEYS as u32 + 50) {
            t.count(IpAddr::V4(Ipv4Addr::from(i)), "corp", "bad_state", 0);
        }
        let n = t.windows.lock().map(|w| w.len()).unwrap_or(0);
        assert_eq!(n, MAX_KEYS + 1);
    }
}

//! How often each agent may connect, counted by this process
//! ([`Pace::agent_dials`]: ten at once, then one each two seconds).
//!
//! Each connection costs the hub writes, and a client holding an agent's
//! key could hang up and dial again hundreds of times a second. The pace is
//! kept in this process's memory on purpose: no other replica needs it
//! (each paces the dials it takes, so a key dialing every replica of N
//! gets at most N times the pace), and a pace lost with a restart only
//! forgives. Only agents that proved their key are counted, so the table
//! holds at most the enrolled agents, and those rested again are dropped
//! as it grows.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redwall_policy::pace::Pace;

/// How often at most the refused dials are logged, as one count.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// The table is swept of rested paces when it reaches this size, and then
/// at twice what the sweep left.
const FIRST_SWEEP_AT: usize = 256;

pub struct AgentDials {
    /// The paces' clock: milliseconds since this process began counting.
    began: Instant,
    inner: Mutex<Table>,
}

struct Table {
    paces: HashMap<String, Pace>,
    sweep_at: usize,
    refused: u64,
    logged_at: Option<Instant>,
}

impl Default for AgentDials {
    fn default() -> AgentDials {
        AgentDials {
            began: Instant::now(),
            inner: Mutex::new(Table {
                paces: HashMap::new(),
                sweep_at: FIRST_SWEEP_AT,
                refused: 0,
                logged_at: None,
            }),
        }
    }
}

impl AgentDials {
    /// Counts a connection of `agent_id` (whose key it proved); `Err` with
    /// how long until one would be allowed.
    pub fn admit(&self, agent_id: &str) -> Result<(), Duration> {
        let now_ms = u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if table.paces.len() >= table.sweep_at {
            table.paces.retain(|_, pace| !pace.is_rested(now_ms));
            table.sweep_at = (table.paces.len() * 2).max(FIRST_SWEEP_AT);
        }
        let admitted = match table.paces.get_mut(agent_id) {
            Some(pace) => pace.admit(now_ms),
            None => {
                let mut pace = Pace::agent_dials(now_ms);
                let admitted = pace.admit(now_ms);
                table.paces.insert(agent_id.to_owned(), pace);
                admitted
            }
        };
        if admitted.is_err() {
            table.refused += 1;
            if table
                .logged_at
                .is_none_or(|at| at.elapsed() >= REFUSALS_LOGGED_EVERY)
            {
                tracing::warn!(
                    agent = agent_id,
                    refused = table.refused,
                    "agents dial again faster than their pace: told to wait (counted since the last line, all agents)"
                );
                table.refused = 0;
                table.logged_at = Some(Instant::now());
            }
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use redwall_policy::pace::DIALS_AT_ONCE;

    #[test]
    fn each_agent_has_its_own_pace() {
        let dials = AgentDials::default();
        for _ in 0..DIALS_AT_ONCE {
            assert!(dials.admit("a").is_ok());
        }
        assert!(dials.admit("a").is_err());
        assert!(dials.admit("b").is_ok());
    }

    #[test]
    fn rested_paces_are_swept_as_the_table_grows() {
        let dials = AgentDials::default();
        for i in 0..10_000 {
            assert!(dials.admit(&format!("agent-{i}")).is_ok());
        }
        // Each has nine of ten left, so none is rested yet: the sweeps
        // keep them all, and the next sweep waits for twice as many.
        let table = dials.inner.lock().unwrap();
        assert_eq!(table.paces.len(), 10_000);
        assert!(table.sweep_at > 10_000);
    }
}

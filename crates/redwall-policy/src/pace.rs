//! How often the hub lets an agent do something that costs it a write:
//! a generic cell rate algorithm, with the paces of heartbeats and dials.
//!
//! **Heartbeats.** Each recorded heartbeat is a write (the agent's row:
//! last seen, its Node-RED's state, its site report). An honest agent
//! sends one every `heartbeat_secs`, but a client holding an agent's key
//! (stolen, or an agent gone wrong) need not wait: unpaced, it could keep
//! the database busy at will. So a connection's heartbeats are recorded at
//! most a few at once and then one per half interval; the hub keeps only
//! the newest of those that come faster, and records it when the pace
//! allows (a heartbeat is a status, so the newest says all the older ones
//! did).
//!
//! **Dials.** Each connection an agent opens costs writes too (its build,
//! its first heartbeats, its disconnection: about five), and a client with
//! its key can hang up and dial again as fast as the handshake goes
//! (hundreds a second). An honest agent dials again only after a lost
//! link, a quarter to half a second later at the soonest and backing off
//! from there; so an agent's successful hellos are paced: ten at once,
//! then one every two seconds, and a hello beyond is refused before
//! anything is written, the agent told to dial again later.

use std::time::Duration;

/// Heartbeats a connection may have recorded back to back: the first on
/// connecting, and two more for heartbeats bunched by a slow link.
pub const HEARTBEATS_AT_ONCE: u64 = 3;

/// Connections an agent may open back to back (a hub restarting, a link
/// flapping), and then one each [`DIAL_GAP_MS`].
pub const DIALS_AT_ONCE: u64 = 10;
/// See [`DIALS_AT_ONCE`].
pub const DIAL_GAP_MS: u64 = 2_000;

/// A pace as a generic cell rate algorithm (a token bucket kept as one
/// time): one each `gap_ms`, up to `at_once` back to back. Time comes in
/// as milliseconds on a clock the caller keeps; one that goes back grants
/// nothing until it has caught up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pace {
    gap_ms: u64,
    at_once: u64,
    /// When the bucket would be empty again if nothing more came (the
    /// theoretical arrival time).
    full_at_ms: u64,
}

impl Pace {
    /// One each `gap_ms` (at least 1), up to `at_once` (at least 1) back to
    /// back, all of them available at `now_ms`.
    pub fn new(gap_ms: u64, at_once: u64, now_ms: u64) -> Pace {
        Pace {
            gap_ms: gap_ms.max(1),
            at_once: at_once.max(1),
            full_at_ms: now_ms,
        }
    }

    /// A new connection's heartbeats, for agents that beat every
    /// `heartbeat_secs`: one each half interval (an honest agent's come
    /// twice as far apart, so they never wait, even when a slow link
    /// bunches them), [`HEARTBEATS_AT_ONCE`] available at once (the first
    /// comes as the agent connects and must show it online at once).
    pub fn heartbeats(heartbeat_secs: u64, now_ms: u64) -> Pace {
        Pace::new(
            heartbeat_secs.saturating_mul(1_000) / 2,
            HEARTBEATS_AT_ONCE,
            now_ms,
        )
    }

    /// An agent's dials: [`DIALS_AT_ONCE`], then one each [`DIAL_GAP_MS`].
    pub fn agent_dials(now_ms: u64) -> Pace {
        Pace::new(DIAL_GAP_MS, DIALS_AT_ONCE, now_ms)
    }

    /// The shortest time between two, once those at once are spent.
    pub fn gap(&self) -> Duration {
        Duration::from_millis(self.gap_ms)
    }

    /// Whether all of those at once are available again at `now_ms`: the
    /// pace then says nothing a new one would not, and may be forgotten.
    pub fn is_rested(&self, now_ms: u64) -> bool {
        now_ms >= self.full_at_ms
    }

    /// Spends one at `now_ms` if the pace allows it; else spends nothing
    /// and says how long until it would.
    pub fn admit(&mut self, now_ms: u64) -> Result<(), Duration> {
        let tolerance = self.gap_ms.saturating_mul(self.at_once - 1);
        let earliest = self.full_at_ms.saturating_sub(tolerance);
        if now_ms < earliest {
            return Err(Duration::from_millis(earliest - now_ms));
        }
        self.full_at_ms = self.full_at_ms.max(now_ms).saturating_add(self.gap_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::agent_protocol::HEARTBEAT_SECS_RANGE;

    /// How many heartbeats a flood of one every `every_ms` from `start`
    /// for `for_ms` gets recorded, the pace's waits obeyed exactly.
    fn admitted(pace: &mut Pace, start: u64, every_ms: u64, for_ms: u64) -> u64 {
        let mut n = 0;
        let mut t = start;
        while t < start + for_ms {
            if pace.admit(t).is_ok() {
                n += 1;
            }
            t += every_ms;
        }
        n
    }

    #[test]
    fn a_new_connection_has_three_at_once_then_one_per_gap() {
        for secs in HEARTBEAT_SECS_RANGE {
            let mut p = Pace::heartbeats(secs, 7_000);
            let gap = secs * 1_000 / 2;
            assert_eq!(p.gap(), Duration::from_millis(gap));
            for _ in 0..HEARTBEATS_AT_ONCE {
                assert_eq!(p.admit(7_000), Ok(()), "{secs}");
            }
            // The wait it names is exact: a millisecond early is refused,
            // on time is admitted, and the next waits a whole gap.
            assert_eq!(p.admit(7_000), Err(Duration::from_millis(gap)));
            assert_eq!(p.admit(7_000 + gap - 1), Err(Duration::from_millis(1)));
            assert_eq!(p.admit(7_000 + gap), Ok(()));
            assert_eq!(p.admit(7_000 + gap), Err(Duration::from_millis(gap)));
        }
    }

    #[test]
    fn an_honest_agent_never_waits() {
        for secs in HEARTBEAT_SECS_RANGE {
            let period = secs * 1_000;
            // On time, and with every heartbeat late by up to half a
            // period and the next on time (two bunched by a slow link).
            let mut p = Pace::heartbeats(secs, 0);
            for beat in 0..200 {
                assert_eq!(p.admit(beat * period), Ok(()), "{secs} s, beat {beat}");
            }
            let mut p = Pace::heartbeats(secs, 0);
            for beat in 0..200u64 {
                let late = if beat % 2 == 1 { period / 2 } else { 0 };
                assert_eq!(
                    p.admit(beat * period + late),
                    Ok(()),
                    "{secs} s, beat {beat}"
                );
            }
            // After a reconnect, the first heartbeat and two more at once.
            let mut p = Pace::heartbeats(secs, 5);
            for _ in 0..HEARTBEATS_AT_ONCE {
                assert_eq!(p.admit(5), Ok(()));
            }
        }
    }

    #[test]
    fn a_flood_is_held_to_the_pace_exactly() {
        for secs in [1, 2, 15, 300] {
            let gap = secs * 1_000 / 2;
            // Heartbeats every 1 ms are admitted as soon as allowed; 100
            // and 250 ms divide every gap here, so at most one comes late.
            for every_ms in [1, 100, 250] {
                let window = 10 * 60_000;
                let mut p = Pace::heartbeats(secs, 0);
                let n = admitted(&mut p, 0, every_ms, window);
                let most = HEARTBEATS_AT_ONCE + (window - 1) / gap;
                assert!(
                    n <= most && n + 1 >= most,
                    "{secs} s every {every_ms} ms: {n} of {most}"
                );
                if every_ms == 1 {
                    assert_eq!(n, most);
                }
            }
        }
    }

    #[test]
    fn a_quiet_while_earns_no_more_than_three() {
        let mut p = Pace::heartbeats(15, 0);
        assert_eq!(admitted(&mut p, 3_600_000, 1, 1), 1);
        let mut p = Pace::heartbeats(15, 0);
        let n = (0..100).filter(|_| p.admit(3_600_000).is_ok()).count();
        assert_eq!(n as u64, HEARTBEATS_AT_ONCE);
    }

    #[test]
    fn a_clock_going_back_grants_nothing() {
        let mut p = Pace::heartbeats(10, 50_000);
        for _ in 0..HEARTBEATS_AT_ONCE {
            p.admit(50_000).unwrap();
        }
        for back in [0, 1, 49_999, 50_000] {
            assert!(p.admit(50_000 - back).is_err(), "{back}");
        }
        assert_eq!(p.admit(55_000), Ok(()));
    }

    #[test]
    fn extreme_settings_saturate() {
        // No interval: a gap of 1 ms, never none.
        let mut p = Pace::heartbeats(0, 0);
        assert_eq!(p.gap(), Duration::from_millis(1));
        assert_eq!(admitted(&mut p, 0, 1, 10), 10);
        // The longest interval there is: the three at once, then a wait.
        let mut p = Pace::heartbeats(u64::MAX, 0);
        for _ in 0..HEARTBEATS_AT_ONCE {
            assert_eq!(p.admit(0), Ok(()));
        }
        assert!(p.admit(0).is_err());
        // Times at the end of the range neither wrap nor panic.
        let mut p = Pace::heartbeats(300, u64::MAX);
        assert_eq!(p.admit(u64::MAX), Ok(()));
        assert!(p.admit(0).is_err());
    }

    #[test]
    fn dials_ten_at_once_then_one_each_two_seconds() {
        let mut p = Pace::agent_dials(1_000);
        for _ in 0..DIALS_AT_ONCE {
            assert_eq!(p.admit(1_000), Ok(()));
        }
        assert_eq!(p.admit(1_000), Err(Duration::from_millis(DIAL_GAP_MS)));
        assert_eq!(p.admit(1_000 + DIAL_GAP_MS), Ok(()));
        // A minute of a dialer that never stops: ten, then thirty more.
        let mut p = Pace::agent_dials(0);
        assert_eq!(admitted(&mut p, 0, 1, 60_000), DIALS_AT_ONCE + 29);
        assert!(!p.is_rested(60_000));
        assert!(p.is_rested(60_000 + DIALS_AT_ONCE * DIAL_GAP_MS));
    }

    #[test]
    fn an_honest_agent_backing_off_is_never_refused() {
        use crate::agent_protocol::reconnect_delay_ms;
        // The soonest an agent dials again, attempt after attempt, with
        // the least jitter: never refused, however long it goes on.
        let mut p = Pace::agent_dials(0);
        let mut t = 0;
        for attempt in 0..1_000 {
            assert_eq!(p.admit(t), Ok(()), "attempt {attempt} at {t} ms");
            t += reconnect_delay_ms(attempt, 500, 30_000, 0.0);
        }
        // A link that drops right after each welcome (the agent starts
        // its backoff over each time): ten at once, then a wait, never
        // more than one gap.
        let mut p = Pace::agent_dials(0);
        let mut t = 0;
        for dial in 0..1_000u64 {
            match p.admit(t) {
                Ok(()) => t += reconnect_delay_ms(0, 500, 30_000, 0.0),
                Err(wait) => {
                    assert!(dial >= DIALS_AT_ONCE / 2, "{dial}");
                    assert!(wait <= p.gap(), "{wait:?}");
                    t += wait.as_millis() as u64;
                }
            }
        }
    }
}

//! The in-memory part of aggregated refusals: one tally per source, event,
//! reason, team, target and attempted name, per minute, in a table of
//! bounded size.
//!
//! The first refusal of a new source in a minute is written at once (so a
//! new attacker is visible without delay); the rest of that minute is only
//! counted here and written as one entry when the minute is over. When the
//! table is full, new sources are kept more coarsely instead of growing it:
//! first per network (/24 for IPv4, /48 for IPv6), then per event, reason,
//! team and target from any address, and last per event and reason alone.
//! Only sources kept by address get an immediate entry, so a flood from any
//! number of addresses writes at most about `2.5 x capacity` entries a
//! minute, and the table holds at most `1.5 x capacity` tallies plus one per
//! event and reason.

use ipnet::IpNet;
use redwall_policy::audit_event::Outcome;
use redwall_store::NewAuditEntry;

use crate::audit::{printable, Actor, Event, Origin, Who};
use crate::{Hub, HubResult};
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::{Micros, MICROS_PER_SECOND};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The length of one aggregation window.
pub const WINDOW: Micros = 60 * MICROS_PER_SECOND;

/// How finely a tally's source is known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Address(IpAddr),
    /// The table was full: the /24 (IPv4) or /48 (IPv6) around the address.
    Network(IpNet),
    /// The table was full even for networks.
    Any,
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Address(_) => "address",
            Source::Network(_) => "network",
            Source::Any => "any",
        }
    }

    /// What the entry's `client_ip` column shows.
    pub fn client_ip(&self) -> Option<String> {
        match self {
            Source::Address(ip) => Some(ip.to_string()),
            Source::Network(net) => Some(net.to_string()),
            Source::Any => None,
        }
    }
}

fn network_of(ip: IpAddr) -> IpNet {
    let prefix = if ip.is_ipv4() { 24 } else { 48 };
    IpNet::new(ip, prefix).map_or(IpNet::from(ip), |n| n.trunc())
}

/// What one tally counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Start of the window, microseconds.
    pub window: Micros,
    pub source: Source,
    pub event: AuditEvent,
    pub reason: &'static str,
    pub team_id: Option<String>,
    pub target: Option<String>,
    /// The name the caller claimed (kept only for sources kept by address).
    pub actor_name: Option<String>,
}

/// Refusals counted for a key and not yet written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub first_at: Micros,
    pub last_at: Micros,
}

/// What [`RefusalTable::note`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Noted {
    /// The first refusal of this source in this window: write it now.
    First(Key),
    /// Counted; written with the others when the window is over.
    Counted,
}

/// One refusal, as the table sees it.
pub struct Seen<'a> {
    pub at: Micros,
    pub ip: IpAddr,
    pub event: AuditEvent,
    pub reason: &'static str,
    pub team_id: Option<&'a str>,
    pub target: Option<&'a str>,
    pub actor_name: Option<&'a str>,
}

pub struct RefusalTable {
    /// Tallies kept by address before the table turns to networks.
    capacity: usize,
    tallies: Mutex<HashMap<Key, Tally>>,
}

impl RefusalTable {
    pub fn new(capacity: usize) -> RefusalTable {
        RefusalTable {
            capacity: capacity.max(1),
            tallies: Mutex::new(HashMap::new()),
        }
    }

    pub fn note(&self, s: &Seen<'_>) -> Noted {
        let window = s.at - s.at.rem_euclid(WINDOW);
        let exact = Key {
            window,
            source: Source::Address(s.ip),
            event: s.event,
            reason: s.reason,
            team_id: s.team_id.map(str::to_owned),
            target: s.target.map(str::to_owned),
            actor_name: s.actor_name.map(str::to_owned),
        };
        let Ok(mut tallies) = self.tallies.lock() else {
            // A poisoned lock: write every refusal rather than lose one.
            return Noted::First(exact);
        };
        if let Some(t) = tallies.get_mut(&exact) {
            t.add(s.at);
            return Noted::Counted;
        }
        if tallies.len() < self.capacity {
            // Written at once by the caller; only later ones are counted.
            tallies.insert(
                exact.clone(),
                Tally {
                    count: 0,
                    first_at: s.at,
                    last_at: s.at,
                },
            );
            return Noted::First(exact);
        }
        let network = Key {
            source: Source::Network(network_of(s.ip)),
            actor_name: None,
            ..exact
        };
        let any = Key {
            source: Source::Any,
            ..network.clone()
        };
        let overflow = Key {
            team_id: None,
            target: None,
            ..any.clone()
        };
        let levels = [
            (network, self.capacity + self.capacity / 4),
            (any, self.capacity + self.capacity / 2),
        ];
        for (key, limit) in levels {
            if let Some(t) = tallies.get_mut(&key) {
                t.add(s.at);
                return Noted::Counted;
            }
            if tallies.len() < limit {
                tallies.insert(key, Tally::one(s.at));
                return Noted::Counted;
            }
        }
        tallies
            .entry(overflow)
            .and_modify(|t| t.add(s.at))
            .or_insert_with(|| Tally::one(s.at));
        Noted::Counted
    }

    /// Counts a refusal whose immediate entry could not be written, so the
    /// window's entry includes it.
    pub fn count_unwritten(&self, key: &Key, at: Micros) {
        if let Ok(mut tallies) = self.tallies.lock() {
            tallies
                .entry(key.clone())
                .and_modify(|t| t.add(at))
                .or_insert_with(|| Tally::one(at));
        }
    }

    /// Removes the tallies of windows over by `now` (all of them when
    /// `now` is `None`) and returns those with refusals to write.
    pub fn take(&self, now: Option<Micros>) -> Vec<(Key, Tally)> {
        let Ok(mut tallies) = self.tallies.lock() else {
            return Vec::new();
        };
        let over = |k: &Key| now.is_none_or(|now| k.window + WINDOW <= now);
        let keys: Vec<Key> = tallies.keys().filter(|k| over(k)).cloned().collect();
        keys.into_iter()
            .filter_map(|k| tallies.remove_entry(&k))
            .filter(|(_, t)| t.count > 0)
            .collect()
    }

    /// Puts back tallies whose entries could not be written, to try again.
    pub fn restore(&self, unwritten: Vec<(Key, Tally)>) {
        if let Ok(mut tallies) = self.tallies.lock() {
            for (k, t) in unwritten {
                tallies
                    .entry(k)
                    .and_modify(|have| {
                        have.count += t.count;
                        have.first_at = have.first_at.min(t.first_at);
                        have.last_at = have.last_at.max(t.last_at);
                    })
                    .or_insert(t);
            }
        }
    }

    /// Tallies held (for measurement and tests).
    pub fn len(&self) -> usize {
        self.tallies.lock().map_or(0, |t| t.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Tally {
    fn one(at: Micros) -> Tally {
        Tally {
            count: 1,
            first_at: at,
            last_at: at,
        }
    }

    fn add(&mut self, at: Micros) {
        self.count += 1;
        self.first_at = self.first_at.min(at);
        self.last_at = self.last_at.max(at);
    }
}

/// A refused attempt (a wrong key or password, a failed sign-in callback, a
/// denied page), for [`record_refusal`].
pub struct Refusal<'a> {
    pub event: AuditEvent,
    /// Why, as a short fixed code ("invalid_key", "wrong_password",
    /// "throttled", ...). Refusals are counted per reason.
    pub reason: &'static str,
    /// The team whose log shows it too.
    pub team_id: Option<&'a str>,
    /// What was tried ("instance:plant").
    pub target: Option<String>,
    /// The name the caller claimed, if any.
    pub actor: Option<&'a Actor>,
    /// Details of this attempt. Only the first refusal of a source in a
    /// minute is written with them; the minute's entry carries the count.
    pub details: serde_json::Value,
}

impl Hub {
    /// Records a refusal without letting a flood of them flood the log.
    ///
    /// Refusals are counted per source (client address), event, reason, team,
    /// target and claimed name, per minute. The first one of a source in a
    /// minute is written at once, with its details and `"count": 1`, and this
    /// waits for it like [`record`]; the others of that minute are only counted
    /// and written as ONE entry (`"aggregated": true`, `"count"`, the window and
    /// the first and last time) once the minute is over, by the housekeeping
    /// loop or at shutdown. The sum of `count` over the entries is the number of
    /// refusals. The table in memory is bounded: when full, new sources are
    /// kept per network and then per event only (see [`refusals`]).
    ///
    /// Throttle before calling this: it records, it does not slow anyone down.
    pub async fn record_refusal(&self, origin: &Origin, refusal: Refusal<'_>) -> HubResult<()> {
        let at = self.now();
        let actor_name = refusal.actor.and_then(|a| a.name.as_deref()).map(printable);
        let noted = self.refusals.note(&Seen {
            at,
            ip: origin.ip,
            event: refusal.event,
            reason: refusal.reason,
            team_id: refusal.team_id,
            target: refusal.target.as_deref(),
            actor_name: actor_name.as_deref(),
        });
        let Noted::First(key) = noted else {
            return Ok(());
        };
        let mut details = match refusal.details {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                let mut map = serde_json::Map::new();
                map.insert("details".into(), other);
                map
            }
        };
        details.insert("reason".into(), refusal.reason.into());
        details.insert("count".into(), 1.into());
        let who = Who {
            actor: refusal.actor,
            origin,
        };
        let written = self
            .record_event(
                who,
                Event {
                    event: refusal.event,
                    outcome: Outcome::Failure,
                    team_id: refusal.team_id.map(str::to_string),
                    target: refusal.target,
                    details: serde_json::Value::Object(details),
                },
            )
            .await;
        if written.is_err() {
            self.refusals.count_unwritten(&key, at);
        }
        written
    }

    /// Writes the counted refusals of every minute that is over (all of them
    /// when `all`, at shutdown). Tallies whose entries cannot be written are
    /// kept to try again. Returns the entries written.
    pub async fn flush_refusals(&self, all: bool) -> usize {
        let now = self.now();
        let taken = self.refusals.take((!all).then_some(now));
        if taken.is_empty() {
            return 0;
        }
        // All at once: the writer commits them in a few group transactions.
        let results = futures::future::join_all(
            taken
                .iter()
                .map(|(key, tally)| self.record(aggregate_entry(key, tally))),
        )
        .await;
        let mut unwritten = Vec::new();
        let mut written = 0;
        for (result, item) in results.into_iter().zip(taken) {
            match result {
                Ok(_) => written += 1,
                Err(e) => {
                    tracing::error!(error = %e, "could not write aggregated refusals; will retry");
                    unwritten.push(item);
                }
            }
        }
        self.refusals.restore(unwritten);
        written
    }
}

fn aggregate_entry(key: &Key, tally: &Tally) -> NewAuditEntry {
    use crate::clock::rfc3339;
    NewAuditEntry {
        at: tally.last_at,
        actor_id: None,
        actor_name: key.actor_name.clone(),
        client_ip: key.source.client_ip(),
        user_agent: None,
        event: key.event.name().to_string(),
        target: key.target.clone(),
        outcome: Outcome::Failure.name().to_string(),
        details: serde_json::json!({
            "aggregated": true,
            "reason": key.reason,
            "count": tally.count,
            "source": key.source.kind(),
            "window_start": rfc3339(key.window),
            "window_secs": WINDOW / redwall_policy::MICROS_PER_SECOND,
            "first_at": rfc3339(tally.first_at),
            "last_at": rfc3339(tally.last_at),
        }),
        team_id: key.team_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn seen(at: Micros, ip: IpAddr) -> Seen<'static> {
        Seen {
            at,
            ip,
            event: AuditEvent::InstanceKeyRejected,
            reason: "invalid_key",
            team_id: Some("t1"),
            target: Some("instance:a"),
            actor_name: None,
        }
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32.wrapping_add(n)))
    }

    #[test]
    fn the_first_of_a_source_is_written_and_the_rest_counted() {
        let t = RefusalTable::new(10);
        let at = 120 * MICROS_PER_SECOND + 5;
        assert!(matches!(t.note(&seen(at, v4(1))), Noted::First(_)));
        for i in 0..9 {
            assert_eq!(t.note(&seen(at + i, v4(1))), Noted::Counted);
        }
        // The window is not over: nothing to write yet.
        assert!(t.take(Some(at + 1)).is_empty());
        let written = t.take(Some(180 * MICROS_PER_SECOND));
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].1.count, 9);
        assert_eq!(written[0].0.window, 120 * MICROS_PER_SECOND);
        // A new window: the source is new again.
        assert!(matches!(
            t.note(&seen(180 * MICROS_PER_SECOND, v4(1))),
            Noted::First(_)
        ));
    }

    #[test]
    fn a_flood_from_a_million_addresses_stays_bounded_and_counted() {
        let cap = 100;
        let t = RefusalTable::new(cap);
        let mut firsts = 0u64;
        let n = 1_000_000u32;
        for i in 0..n {
            // Spread over many /24s.
            if let Noted::First(_) = t.note(&seen(0, v4(i.wrapping_mul(2_654_435_761)))) {
                firsts += 1;
            }
            assert!(t.len() <= cap + cap / 2 + 1);
        }
        assert_eq!(firsts, cap as u64);
        let written = t.take(None);
        let counted: u64 = written.iter().map(|(_, t)| t.count).sum();
        assert_eq!(
            firsts + counted,
            u64::from(n),
            "every refusal is counted once"
        );
        assert!(written.len() <= cap / 2 + 1 + 1);
        assert!(written.iter().any(|(k, _)| k.source == Source::Any));
        assert!(t.is_empty());
    }

    #[test]
    fn networks_are_slash_24_and_slash_48() {
        assert_eq!(
            network_of("203.0.113.77".parse().unwrap()).to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            network_of("2001:db8:1:2::9".parse().unwrap()).to_string(),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn unwritten_tallies_come_back() {
        let t = RefusalTable::new(4);
        let Noted::First(key) = t.note(&seen(0, v4(1))) else {
            panic!("first")
        };
        t.count_unwritten(&key, 0);
        let taken = t.take(None);
        assert_eq!(taken[0].1.count, 1);
        t.restore(taken);
        assert_eq!(t.take(None)[0].1.count, 1);
    }
}

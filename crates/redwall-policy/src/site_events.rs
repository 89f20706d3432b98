//! What an agent reports about its site beside heartbeats: the log lines
//! and audit events it kept in its journals while the hub was out of reach
//! ([`SiteEvent`]), and the figures of its MQTT store-and-forward
//! ([`SiteReport`]). The hub trusts none of it beyond what these rules
//! admit: an agent is a machine at a customer's site, and what it sends
//! ends up in the team's audit log and on the console.

use serde::{Deserialize, Serialize};

use crate::{refused, RuleError};

/// Site events travel in two streams, each kept in its own journal at the
/// agent, so a flood of log lines never pushes out an audit event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SiteStream {
    Audit,
    Log,
}

impl SiteStream {
    pub fn name(self) -> &'static str {
        match self {
            SiteStream::Audit => "audit",
            SiteStream::Log => "log",
        }
    }
}

/// One event of a stream, numbered within its journal (see [`SiteBatch`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteEvent {
    pub seq: u64,
    /// When it happened, by the site's clock: Unix milliseconds.
    pub at_ms: i64,
    /// Who said it: one of [`SOURCES`].
    pub source: String,
    /// A log line, or an audit event's name (`flows.set`,
    /// `agent.node_red_crashed`).
    pub text: String,
    /// The user an audit event names (from Node-RED's admin token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// An audit event's details as the site recorded them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Where a site event may come from: the agent itself, its Node-RED's
/// standard output (and its audit events), or its standard error.
pub const SOURCES: [&str; 3] = ["agent", "node-red", "node-red-stderr"];

/// Events in one frame.
pub const MAX_EVENTS_PER_BATCH: usize = 200;
/// A log line's longest (the agent cuts longer ones before keeping them).
pub const MAX_LINE_BYTES: usize = 4 * 1024;
/// An audit event's details, as compact JSON.
pub const MAX_DETAILS_BYTES: usize = 8 * 1024;
/// A user's name in an audit event.
pub const MAX_USER_CHARS: usize = 100;
/// An audit event's name.
pub const MAX_EVENT_NAME: usize = 80;
/// Site timestamps before 2000 or after 2200 are a broken clock or a lie.
const AT_MS_RANGE: std::ops::RangeInclusive<i64> = 946_684_800_000..=7_258_118_400_000;

/// Events an agent sends at once from one journal: `epoch` names the
/// journal (a new one, after the agent's directory was made anew, starts
/// numbering at 1 again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteBatch<'a> {
    pub stream: SiteStream,
    pub epoch: &'a str,
    pub events: &'a [SiteEvent],
}

fn bad(message: impl Into<String>) -> RuleError {
    refused("invalid_site_events", message)
}

/// Whether the hub may store `batch` at all. One bad event refuses the
/// whole batch: the agent's journal is then stuck on it, which its
/// heartbeats show, rather than the hub keeping half of what it sent.
pub fn check_batch(batch: &SiteBatch<'_>) -> Result<(), RuleError> {
    if batch.epoch.len() != 16
        || !batch
            .epoch
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad("a journal's epoch is 16 lowercase hex characters"));
    }
    if batch.events.is_empty() || batch.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(bad(format!(
            "a batch holds 1 to {MAX_EVENTS_PER_BATCH} events"
        )));
    }
    let mut last = 0u64;
    for event in batch.events {
        if event.seq <= last || event.seq > i64::MAX as u64 {
            return Err(bad("events are numbered from 1, strictly increasing"));
        }
        last = event.seq;
        check_event(batch.stream, event)?;
    }
    Ok(())
}

fn check_event(stream: SiteStream, e: &SiteEvent) -> Result<(), RuleError> {
    if !AT_MS_RANGE.contains(&e.at_ms) {
        return Err(bad("an event's time is out of range"));
    }
    if !SOURCES.contains(&e.source.as_str()) {
        return Err(bad(format!(
            "an event's source is one of {}",
            SOURCES.join(", ")
        )));
    }
    match stream {
        SiteStream::Log => {
            if e.text.len() > MAX_LINE_BYTES || e.text.contains(['\n', '\r', '\0']) {
                return Err(bad(format!(
                    "a log line is one line of at most {MAX_LINE_BYTES} bytes"
                )));
            }
            if e.user.is_some() || e.details.is_some() {
                return Err(bad("a log line has no user or details"));
            }
        }
        SiteStream::Audit => {
            if !audit_name(&e.text) {
                return Err(bad(format!(
                    "an audit event's name is 1 to {MAX_EVENT_NAME} of a-z, A-Z, 0-9, '.', '_' and '-'"
                )));
            }
            if let Some(user) = &e.user {
                if user.is_empty()
                    || user.chars().count() > MAX_USER_CHARS
                    || user.chars().any(char::is_control)
                {
                    return Err(bad(format!(
                        "a user's name is 1 to {MAX_USER_CHARS} printable characters"
                    )));
                }
            }
            if let Some(details) = &e.details {
                if !details.is_object() || details.to_string().len() > MAX_DETAILS_BYTES {
                    return Err(bad(format!(
                        "an audit event's details are a JSON object of at most {MAX_DETAILS_BYTES} bytes"
                    )));
                }
            }
        }
    }
    Ok(())
}

fn audit_name(name: &str) -> bool {
    (1..=MAX_EVENT_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What the hub last stored of a stream: the journal's epoch and the
/// highest sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub epoch: String,
    pub seq: u64,
}

/// What of a checked batch is new to the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The batch's events from this index on were never stored (all of
    /// them after a new epoch; none when the batch was stored already, as
    /// when the hub's answer was lost with the link).
    pub first_new: usize,
    /// Events the site numbered but the hub will never get: its journal
    /// dropped them when full (or they were lost with its disk).
    pub lost: u64,
    /// The batch comes from a journal the hub has not seen before.
    pub new_epoch: bool,
}

/// Which of `batch` to store, given what was stored before. Sequence
/// numbers only grow within an epoch, so a resent batch is recognised and
/// never stored twice.
pub fn admit(stored: Option<&Stored>, batch: &SiteBatch<'_>) -> Admitted {
    let (after, new_epoch) = match stored {
        Some(s) if s.epoch == batch.epoch => (s.seq, false),
        _ => (0, true),
    };
    let first_new = batch
        .events
        .iter()
        .position(|e| e.seq > after)
        .unwrap_or(batch.events.len());
    let lost = batch
        .events
        .get(first_new)
        .map_or(0, |e| e.seq.saturating_sub(after).saturating_sub(1));
    Admitted {
        first_new,
        lost,
        new_epoch,
    }
}

/// Events one agent's connection may have stored per second, over time.
///
/// An honest agent is bounded by its journals, not by time: each holds at
/// most 4 MiB (the agent's `JournalConfig`), which is some 30,000 log
/// lines of ordinary length (a record is the line and about 70 bytes
/// more), and fewer, larger audit events. However long a site was offline
/// (a day of a line a second is 86,400 lines, more than the journal
/// keeps), its backlog is what its journals kept: a full log journal
/// drains in about a minute at this rate, both full in under two. Slowed,
/// never stopped: an agent is answered as soon as its budget allows, and
/// its journal waits for the answer. Steady output of 500 lines a second
/// (some 4 GB of log a day) is more than any Node-RED of a working site
/// writes for long, so an honest agent never falls behind for good.
///
/// A compromised agent (its key stolen) is held to the same: two and a
/// half full batches (transactions) a second, a known load on either
/// backend, where without a budget it had as many as its link and the
/// database allowed (in this repository's tests a debug build stored
/// 2,000 to 3,000 events a second from one agent on PostgreSQL, 8,000 to
/// 12,000 on SQLite; a release build more). Log lines are capped per agent
/// in the store, so a flood of them costs writes only; audit entries are
/// chained and kept until retention prunes them, so a flood of them fills
/// the team's audit log: at this rate with at most 43 million entries a
/// day, where the thousands a second of an unbounded agent made hundreds
/// of millions (each shown as the agent's, so a flood is seen for what it
/// is).
pub const SITE_EVENTS_PER_SECOND: u64 = 500;

/// The most a connection may have stored at once, after a quiet while:
/// five full batches, so a burst at a connected site (a crash loop writing
/// its stack traces) is stored without delay. A new connection starts
/// with none (see [`SiteEventBudget::for_connection`]).
pub const SITE_EVENTS_BURST: u64 = 1_000;

// A full batch must fit in the budget, else an honest agent's full batch
// would wait forever.
const _: () = assert!(SITE_EVENTS_BURST >= MAX_EVENTS_PER_BATCH as u64);

/// Thousandths of an event: a millisecond's refill is a whole number of
/// them at any rate.
const MILLI: u64 = 1_000;

/// How many site events a connection may still have stored: a token
/// bucket of at most `burst` events, refilled at `per_second`. Time comes
/// in as milliseconds on a clock the caller keeps that never goes back
/// (one that does refills nothing until it has caught up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteEventBudget {
    burst: u64,
    per_second: u64,
    /// What is left, in thousandths of an event.
    left: u64,
    /// Up to when the refill was counted.
    at_ms: u64,
}

/// Why a batch may not be stored now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverBudget {
    /// It may once this long has passed, if nothing else is spent
    /// meanwhile.
    Wait(std::time::Duration),
    /// It never may: it is larger than the whole budget.
    Never,
}

impl SiteEventBudget {
    /// An empty budget of at most `burst` events, refilled at `per_second`
    /// (each at least 1), from `now_ms` on.
    pub fn new(burst: u64, per_second: u64, now_ms: u64) -> SiteEventBudget {
        SiteEventBudget {
            burst: burst.max(1),
            per_second: per_second.max(1),
            left: 0,
            at_ms: now_ms,
        }
    }

    /// A new connection's budget: [`SITE_EVENTS_BURST`] at most, refilled
    /// at [`SITE_EVENTS_PER_SECOND`], and empty to begin with. The budget
    /// lives with the connection, so a full one at the start would give an
    /// agent that hangs up and dials again a burst each time; empty, a new
    /// connection earns only what time gives it, as the old one would
    /// have (an honest agent's first full batch waits 0.4 seconds).
    pub fn for_connection(now_ms: u64) -> SiteEventBudget {
        SiteEventBudget::new(SITE_EVENTS_BURST, SITE_EVENTS_PER_SECOND, now_ms)
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.at_ms = self.at_ms.max(now_ms);
        // per_second events a second are per_second thousandths a
        // millisecond.
        self.left = self
            .left
            .saturating_add(elapsed.saturating_mul(self.per_second))
            .min(self.burst.saturating_mul(MILLI));
    }

    /// Whole events that may be stored at `now_ms`.
    pub fn available(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        self.left / MILLI
    }

    /// Spends `events` at `now_ms` if the budget holds them; else spends
    /// nothing and says how long until it would (never, for more than
    /// `burst`).
    pub fn take(&mut self, now_ms: u64, events: usize) -> Result<(), OverBudget> {
        self.refill(now_ms);
        let events = u64::try_from(events).unwrap_or(u64::MAX);
        if events > self.burst {
            return Err(OverBudget::Never);
        }
        let cost = events.saturating_mul(MILLI);
        match cost.checked_sub(self.left) {
            None | Some(0) => {
                self.left -= cost;
                Ok(())
            }
            Some(missing) => Err(OverBudget::Wait(std::time::Duration::from_millis(
                missing.div_ceil(self.per_second),
            ))),
        }
    }
}

/// The figures of an agent's MQTT store-and-forward, with each heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BridgeReport {
    /// Connected to the site's broker, and to the team broker.
    pub local_connected: bool,
    pub team_connected: bool,
    /// Messages waiting on disk for the team broker, and their bytes.
    pub queued: u64,
    pub queued_bytes: u64,
    /// The outbox's bound, in bytes.
    pub max_bytes: u64,
    /// A message is on its way (QoS 2 exchange not complete).
    pub in_flight: bool,
    /// Delivered to the team broker since the outbox was made.
    pub delivered: u64,
    /// Lost by the drop policy when full: dropped (oldest) and refused
    /// (new), all priorities.
    pub dropped: u64,
    pub refused: u64,
    /// Sent again as new after the team broker lost the bridge's session:
    /// each may have arrived twice.
    pub resent_after_session_loss: u64,
}

/// What an agent's journals hold, with each heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JournalReport {
    /// Audit events and log lines waiting for the hub.
    pub audit_pending: u64,
    pub log_pending: u64,
    /// Dropped when a journal was full, since it was made.
    pub audit_dropped: u64,
    pub log_dropped: u64,
}

/// The site's figures an agent adds to its heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SiteReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalReport>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    const EPOCH: &str = "0123456789abcdef";
    const NOW: i64 = 1_796_000_000_000;

    fn log(seq: u64) -> SiteEvent {
        SiteEvent {
            seq,
            at_ms: NOW,
            source: "node-red".into(),
            text: format!("line {seq}"),
            user: None,
            details: None,
        }
    }

    fn audit(seq: u64) -> SiteEvent {
        SiteEvent {
            seq,
            at_ms: NOW,
            source: "node-red".into(),
            text: "flows.set".into(),
            user: Some("olivia".into()),
            details: Some(json!({"type": "full"})),
        }
    }

    fn batch(stream: SiteStream, events: &[SiteEvent]) -> Result<(), RuleError> {
        check_batch(&SiteBatch {
            stream,
            epoch: EPOCH,
            events,
        })
    }

    #[test]
    fn good_batches_pass() {
        batch(SiteStream::Log, &[log(1), log(2), log(9)]).unwrap();
        batch(SiteStream::Audit, &[audit(4)]).unwrap();
        let full: Vec<_> = (1..=MAX_EVENTS_PER_BATCH as u64).map(log).collect();
        batch(SiteStream::Log, &full).unwrap();
        let mut longest = log(1);
        longest.text = "x".repeat(MAX_LINE_BYTES);
        batch(SiteStream::Log, &[longest]).unwrap();
        let mut empty_line = log(1);
        empty_line.text.clear();
        batch(SiteStream::Log, &[empty_line]).unwrap();
        for source in SOURCES {
            let mut e = log(1);
            e.source = source.into();
            batch(SiteStream::Log, &[e]).unwrap();
        }
    }

    #[test]
    fn epochs_are_sixteen_lowercase_hex() {
        for epoch in [
            "",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789ABCDEF",
            "0123456789abcdeg",
            "0123456789abcd\0f",
        ] {
            let e = check_batch(&SiteBatch {
                stream: SiteStream::Log,
                epoch,
                events: &[log(1)],
            });
            assert_eq!(e.unwrap_err().code, "invalid_site_events", "{epoch:?}");
        }
    }

    #[test]
    fn sizes_and_order_are_bounded() {
        assert!(batch(SiteStream::Log, &[]).is_err());
        let over: Vec<_> = (1..=MAX_EVENTS_PER_BATCH as u64 + 1).map(log).collect();
        assert!(batch(SiteStream::Log, &over).is_err());
        assert!(batch(SiteStream::Log, &[log(0)]).is_err());
        assert!(batch(SiteStream::Log, &[log(2), log(2)]).is_err());
        assert!(batch(SiteStream::Log, &[log(3), log(2)]).is_err());
        assert!(batch(SiteStream::Log, &[log(u64::MAX)]).is_err());
        assert!(batch(SiteStream::Log, &[log(i64::MAX as u64)]).is_ok());
    }

    #[test]
    fn log_lines_are_single_bounded_lines_without_extras() {
        for text in [
            "x".repeat(MAX_LINE_BYTES + 1),
            "a\nb".into(),
            "a\rb".into(),
            "a\0b".into(),
        ] {
            let mut e = log(1);
            e.text = text;
            assert!(batch(SiteStream::Log, &[e]).is_err());
        }
        let mut with_user = log(1);
        with_user.user = Some("u".into());
        assert!(batch(SiteStream::Log, &[with_user]).is_err());
        let mut with_details = log(1);
        with_details.details = Some(json!({}));
        assert!(batch(SiteStream::Log, &[with_details]).is_err());
    }

    #[test]
    fn audit_events_are_named_and_bounded() {
        for name in [
            "",
            "flows set",
            "a/b",
            "x\u{e9}",
            &"a".repeat(MAX_EVENT_NAME + 1),
        ] {
            let mut e = audit(1);
            e.text = name.into();
            assert!(batch(SiteStream::Audit, &[e]).is_err(), "{name:?}");
        }
        let mut longest = audit(1);
        longest.text = "a".repeat(MAX_EVENT_NAME);
        batch(SiteStream::Audit, &[longest]).unwrap();
        for user in ["", "a\u{7}", &"u".repeat(MAX_USER_CHARS + 1)] {
            let mut e = audit(1);
            e.user = Some(user.into());
            assert!(batch(SiteStream::Audit, &[e]).is_err(), "{user:?}");
        }
        for details in [
            json!([1]),
            json!("x"),
            json!({"a": "b".repeat(MAX_DETAILS_BYTES)}),
        ] {
            let mut e = audit(1);
            e.details = Some(details);
            assert!(batch(SiteStream::Audit, &[e]).is_err());
        }
        let mut bare = audit(1);
        bare.user = None;
        bare.details = None;
        batch(SiteStream::Audit, &[bare]).unwrap();
    }

    #[test]
    fn times_and_sources_are_checked() {
        for at_ms in [-1, 0, 946_684_799_999, 7_258_118_400_001, i64::MAX] {
            let mut e = log(1);
            e.at_ms = at_ms;
            assert!(batch(SiteStream::Log, &[e]).is_err(), "{at_ms}");
        }
        for source in ["", "hub", "Agent", "node-red "] {
            let mut e = log(1);
            e.source = source.into();
            assert!(batch(SiteStream::Log, &[e]).is_err(), "{source:?}");
        }
    }

    fn admitted(stored: Option<(&str, u64)>, seqs: &[u64]) -> Admitted {
        let stored = stored.map(|(epoch, seq)| Stored {
            epoch: epoch.into(),
            seq,
        });
        let events: Vec<_> = seqs.iter().copied().map(log).collect();
        admit(
            stored.as_ref(),
            &SiteBatch {
                stream: SiteStream::Log,
                epoch: EPOCH,
                events: &events,
            },
        )
    }

    #[test]
    fn admission_skips_what_was_stored_and_counts_gaps() {
        // First batch ever: all new, nothing lost.
        assert_eq!(
            admitted(None, &[1, 2, 3]),
            Admitted {
                first_new: 0,
                lost: 0,
                new_epoch: true
            }
        );
        // A journal that dropped its first 4 before the hub heard of it.
        assert_eq!(admitted(None, &[5, 6]).lost, 4);
        // The next batch, in order.
        assert_eq!(
            admitted(Some((EPOCH, 3)), &[4, 5]),
            Admitted {
                first_new: 0,
                lost: 0,
                new_epoch: false
            }
        );
        // The same batch again (the hub's answer was lost): nothing new.
        assert_eq!(
            admitted(Some((EPOCH, 5)), &[4, 5]),
            Admitted {
                first_new: 2,
                lost: 0,
                new_epoch: false
            }
        );
        // Partly stored.
        assert_eq!(
            admitted(Some((EPOCH, 4)), &[3, 4, 5, 6]),
            Admitted {
                first_new: 2,
                lost: 0,
                new_epoch: false
            }
        );
        // A gap: the journal dropped 7..=9 while full.
        assert_eq!(
            admitted(Some((EPOCH, 6)), &[10, 11]),
            Admitted {
                first_new: 0,
                lost: 3,
                new_epoch: false
            }
        );
        // Another epoch: the journal was made anew; numbering restarts.
        assert_eq!(
            admitted(Some(("ffffffffffffffff", 900)), &[1, 2]),
            Admitted {
                first_new: 0,
                lost: 0,
                new_epoch: true
            }
        );
    }

    fn ms(d: std::time::Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap()
    }

    fn wait(r: Result<(), OverBudget>) -> u64 {
        match r {
            Err(OverBudget::Wait(d)) => ms(d),
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn a_new_connection_starts_empty_and_fills_at_its_rate() {
        let mut b = SiteEventBudget::for_connection(5_000);
        assert_eq!(b.available(5_000), 0);
        // An honest agent's first full batch waits 0.4 seconds.
        let full = MAX_EVENTS_PER_BATCH as u64 * 1_000 / SITE_EVENTS_PER_SECOND;
        assert_eq!(full, 400);
        assert_eq!(wait(b.take(5_000, MAX_EVENTS_PER_BATCH)), full);
        assert_eq!(wait(b.take(5_000, 1)), 2);
        b.take(5_000 + full, MAX_EVENTS_PER_BATCH).unwrap();
        assert_eq!(b.available(5_000 + full), 0);

        let mut b = SiteEventBudget::new(2_000, 1_000, 5_000);
        assert_eq!(wait(b.take(5_000, 200)), 200);
        assert_eq!(wait(b.take(5_000, 1)), 1);
        assert_eq!(b.available(5_199), 199);
        assert_eq!(wait(b.take(5_199, 200)), 1);
        b.take(5_200, 200).unwrap();
        assert_eq!(b.available(5_200), 0);
        // Nothing is spent by a refusal, nothing is owed by a spend.
        assert_eq!(wait(b.take(5_200, 1)), 1);
        b.take(5_201, 1).unwrap();
    }

    #[test]
    fn the_budget_is_capped_at_its_burst() {
        let mut b = SiteEventBudget::for_connection(0);
        assert_eq!(b.available(3_600_000), SITE_EVENTS_BURST);
        assert_eq!(b.available(u64::MAX), SITE_EVENTS_BURST);
        for _ in 0..SITE_EVENTS_BURST / MAX_EVENTS_PER_BATCH as u64 {
            b.take(u64::MAX, MAX_EVENTS_PER_BATCH).unwrap();
        }
        assert_eq!(b.available(u64::MAX), 0);
        assert!(b.take(u64::MAX, 1).is_err());
    }

    #[test]
    fn more_than_the_burst_never_fits_and_spends_nothing() {
        let mut b = SiteEventBudget::new(300, 1_000, 0);
        assert_eq!(b.take(10_000, 301), Err(OverBudget::Never));
        assert_eq!(b.take(10_000, usize::MAX), Err(OverBudget::Never));
        assert_eq!(b.available(10_000), 300);
        b.take(10_000, 300).unwrap();
        // Nothing at all always fits.
        b.take(10_000, 0).unwrap();
        let mut b = SiteEventBudget::for_connection(0);
        assert_eq!(
            b.take(0, SITE_EVENTS_BURST as usize + 1),
            Err(OverBudget::Never)
        );
        // A batch over the protocol's limit is still refused by
        // `check_batch`; the budget itself holds any batch up to its burst.
        assert!(b.take(0, MAX_EVENTS_PER_BATCH + 1).is_err());
    }

    /// The wait a refusal names is exact: a millisecond less is still too
    /// early, that long is enough, for every rate, size and fill.
    #[test]
    fn the_wait_named_is_exactly_enough() {
        for per_second in [1, 2, 3, 7, 999, 1_000, 1_001, 40_000] {
            for burst in [1, 2, 5, 13] {
                for spent_first in 0..=burst {
                    for events in 1..=burst {
                        for filled_ms in [0, 1, 2, 333, 1_000] {
                            let mut b = SiteEventBudget::new(burst, per_second, 0);
                            let full = (burst * 1_000).div_ceil(per_second);
                            b.take(full, spent_first as usize).unwrap();
                            let now = full + filled_ms;
                            let mut probe = b.clone();
                            match probe.take(now, events as usize) {
                                Ok(()) => {
                                    let have =
                                        (burst - spent_first) * 1_000 + filled_ms * per_second;
                                    assert!(have >= events * 1_000);
                                }
                                Err(OverBudget::Wait(d)) => {
                                    let d = ms(d);
                                    assert!(d >= 1);
                                    let mut early = b.clone();
                                    assert!(
                                        early.take(now + d - 1, events as usize).is_err(),
                                        "{per_second}/s, burst {burst}, {events} after {d} ms"
                                    );
                                    b.take(now + d, events as usize).unwrap();
                                }
                                Err(OverBudget::Never) => panic!("fits in the burst"),
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_clock_that_goes_back_refills_nothing() {
        let mut b = SiteEventBudget::new(1_000, 1_000, 10_000);
        b.take(10_500, 500).unwrap();
        assert_eq!(b.available(10_500), 0);
        // Back a second: nothing more, and nothing counted twice on the
        // way forward again.
        assert_eq!(b.available(9_500), 0);
        assert_eq!(b.available(10_500), 0);
        assert_eq!(b.available(10_600), 100);
        // From the start of a clock at its end, without overflow.
        let mut b = SiteEventBudget::new(u64::MAX, u64::MAX, 0);
        assert_eq!(b.available(u64::MAX), u64::MAX / 1_000);
        b.take(u64::MAX, usize::MAX).unwrap();
        assert_eq!(b.available(u64::MAX), 0);
    }

    #[test]
    fn zero_rates_and_bursts_are_the_smallest_budget() {
        let mut b = SiteEventBudget::new(0, 0, 0);
        assert_eq!(wait(b.take(0, 1)), 1_000);
        b.take(1_000, 1).unwrap();
        assert_eq!(b.take(1_000_000, 2), Err(OverBudget::Never));
    }

    /// An honest agent draining full journals batch after batch, waiting
    /// as told: slowed to the rate, never stopped.
    #[test]
    fn an_honest_backlog_drains_at_the_rate() {
        let backlog = 60_000u64;
        let mut b = SiteEventBudget::for_connection(0);
        let (mut now, mut stored, mut waits) = (0u64, 0u64, 0u32);
        while stored < backlog {
            let n = (backlog - stored).min(MAX_EVENTS_PER_BATCH as u64);
            match b.take(now, n as usize) {
                Ok(()) => stored += n,
                Err(OverBudget::Wait(d)) => {
                    now += ms(d);
                    waits += 1;
                }
                Err(OverBudget::Never) => panic!("a batch never fits"),
            }
        }
        // Two full journals and more in two minutes, a full batch every
        // 0.4 seconds, each waited for once.
        assert_eq!(now, backlog * 1_000 / SITE_EVENTS_PER_SECOND);
        assert_eq!(now, 120_000);
        assert_eq!(waits, 300);
    }

    proptest::proptest! {
        /// However an agent times its batches, what it gets stored from
        /// the start of its connection is never more than the rate gives
        /// (the budget starts empty), nor over any stretch more than the
        /// burst and the rate; and one that waits as told always gets its
        /// batch through.
        #[test]
        fn nothing_beats_the_rate(
            steps in proptest::collection::vec((0u64..400, 0usize..=MAX_EVENTS_PER_BATCH, proptest::bool::ANY), 1..200),
        ) {
            let start = 1_000_000u64;
            let mut b = SiteEventBudget::for_connection(start);
            let mut now = start;
            let mut spent: Vec<(u64, u64)> = Vec::new();
            for (gap, events, patient) in steps {
                now += gap;
                match b.take(now, events) {
                    Ok(()) => spent.push((now, events as u64)),
                    Err(OverBudget::Wait(d)) if patient => {
                        now += ms(d);
                        proptest::prop_assert!(b.take(now, events).is_ok());
                        spent.push((now, events as u64));
                    }
                    Err(OverBudget::Wait(_)) => {}
                    Err(OverBudget::Never) => proptest::prop_assert!(false, "{events} never fits"),
                }
                let total: u64 = spent.iter().map(|s| s.1).sum();
                proptest::prop_assert!(total * 1_000 <= (now - start) * SITE_EVENTS_PER_SECOND);
            }
            for (i, &(from, _)) in spent.iter().enumerate() {
                for &(to, _) in &spent[i..] {
                    let within: u64 = spent.iter().filter(|s| (from..=to).contains(&s.0)).map(|s| s.1).sum();
                    proptest::prop_assert!(
                        within * 1_000 <= SITE_EVENTS_BURST * 1_000 + (to - from) * SITE_EVENTS_PER_SECOND
                    );
                }
            }
        }
    }

    #[test]
    fn reports_read_strictly() {
        let beat = json!({"bridge": {"local_connected": true, "team_connected": false, "queued": 3,
            "queued_bytes": 120, "max_bytes": 1000, "in_flight": true, "delivered": 9,
            "dropped": 1, "refused": 0, "resent_after_session_loss": 0},
            "journal": {"audit_pending": 1, "log_pending": 2, "audit_dropped": 0, "log_dropped": 5}});
        let report: SiteReport = serde_json::from_value(beat).unwrap();
        assert_eq!(report.bridge.unwrap().queued, 3);
        assert_eq!(report.journal.unwrap().log_dropped, 5);
        assert!(serde_json::from_value::<SiteReport>(json!({"other": 1})).is_err());
        assert_eq!(
            serde_json::from_value::<SiteReport>(json!({})).unwrap(),
            SiteReport::default()
        );
    }
}

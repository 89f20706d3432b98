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

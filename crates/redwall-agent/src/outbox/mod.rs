//! The outbox: a bounded, crash-safe disk queue of MQTT messages waiting
//! for the team broker, in `DIR/outbox/` (mode 0700, files 0600).
//!
//! # Layout
//!
//! - `high/`, `normal/`, `low/`: one queue per priority, each a directory
//!   of append-only segment files (see `queue.rs`). Every record carries
//!   its length and a CRC-32C (see `record.rs`).
//! - `delivery.log`: each queue's head, the message in flight with its
//!   packet id and QoS 2 phase, and the counters (see `delivery.rs`).
//!
//! # Guarantees
//!
//! - [`Outbox::append_batch`] returns only once the batch is on disk
//!   (one sync per touched file per batch), so the bridge acknowledges a
//!   message to the local broker only after that.
//! - Messages leave in priority order (high, normal, low), FIFO within a
//!   priority, one at a time: [`Outbox::take_next`] moves the head message
//!   into the delivery state (persisted) and gives it a packet id; it stays
//!   there, surviving restarts, until [`Outbox::complete`] (on PUBCOMP).
//!   So a restart neither loses nor repeats a message the team broker
//!   completed, and resends the one in flight with the same packet id.
//! - A record cut short by a crash, or damaged, is cut off when the outbox
//!   opens (counted in [`OutboxStats::damaged`]), never a panic.
//! - The queued bytes (records plus the message in flight) never exceed
//!   [`OutboxConfig::max_bytes`]. When a message does not fit:
//!   [`DropPolicy::DropOldest`] drops the oldest queued messages of the
//!   lowest priority present until it fits (if the new message's own
//!   priority is lower than everything queued, the new message is the one
//!   refused); [`DropPolicy::RefuseNew`] refuses the new message. Both are
//!   counted per priority and persisted. On disk the outbox may use up to
//!   one segment per priority more than `max_bytes`: consumed records stay
//!   until their whole segment is consumed.

mod delivery;
mod queue;
mod record;

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};

use redwall_policy::mqtt_acl;
use serde::{Deserialize, Serialize};

pub use delivery::{InFlight, Phase};
pub use record::StoredMessage;

use delivery::{DeliveryLog, DeliveryState};
use queue::{HeadError, Queue};

/// The outbox's directory in the agent's state directory.
pub const OUTBOX_DIR: &str = "outbox";
/// How many recent stored messages are remembered to recognise the local
/// broker's redelivery of one (see [`Outbox::recently_stored`]).
const RECENT: usize = 1024;

/// MQTT's quality of service, as the message was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Qos {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl Qos {
    pub fn from_u8(n: u8) -> Option<Self> {
        match n {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// One MQTT message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: Qos,
    pub retain: bool,
}

/// Which queue a message waits in: higher ones leave first, lower ones are
/// dropped first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    Normal,
    Low,
}

/// Highest first: the order messages leave in.
pub const PRIORITIES: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

impl Priority {
    pub fn index(self) -> usize {
        match self {
            Self::High => 0,
            Self::Normal => 1,
            Self::Low => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

/// What happens to a message that does not fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropPolicy {
    /// Keep the newest data: drop the oldest messages of the lowest
    /// priority present.
    #[default]
    DropOldest,
    /// Keep what is queued: refuse the new message.
    RefuseNew,
}

/// A topic filter and the priority of the messages it matches; the first
/// rule that matches decides, and a message no rule matches is `normal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRule {
    /// An MQTT filter (`+` and `#` wildcards), as in a subscription.
    pub filter: String,
    pub priority: Priority,
}

/// `[bridge.outbox]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// The most bytes queued (records on disk, plus the message in flight).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default)]
    pub drop_policy: DropPolicy,
    /// Size of one segment file: the unit in which consumed space is given
    /// back to the disk.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Ordered: the first matching rule gives the priority.
    #[serde(default)]
    pub priorities: Vec<PriorityRule>,
}

fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_segment_bytes() -> u64 {
    1024 * 1024
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            drop_policy: DropPolicy::default(),
            segment_bytes: default_segment_bytes(),
            priorities: Vec::new(),
        }
    }
}

impl OutboxConfig {
    /// Checks the filters and sizes; the bridge calls it at start.
    pub fn check(&self) -> Result<(), OutboxError> {
        if self.max_bytes < 1024 {
            return Err(OutboxError::Config(
                "max_bytes must be at least 1024".into(),
            ));
        }
        if self.segment_bytes < 1024 {
            return Err(OutboxError::Config(
                "segment_bytes must be at least 1024".into(),
            ));
        }
        for rule in &self.priorities {
            mqtt_acl::check_filter(&rule.filter).map_err(|e| {
                OutboxError::Config(format!("priority filter {:?}: {e}", rule.filter))
            })?;
        }
        Ok(())
    }

    /// The priority of a message on `topic`: the first rule whose filter
    /// matches, else normal.
    pub fn priority_of(&self, topic: &str) -> Priority {
        self.priorities
            .iter()
            .find(|rule| mqtt_acl::matches(&rule.filter, topic))
            .map_or(Priority::Normal, |rule| rule.priority)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox configuration: {0}")]
    Config(String),
    #[error("outbox {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("outbox: {0}")]
    State(&'static str),
    #[error("outbox {0} is in use by another bridge (another agent on the same state directory?)")]
    Busy(String),
}

/// What became of one appended message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    Stored {
        seq: u64,
        priority: Priority,
    },
    /// Not stored: the outbox was full (counted).
    Refused,
    /// Not stored: larger than the whole outbox (counted).
    TooLarge,
}

/// What status and heartbeats report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxStats {
    /// Messages waiting, per priority (high, normal, low), not counting
    /// the one in flight.
    pub queued: [u64; 3],
    /// Bytes counted against `max_bytes` (the one in flight included).
    pub queued_bytes: u64,
    pub max_bytes: u64,
    pub in_flight: bool,
    /// Completed by the team broker (PUBCOMP).
    pub delivered: u64,
    /// Dropped from the queue to make room, per priority.
    pub dropped: [u64; 3],
    /// Refused because the outbox was full, per priority.
    pub refused: [u64; 3],
    /// Refused because larger than the whole outbox.
    pub too_large: u64,
    /// Damaged or torn records cut off at open.
    pub damaged: u64,
    /// Sent again as new after the team broker lost its session.
    pub resent_after_session_loss: u64,
}

impl OutboxStats {
    /// Every message lost on purpose: dropped, refused or too large.
    pub fn lost(&self) -> u64 {
        self.dropped.iter().sum::<u64>() + self.refused.iter().sum::<u64>() + self.too_large
    }
}

/// The queue itself; see the module documentation. Not thread-safe by
/// itself: the bridge keeps it behind one mutex, and every method that
/// writes syncs before returning (so call them off the async threads).
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    config: OutboxConfig,
    queues: [Queue; 3],
    log: DeliveryLog,
    state: DeliveryState,
    /// (origin packet id, content digest) of the last stored messages.
    recent: VecDeque<(u16, u32)>,
    /// Holds an exclusive flock(2) on `outbox/lock` while open.
    _lock: File,
}

impl Outbox {
    /// Opens (creating) the outbox in `state_dir/outbox`, repairing any
    /// torn or damaged tail.
    pub fn open(state_dir: &Path, config: &OutboxConfig) -> Result<Self, OutboxError> {
        config.check()?;
        let dir = state_dir.join(OUTBOX_DIR);
        ensure_private_dir(&dir).map_err(io_at(&dir))?;
        let lock = lock_dir(&dir)?;
        let opened = DeliveryLog::open(&dir).map_err(io_at(&dir))?;
        let mut state = opened.state.unwrap_or_default();
        if opened.repaired {
            state.counters.damaged += 1;
        }
        let mut recent: Vec<(u64, u16, u32)> = Vec::new();
        let mut last_seq = state.last_seq;
        let mut open_queue = |priority: Priority| {
            let path = dir.join(priority.name());
            let mut seen = |stored: &StoredMessage| {
                last_seq = last_seq.max(stored.seq);
                if stored.origin != 0 {
                    recent.push((
                        stored.seq,
                        stored.origin,
                        record::content_digest(&stored.message),
                    ));
                }
            };
            Queue::open(
                &path,
                state.consumed_through[priority.index()],
                config.segment_bytes,
                &mut seen,
            )
            .map_err(io_at(&path))
        };
        let (high, high_repairs) = open_queue(Priority::High)?;
        let (normal, normal_repairs) = open_queue(Priority::Normal)?;
        let (low, low_repairs) = open_queue(Priority::Low)?;
        state.counters.damaged +=
            high_repairs.damaged + normal_repairs.damaged + low_repairs.damaged;
        if let Some(f) = &state.in_flight {
            last_seq = last_seq.max(f.seq);
        }
        state.last_seq = last_seq;
        recent.sort_unstable();
        let skip = recent.len().saturating_sub(RECENT);
        let recent = recent[skip..].iter().map(|(_, o, d)| (*o, *d)).collect();
        let mut outbox = Self {
            dir,
            config: config.clone(),
            queues: [high, normal, low],
            log: opened.log,
            state,
            recent,
            _lock: lock,
        };
        outbox.persist()?;
        Ok(outbox)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// Stores one message: see [`Outbox::append_batch`].
    pub fn append(&mut self, message: Message, origin: u16) -> Result<Appended, OutboxError> {
        let appended = self.append_batch(vec![(message, origin)])?;
        appended
            .into_iter()
            .next()
            .ok_or(OutboxError::State("append gave no answer"))
    }

    /// Stores the messages in order (each with the packet id the local
    /// broker gave it, 0 for none), applying the bound, and returns once
    /// they are on disk: one sync per file touched, for the whole batch.
    pub fn append_batch(
        &mut self,
        messages: Vec<(Message, u16)>,
    ) -> Result<Vec<Appended>, OutboxError> {
        let mut answers = Vec::with_capacity(messages.len());
        let mut counters_changed = false;
        let mut touched = [false; 3];
        for (message, origin) in messages {
            let priority = self.config.priority_of(&message.topic);
            let cost = record::framed_message_len(&message);
            if cost > self.config.max_bytes {
                self.state.counters.too_large += 1;
                counters_changed = true;
                answers.push(Appended::TooLarge);
                continue;
            }
            let dropped_before = self.state.counters.dropped;
            let fits = self.make_room(cost, priority)?;
            counters_changed |= self.state.counters.dropped != dropped_before;
            if !fits {
                self.state.counters.refused[priority.index()] += 1;
                counters_changed = true;
                answers.push(Appended::Refused);
                continue;
            }
            let seq = self.state.last_seq + 1;
            let framed = record::frame(&record::encode_message(seq, origin, &message));
            let queue = &mut self.queues[priority.index()];
            queue.append(&framed, seq).map_err(io_at(&self.dir))?;
            self.state.last_seq = seq;
            touched[priority.index()] = true;
            if origin != 0 {
                self.remember(origin, &message);
            }
            answers.push(Appended::Stored { seq, priority });
        }
        // The queues first: a state naming a seq whose record is lost
        // would only skip numbers, never messages.
        for (index, queue) in self.queues.iter_mut().enumerate() {
            if touched[index] {
                queue.sync().map_err(io_at(&self.dir))?;
            }
        }
        // Drops and refusals moved heads or counters: persist them with
        // the batch. Plain appends need no state write (last_seq is
        // recovered from the records themselves).
        if counters_changed {
            self.persist()?;
        }
        Ok(answers)
    }

    /// Frees room for `cost` bytes under the drop policy; false if the
    /// new message must be refused.
    fn make_room(&mut self, cost: u64, priority: Priority) -> Result<bool, OutboxError> {
        while self.queued_bytes() + cost > self.config.max_bytes {
            if self.config.drop_policy == DropPolicy::RefuseNew {
                return Ok(false);
            }
            let Some(lowest) = PRIORITIES
                .iter()
                .rev()
                .find(|p| !self.queues[p.index()].is_empty())
                .copied()
            else {
                // Only the message in flight holds the space.
                return Ok(false);
            };
            if lowest.index() < priority.index() {
                // Everything queued matters more than the new message.
                return Ok(false);
            }
            match self.pop_head(lowest)? {
                Some(_) => {
                    self.state.counters.dropped[lowest.index()] += 1;
                    self.state.consumed_through[lowest.index()] =
                        self.queues[lowest.index()].consumed_through();
                }
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Takes the head of `priority`'s queue, skipping a segment that went
    /// bad since open (counted as damaged).
    fn pop_head(&mut self, priority: Priority) -> Result<Option<StoredMessage>, OutboxError> {
        let queue = &mut self.queues[priority.index()];
        loop {
            match queue.peek() {
                Ok(None) => return Ok(None),
                Ok(Some((stored, len))) => {
                    queue.pop(stored.seq, len);
                    return Ok(Some(stored));
                }
                Err(HeadError::Damaged) => {
                    self.state.counters.damaged += 1;
                    queue.skip_damaged_segment();
                }
                Err(HeadError::Io(e)) => return Err(io_at(&self.dir)(e)),
            }
        }
    }

    fn remember(&mut self, origin: u16, message: &Message) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent
            .push_back((origin, record::content_digest(message)));
    }

    /// Whether one of the last stored messages came with packet id
    /// `origin` and says exactly what `message` says: then a DUP publish
    /// from the local broker is its redelivery (after the agent stored it
    /// but before its acknowledgement reached the broker), not a new one.
    pub fn recently_stored(&self, origin: u16, message: &Message) -> bool {
        let digest = record::content_digest(message);
        self.recent
            .iter()
            .any(|(o, d)| *o == origin && *d == digest)
    }

    /// The message in flight, if any.
    pub fn in_flight(&self) -> Option<&InFlight> {
        self.state.in_flight.as_ref()
    }

    /// Moves the next message (highest priority, oldest first) into flight
    /// with a fresh packet id, durably. `None` if nothing waits. Refused
    /// while a message is in flight (one at a time).
    pub fn take_next(&mut self) -> Result<Option<InFlight>, OutboxError> {
        if self.state.in_flight.is_some() {
            return Err(OutboxError::State("a message is already in flight"));
        }
        let damaged = self.state.counters.damaged;
        let taken = self.take_into_flight()?;
        // Nothing taken, nothing changed: no write (the bridge asks on
        // every wake-up). A damaged segment skipped on the way counts.
        if taken.is_some()
            || self.state.counters.damaged != damaged
            || self.queues.iter().any(Queue::has_garbage)
        {
            self.persist()?;
        }
        Ok(taken)
    }

    fn take_into_flight(&mut self) -> Result<Option<InFlight>, OutboxError> {
        for priority in PRIORITIES {
            if let Some(stored) = self.pop_head(priority)? {
                self.state.consumed_through[priority.index()] =
                    self.queues[priority.index()].consumed_through();
                let pkid = next_pkid(self.state.last_pkid);
                self.state.last_pkid = pkid;
                let in_flight = InFlight {
                    seq: stored.seq,
                    priority,
                    pkid,
                    phase: Phase::Published,
                    message: stored.message,
                };
                self.state.in_flight = Some(in_flight.clone());
                return Ok(Some(in_flight));
            }
        }
        Ok(None)
    }

    /// PUBREC arrived for the message in flight: from now on only PUBREL
    /// may be sent for it. Durable before returning, so the caller sends
    /// PUBREL only after this.
    pub fn mark_released(&mut self, pkid: u16) -> Result<(), OutboxError> {
        match self.state.in_flight.as_mut() {
            Some(f) if f.pkid == pkid => {
                if f.phase == Phase::Released {
                    return Ok(());
                }
                f.phase = Phase::Released;
            }
            _ => return Err(OutboxError::State("PUBREC for a message not in flight")),
        }
        self.persist()
    }

    /// PUBCOMP arrived: the message is delivered; with `take_next`, the next
    /// one goes into flight in the same write.
    pub fn complete(
        &mut self,
        pkid: u16,
        take_next: bool,
    ) -> Result<Option<InFlight>, OutboxError> {
        match &self.state.in_flight {
            Some(f) if f.pkid == pkid && f.phase == Phase::Released => {}
            _ => return Err(OutboxError::State("PUBCOMP for a message not released")),
        }
        self.state.in_flight = None;
        self.state.counters.delivered += 1;
        let next = if take_next {
            self.take_into_flight()?
        } else {
            None
        };
        self.persist()?;
        Ok(next)
    }

    /// The team broker has no session for the bridge any more, so it
    /// cannot tell a resend from a new message: the message in flight is
    /// sent again as new (counted; see the bridge for what that risks).
    pub fn restart_in_flight(&mut self) -> Result<Option<InFlight>, OutboxError> {
        let Some(f) = self.state.in_flight.as_mut() else {
            return Ok(None);
        };
        f.phase = Phase::Published;
        let restarted = f.clone();
        self.state.counters.resent_after_session_loss += 1;
        self.persist()?;
        Ok(Some(restarted))
    }

    pub fn queued_bytes(&self) -> u64 {
        let in_flight = self
            .state
            .in_flight
            .as_ref()
            .map_or(0, |f| record::framed_message_len(&f.message));
        self.queues.iter().map(Queue::live_bytes).sum::<u64>() + in_flight
    }

    /// Messages waiting (not counting the one in flight).
    pub fn queued(&self) -> u64 {
        self.queues.iter().map(Queue::live_records).sum()
    }

    pub fn stats(&self) -> OutboxStats {
        let c = &self.state.counters;
        OutboxStats {
            queued: [
                self.queues[0].live_records(),
                self.queues[1].live_records(),
                self.queues[2].live_records(),
            ],
            queued_bytes: self.queued_bytes(),
            max_bytes: self.config.max_bytes,
            in_flight: self.state.in_flight.is_some(),
            delivered: c.delivered,
            dropped: c.dropped,
            refused: c.refused,
            too_large: c.too_large,
            damaged: c.damaged,
            resent_after_session_loss: c.resent_after_session_loss,
        }
    }

    fn persist(&mut self) -> Result<(), OutboxError> {
        self.log.write(&self.state).map_err(io_at(&self.dir))?;
        for queue in &mut self.queues {
            queue.collect_garbage();
        }
        Ok(())
    }
}

/// Packet ids cycle through 1..=65535 (0 is not one). Only one message is
/// ever in flight, so the next id is never still in use at the broker.
fn next_pkid(last: u16) -> u16 {
    if last == u16::MAX {
        1
    } else {
        last + 1
    }
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> OutboxError {
    let path = path.display().to_string();
    move |source| OutboxError::Io {
        path: path.clone(),
        source,
    }
}

/// Takes the outbox's lock: one writer per directory, or two bridges
/// would interleave records and both believe they own the head.
fn lock_dir(dir: &Path) -> Result<File, OutboxError> {
    match crate::private_dir::lock(dir) {
        Ok(Some(file)) => Ok(file),
        Ok(None) => Err(OutboxError::Busy(dir.display().to_string())),
        Err((path, e)) => Err(io_at(&path)(e)),
    }
}

pub(crate) use crate::private_dir::ensure as ensure_private_dir;

/// Makes created, renamed and deleted entries survive a power cut.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests;

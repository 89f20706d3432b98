//! The site's audit events and log lines, kept on disk until the hub has
//! stored them, so what happened at the site while its link was down
//! reaches the team's audit log and the console once the link returns.
//!
//! ```text
//! Node-RED audit events, crashes ─┐                ┌─ DIR/journal/audit ─┐
//! Node-RED's output, the agent's ─┴─> writer task ─┴─ DIR/journal/log  ──┴─> session: SiteEvents
//!                                    (batches, fsync)                       <─ SiteEventsStored (ack)
//! ```
//!
//! Each stream has its own bounded [`Journal`], so a flood of log lines
//! never pushes out an audit event. Events are made to pass the hub's rules
//! (`redwall_policy::site_events`) before they are kept: a batch the hub
//! refused would otherwise be sent again forever. One batch per stream is
//! on its way at a time; one the hub did not answer goes again after
//! [`RESEND_AFTER`] or on the next connection, and the hub recognises what
//! it stored already by the numbers.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redwall_policy::agent_protocol::AgentMessage;
use redwall_policy::site_events::{
    JournalReport, SiteEvent, SiteStream, MAX_DETAILS_BYTES, MAX_EVENTS_PER_BATCH, MAX_EVENT_NAME,
    MAX_LINE_BYTES, MAX_USER_CHARS,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tracing::warn;

use crate::journal::{Journal, JournalConfig, JournalError, JournalStats};

/// The journals' directory in the agent's state directory.
pub const JOURNAL_DIR: &str = "journal";
/// A batch not answered within this long is sent again.
pub const RESEND_AFTER: Duration = Duration::from_secs(15);
/// Record bytes in one batch: JSON at most doubles them (control characters
/// are replaced before keeping), well within the hub's 1 MiB frames.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Events waiting for the writer; beyond it (a flood faster than the
/// disk) they are counted and dropped rather than growing memory.
const QUEUE: usize = 4096;
/// Site timestamps the hub accepts (2000 to 2200); a clock outside (a
/// board without a real-time clock that booted in 1970) is clamped.
const AT_MS_MIN: i64 = 946_684_800_000;
const AT_MS_MAX: i64 = 7_258_118_400_000;

/// What a journal record holds; the sequence number is the journal's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Kept {
    at_ms: i64,
    source: String,
    text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    details: Option<serde_json::Value>,
}

fn index(stream: SiteStream) -> usize {
    match stream {
        SiteStream::Audit => 0,
        SiteStream::Log => 1,
    }
}

const STREAMS: [SiteStream; 2] = [SiteStream::Audit, SiteStream::Log];

/// Where events are handed in; cheap to clone, never blocks.
#[derive(Clone)]
pub struct SiteEventSender {
    tx: mpsc::Sender<(SiteStream, Kept)>,
    overflow: Arc<AtomicU64>,
}

impl SiteEventSender {
    /// An audit event of the site (`source`: `agent` or `node-red`).
    pub fn audit(
        &self,
        source: &'static str,
        event: &str,
        user: Option<&str>,
        details: Option<serde_json::Value>,
    ) {
        self.send(
            SiteStream::Audit,
            Kept {
                at_ms: now_ms(),
                source: source.into(),
                text: event_name(event),
                user: user.and_then(user_name),
                details: details.map(bounded_details),
            },
        );
    }

    /// A log line (`source`: `agent`, `node-red` or `node-red-stderr`).
    pub fn log(&self, source: &'static str, at_ms: i64, line: &str) {
        self.send(
            SiteStream::Log,
            Kept {
                at_ms,
                source: source.into(),
                text: log_line(line),
                user: None,
                details: None,
            },
        );
    }

    fn send(&self, stream: SiteStream, mut kept: Kept) {
        kept.at_ms = kept.at_ms.clamp(AT_MS_MIN, AT_MS_MAX);
        if self.tx.try_send((stream, kept)).is_err() {
            self.overflow.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One stream's journal, with its figures as of its last operation (read
/// by heartbeats without waiting behind a write that syncs).
struct Stream {
    journal: Arc<Mutex<Journal>>,
    stats: Mutex<JournalStats>,
    epoch: String,
    /// When the batch on its way was sent, if one is.
    in_flight: Mutex<Option<Instant>>,
}

/// The journals and their delivery; one per agent run.
pub struct SiteEvents {
    streams: [Stream; 2],
    /// Rung when events were kept or a batch was acknowledged.
    changed: Notify,
    overflow: Arc<AtomicU64>,
}

impl SiteEvents {
    /// Opens (or makes) `DIR/journal/audit` and `DIR/journal/log`, and
    /// starts the task that keeps what the sender is given, until
    /// [`Keeper::stop`]. The journals close when the last handle is gone.
    pub fn open(dir: &Path) -> Result<(Arc<SiteEvents>, SiteEventSender, Keeper), JournalError> {
        let root = dir.join(JOURNAL_DIR);
        crate::private_dir::ensure(&root).map_err(|source| JournalError::Io {
            path: root.display().to_string(),
            source,
        })?;
        let open = |name: &str| -> Result<Stream, JournalError> {
            let journal = Journal::open(&root.join(name), &JournalConfig::default())?;
            Ok(Stream {
                stats: Mutex::new(journal.stats()),
                epoch: journal.epoch().to_string(),
                journal: Arc::new(Mutex::new(journal)),
                in_flight: Mutex::new(None),
            })
        };
        let events = Arc::new(SiteEvents {
            streams: [open("audit")?, open("log")?],
            changed: Notify::new(),
            overflow: Arc::new(AtomicU64::new(0)),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(keep(events.clone(), rx, stopped));
        let sender = SiteEventSender {
            tx,
            overflow: events.overflow.clone(),
        };
        Ok((events, sender, Keeper { stop, task }))
    }

    fn stream(&self, stream: SiteStream) -> &Stream {
        &self.streams[index(stream)]
    }

    /// What the journals hold, for the heartbeat. Events dropped before
    /// reaching the disk (a flood) count as log lines dropped.
    pub fn report(&self) -> JournalReport {
        let stats = |s: SiteStream| lock(&self.stream(s).stats).clone();
        let (audit, log) = (stats(SiteStream::Audit), stats(SiteStream::Log));
        JournalReport {
            audit_pending: audit.pending,
            log_pending: log.pending,
            audit_dropped: audit.dropped,
            log_dropped: log.dropped + self.overflow.load(Ordering::Relaxed),
        }
    }

    /// A new connection: whatever was on its way goes again.
    pub(crate) fn new_connection(&self) {
        for s in &self.streams {
            *lock(&s.in_flight) = None;
        }
    }

    /// Waits until a stream has events to send and none on their way (or
    /// one unanswered for too long), then gives the batch to send.
    /// Cancel-safe: a batch read and not returned is read again.
    pub(crate) async fn next_batch(&self) -> AgentMessage {
        loop {
            for stream in STREAMS {
                let s = self.stream(stream);
                let busy = lock(&s.in_flight).is_some_and(|at| at.elapsed() < RESEND_AFTER);
                if busy || lock(&s.stats).pending == 0 {
                    continue;
                }
                let journal = s.journal.clone();
                let read = tokio::task::spawn_blocking(move || {
                    lock(&journal).pending(MAX_EVENTS_PER_BATCH, MAX_BATCH_BYTES)
                })
                .await;
                match read {
                    Ok(Ok(records)) if !records.is_empty() => {
                        let last = records.last().map_or(0, |r| r.0);
                        let events: Vec<_> = records.into_iter().filter_map(site_event).collect();
                        if events.is_empty() {
                            // Nothing readable (never written by this
                            // module): skipped, the hub counts a gap.
                            self.stored(stream, &s.epoch, last).await;
                            continue;
                        }
                        *lock(&s.in_flight) = Some(Instant::now());
                        return AgentMessage::SiteEvents {
                            stream,
                            epoch: s.epoch.clone(),
                            events,
                        };
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!("reading the {} journal: {e}", stream.name()),
                    Err(_) => {}
                }
            }
            tokio::select! {
                () = self.changed.notified() => {}
                () = tokio::time::sleep(RESEND_AFTER / 3) => {}
            }
        }
    }

    /// The hub stored the stream's events through `through`: forgotten here.
    pub(crate) async fn stored(&self, stream: SiteStream, epoch: &str, through: u64) {
        let s = self.stream(stream);
        if epoch != s.epoch {
            return;
        }
        let journal = s.journal.clone();
        let acked = tokio::task::spawn_blocking(move || {
            let mut journal = lock(&journal);
            journal.ack(through).map(|()| journal.stats())
        })
        .await;
        match acked {
            Ok(Ok(stats)) => *lock(&s.stats) = stats,
            Ok(Err(e)) => warn!("acknowledging the {} journal: {e}", stream.name()),
            Err(_) => {}
        }
        *lock(&s.in_flight) = None;
        self.changed.notify_one();
    }
}

/// The task keeping events on disk.
pub struct Keeper {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Keeper {
    /// Keeps what was handed in so far, then ends (senders left over keep
    /// nothing more).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Keeps what the senders hand in, in batches (one sync per batch and
/// journal), until stopped or every sender is gone.
async fn keep(
    events: Arc<SiteEvents>,
    mut rx: mpsc::Receiver<(SiteStream, Kept)>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut batch = Vec::new();
    loop {
        let last = tokio::select! {
            n = rx.recv_many(&mut batch, 512) => {
                if n == 0 {
                    return;
                }
                false
            }
            _ = &mut stopped => {
                rx.close();
                while let Ok(item) = rx.try_recv() {
                    batch.push(item);
                }
                true
            }
        };
        keep_batch(&events, &mut batch).await;
        if last {
            return;
        }
    }
}

async fn keep_batch(events: &SiteEvents, batch: &mut Vec<(SiteStream, Kept)>) {
    let mut records: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for (stream, kept) in batch.drain(..) {
        if let Ok(bytes) = serde_json::to_vec(&kept) {
            records[index(stream)].push(bytes);
        }
    }
    for stream in STREAMS {
        let records = std::mem::take(&mut records[index(stream)]);
        if records.is_empty() {
            continue;
        }
        let s = events.stream(stream);
        let journal = s.journal.clone();
        let kept = tokio::task::spawn_blocking(move || {
            let mut journal = lock(&journal);
            journal.append(&records, true).map(|_| journal.stats())
        })
        .await;
        match kept {
            Ok(Ok(stats)) => *lock(&s.stats) = stats,
            Ok(Err(e)) => warn!("keeping site events in the {} journal: {e}", stream.name()),
            Err(_) => {}
        }
    }
    events.changed.notify_one();
}

/// Keeps Node-RED's output lines for the hub for as long as the agent
/// runs, following it across restarts and hosting changes (becoming the
/// hub's instance starts it under another id, with a log of its own).
/// Whatever an instance printed before it was followed (its first lines,
/// printed while this task still listened to the one before) is taken
/// from the supervisor's buffer, so no line is lost to the switch.
///
/// Ends once `stop` fires (Node-RED stopped), after keeping the lines
/// already printed.
pub(crate) async fn keep_node_red_output(
    node_red: Arc<crate::node_red::NodeRed>,
    site: SiteEventSender,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    use std::collections::HashMap;
    use tokio::sync::broadcast::error::RecvError;
    // Every start wakes this task: it may be another instance's (becoming
    // the hub's instance, or ending that), or the first, before which
    // there is no output to follow. Marked seen before the id is read, so
    // a start after the read is noticed.
    let mut starts = node_red.starts();
    // The time of the last line kept of each instance followed before, so
    // going back to one (hosting ended) replays only what is new of it.
    let mut kept_until: HashMap<String, i64> = HashMap::new();
    loop {
        starts.borrow_and_update();
        let id = node_red.instance_id();
        let Some(mut lines) = node_red.subscribe_logs(&id) else {
            tokio::select! {
                changed = starts.changed() => {
                    if changed.is_err() {
                        return; // Node-RED is gone with its sender
                    }
                    continue;
                }
                _ = &mut stop => return,
            }
        };
        // Subscribed first, then read the buffer: a line printed between
        // the two is in both, and the copy from the subscription is
        // skipped (counted, as identical lines may repeat).
        let mut overlap: HashMap<(i64, String), usize> = HashMap::new();
        let until = kept_until.entry(id.clone()).or_insert(i64::MIN);
        let before = *until;
        for line in node_red.logs(&id) {
            *overlap
                .entry((line.at_unix_ms, line.text.clone()))
                .or_default() += 1;
            if line.at_unix_ms > before {
                *until = (*until).max(line.at_unix_ms);
                keep_output_line(&site, &line);
            }
        }
        loop {
            let next = tokio::select! {
                next = lines.recv() => next,
                // Started again: the same instance goes on with the same
                // output; another one has its own.
                changed = starts.changed() => {
                    if changed.is_err() {
                        return; // Node-RED is gone with its sender
                    }
                    if node_red.instance_id() == id {
                        continue;
                    }
                    // Its last lines first: the old output may still hold
                    // some not yet read.
                    while let Ok(line) = lines.try_recv() {
                        follow(&site, &mut overlap, until, &line);
                    }
                    break;
                }
                _ = &mut stop => {
                    while let Ok(line) = lines.try_recv() {
                        follow(&site, &mut overlap, until, &line);
                    }
                    return;
                }
            };
            match next {
                Ok(line) => follow(&site, &mut overlap, until, &line),
                // Lines lost to a burst are counted like a full queue.
                Err(RecvError::Lagged(n)) => {
                    site.overflow.fetch_add(n, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => break,
            }
        }
    }
}

/// A line read from the subscription: kept, unless it is the copy of one
/// the buffer already gave (`overlap`); `until` is the newest line kept.
fn follow(
    site: &SiteEventSender,
    overlap: &mut std::collections::HashMap<(i64, String), usize>,
    until: &mut i64,
    line: &redwall_runtime::LogLine,
) {
    let key = (line.at_unix_ms, line.text.clone());
    if let Some(n) = overlap.get_mut(&key).filter(|n| **n > 0) {
        *n -= 1;
        return;
    }
    overlap.clear();
    *until = line.at_unix_ms;
    keep_output_line(site, line);
}

fn keep_output_line(site: &SiteEventSender, line: &redwall_runtime::LogLine) {
    let source = match line.stream {
        redwall_runtime::LogStream::Stdout => "node-red",
        redwall_runtime::LogStream::Stderr => "node-red-stderr",
    };
    site.log(source, line.at_unix_ms, &line.text);
}

/// Where [`AgentLogLayer`] keeps the agent's own lines: set by the
/// `redwall-agent` binary's run only (an agent run inside another program,
/// a test or a swarm of simulated agents, keeps none, as their lines would
/// mix), and again by each run after a failed switch of builds.
static AGENT_LOG: std::sync::RwLock<Option<SiteEventSender>> = std::sync::RwLock::new(None);

/// From now on, [`AgentLogLayer`] keeps the agent's own lines here.
pub fn keep_agent_log(sender: SiteEventSender) {
    *AGENT_LOG.write().unwrap_or_else(PoisonError::into_inner) = Some(sender);
}

/// A `tracing` layer keeping the agent's own log lines (info and above,
/// from this crate) for the hub, beside what it writes to stderr: what the
/// agent did while its link was down (deploys, rollbacks, redials) reaches
/// the console once the link returns. Never blocks: a full queue counts
/// the line as dropped.
pub struct AgentLogLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AgentLogLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let log = AGENT_LOG.read().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = log.as_ref() else {
            return;
        };
        let meta = event.metadata();
        if *meta.level() > tracing::Level::INFO || !meta.target().starts_with("redwall_agent") {
            return;
        }
        let mut line = LineVisitor(String::new());
        event.record(&mut line);
        sender.log(
            "agent",
            now_ms(),
            &format!("{} {}", meta.level(), line.0.trim_start()),
        );
    }
}

/// The event's message, then its other fields as `name=value`.
struct LineVisitor(String);

impl tracing::field::Visit for LineVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

fn site_event((seq, bytes): (u64, Vec<u8>)) -> Option<SiteEvent> {
    // Only this module writes the journal; a record that does not read
    // is skipped (and so never stored, which the hub counts as lost).
    let kept: Kept = serde_json::from_slice(&bytes).ok()?;
    Some(SiteEvent {
        seq,
        at_ms: kept.at_ms,
        source: kept.source,
        text: kept.text,
        user: kept.user,
        details: kept.details,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One line of at most [`MAX_LINE_BYTES`], control characters (tab aside)
/// replaced, so JSON never more than doubles it.
fn log_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len().min(MAX_LINE_BYTES));
    for c in line.chars() {
        let c = if c.is_control() && c != '\t' {
            '\u{fffd}'
        } else {
            c
        };
        if out.len() + c.len_utf8() > MAX_LINE_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// An event name the hub accepts: other characters become '_'.
fn event_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .take(MAX_EVENT_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

fn user_name(user: &str) -> Option<String> {
    let cleaned: String = user
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_CHARS)
        .collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// Details as the hub accepts them: an object of bounded size, or a note
/// of what was left out.
fn bounded_details(details: serde_json::Value) -> serde_json::Value {
    let size = details.to_string().len();
    if details.is_object() && size <= MAX_DETAILS_BYTES {
        details
    } else {
        serde_json::json!({ "left_out": true, "bytes": size })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use redwall_policy::site_events::{check_batch, SiteBatch};
    use serde_json::json;

    fn message_passes(message: &AgentMessage) {
        let AgentMessage::SiteEvents {
            stream,
            epoch,
            events,
        } = message
        else {
            panic!("not a batch: {message:?}");
        };
        check_batch(&SiteBatch {
            stream: *stream,
            epoch,
            events,
        })
        .unwrap();
        assert!(serde_json::to_string(message).unwrap().len() < 1024 * 1024);
    }

    #[tokio::test]
    async fn whatever_is_handed_in_passes_the_hubs_rules() {
        let dir = tempfile::tempdir().unwrap();
        let (events, sender, _keeper) = SiteEvents::open(dir.path()).unwrap();
        sender.audit("node-red", "", Some("\u{7}"), Some(json!([1, 2])));
        sender.audit(
            "node-red",
            &format!("flows set/{}", "x".repeat(200)),
            Some(&"u".repeat(500)),
            Some(json!({"big": "y".repeat(MAX_DETAILS_BYTES)})),
        );
        for i in 0..300 {
            let line = format!("{i}\u{1b}[31m\n\r\0 {}", "z\"\\".repeat(3000));
            // A clock from 1970, and one from far ahead.
            sender.log("node-red", if i % 2 == 0 { 0 } else { i64::MAX }, &line);
        }
        let mut seen = [0usize; 2];
        while seen != [2, 300] {
            let batch = tokio::time::timeout(Duration::from_secs(10), events.next_batch())
                .await
                .unwrap();
            message_passes(&batch);
            let AgentMessage::SiteEvents {
                stream,
                epoch,
                events: list,
            } = batch
            else {
                unreachable!()
            };
            seen[index(stream)] += list.len();
            events
                .stored(stream, &epoch, list.last().unwrap().seq)
                .await;
        }
        let report = events.report();
        assert_eq!((report.audit_pending, report.log_pending), (0, 0));
    }

    #[tokio::test]
    async fn unanswered_batches_go_again_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let epoch;
        {
            let (events, sender, keeper) = SiteEvents::open(dir.path()).unwrap();
            sender.audit(
                "agent",
                "node_red.crashed",
                None,
                Some(json!({"reason": "x"})),
            );
            let first = events.next_batch().await;
            let AgentMessage::SiteEvents {
                epoch: e,
                events: list,
                ..
            } = &first
            else {
                unreachable!()
            };
            epoch = e.clone();
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].seq, 1);
            // Unanswered: nothing more goes on this connection for now...
            assert!(
                tokio::time::timeout(Duration::from_millis(300), events.next_batch())
                    .await
                    .is_err()
            );
            // ...and the same batch goes again on a new one.
            events.new_connection();
            assert_eq!(events.next_batch().await, first);
            assert_eq!(events.report().audit_pending, 1);
            drop(events);
            keeper.stop().await;
        }
        // The agent restarts before the hub answered: kept on disk.
        let (events, _sender, _keeper) = SiteEvents::open(dir.path()).unwrap();
        let again = events.next_batch().await;
        let AgentMessage::SiteEvents {
            epoch: e,
            events: list,
            ..
        } = &again
        else {
            unreachable!()
        };
        assert_eq!((e.as_str(), list[0].seq), (epoch.as_str(), 1));
        assert_eq!(list[0].text, "node_red.crashed");
        // An answer for another journal changes nothing; the right one
        // forgets it.
        events
            .stored(SiteStream::Audit, "ffffffffffffffff", 1)
            .await;
        assert_eq!(events.report().audit_pending, 1);
        events.stored(SiteStream::Audit, &epoch, 1).await;
        assert_eq!(events.report().audit_pending, 0);
    }

    #[tokio::test]
    async fn the_agents_own_lines_are_kept_once_the_binary_asks() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (events, sender, _keeper) = SiteEvents::open(dir.path()).unwrap();
        let emit = || {
            let subscriber = tracing_subscriber::registry().with(AgentLogLayer);
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(target: "redwall_agent::run", "dialling again in 500 ms");
                tracing::warn!(target: "redwall_agent::apply", snapshot = "abc", "rolled back");
                tracing::debug!(target: "redwall_agent::run", "too chatty");
                tracing::info!(target: "rumqttc::state", "not ours");
            })
        };
        // Nothing is kept before the run asks.
        emit();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), events.next_batch())
                .await
                .is_err()
        );
        keep_agent_log(sender);
        emit();
        let AgentMessage::SiteEvents {
            stream,
            events: list,
            ..
        } = events.next_batch().await
        else {
            unreachable!()
        };
        assert_eq!(stream, SiteStream::Log);
        let lines: Vec<_> = list
            .iter()
            .map(|e| (e.source.as_str(), e.text.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                ("agent", "INFO dialling again in 500 ms"),
                ("agent", "WARN rolled back snapshot=abc"),
            ]
        );
        *AGENT_LOG.write().unwrap() = None;
    }

    #[test]
    fn cleaning_keeps_what_is_fine() {
        assert_eq!(log_line("plain\tline"), "plain\tline");
        assert_eq!(log_line("a\nb"), "a\u{fffd}b");
        let long = "\u{e9}".repeat(MAX_LINE_BYTES);
        let cut = log_line(&long);
        assert!(cut.len() <= MAX_LINE_BYTES && cut.len() > MAX_LINE_BYTES - 2);
        assert_eq!(event_name("flows.set"), "flows.set");
        assert_eq!(event_name("a b/c"), "a_b_c");
        assert_eq!(event_name(""), "unknown");
        assert_eq!(user_name("olivia"), Some("olivia".into()));
        assert_eq!(user_name("\u{7}"), None);
        assert_eq!(bounded_details(json!({"a": 1})), json!({"a": 1}));
        assert_eq!(bounded_details(json!(3))["left_out"], json!(true));
    }
}

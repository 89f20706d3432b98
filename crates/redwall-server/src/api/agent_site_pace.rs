//! The pace of the site events an agent sends: the connection's budget
//! (`redwall_policy::site_events::SiteEventBudget`) and the batches held
//! back until it allows them. Only the gateway's connection loop
//! (`agent_gateway.rs`) uses it; it stores nothing and sends nothing.

use std::collections::VecDeque;
use std::time::Duration;

use redwall_policy::site_events::{OverBudget, SiteEvent, SiteEventBudget, SiteStream};
use tokio::time::Instant;

/// A batch of site events as the agent sent it.
pub(super) struct Batch {
    pub(super) stream: SiteStream,
    pub(super) epoch: String,
    pub(super) events: Vec<SiteEvent>,
}

/// What to do with a batch that just came.
pub(super) enum Offer {
    /// The budget allows it: store it.
    Now(Batch),
    /// Held until the budget allows it; then stored and answered.
    Held,
    /// The stream has other events held already: more than an honest
    /// agent ever sends.
    Twice,
}

/// How often at most a connection's holds are logged.
const HOLDS_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// The connection's budget of site events, and the batches it holds back.
///
/// A batch over the budget is held, not refused: it is stored and
/// answered once the budget allows, and meanwhile the connection is read
/// as ever, so the agent is slowed (its journal waits for the answer) and
/// never shut out. An honest agent has at most one batch per stream on
/// its way (it waits for the answer, and sends one again only after
/// 15 seconds without one), so at most two are held here, one per stream,
/// and the longest hold is two full batches' worth of the budget (0.8
/// seconds). A batch sent again while held (the agent's 15 seconds passed
/// on a link that slow) takes the held one's place: the same events from
/// the same point, answered once. Other events of a stream that has some
/// held come from an agent that does not wait for answers, which no honest
/// one does: it is cut off (`close::PROTOCOL`, "too many site events")
/// rather than queued, which would let it park unbounded memory at the
/// hub, and rather than dropped, which would hide a broken or hostile
/// agent; its journal keeps the events for the next connection.
///
/// The budget lives and dies with the connection, and the hub does not
/// itself slow an agent's reconnects (an honest agent's are jittered; a
/// stolen key's need not be): so the budget starts empty
/// ([`SiteEventBudget::for_connection`]), and dialing again earns nothing
/// a connection kept open would not have. A batch held when the connection
/// ends is dropped unanswered; the agent sends it again on its next
/// connection.
pub(super) struct Held {
    budget: SiteEventBudget,
    /// The budget's clock: milliseconds since the connection began.
    began: Instant,
    /// In the order they came; at most one per stream.
    batches: VecDeque<Batch>,
    /// When the first of `batches` may go.
    pub(super) retry_at: Option<Instant>,
    /// Batches held and their events since the last warning, and when
    /// that was: one line per stretch of holds (at most one a minute),
    /// never one per frame or batch.
    held_batches: u64,
    held_events: u64,
    warned_at: Option<Instant>,
}

impl Held {
    pub(super) fn new() -> Held {
        Held {
            budget: SiteEventBudget::for_connection(0),
            began: Instant::now(),
            batches: VecDeque::new(),
            retry_at: None,
            held_batches: 0,
            held_events: 0,
            warned_at: None,
        }
    }

    /// Whether the first held batch may be tried now.
    pub(super) fn is_due(&self) -> bool {
        self.retry_at.is_some_and(|at| at <= Instant::now())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes a batch that just came: to store now, held, or one too many.
    pub(super) fn offer(&mut self, batch: Batch) -> Offer {
        if let Some(held) = self.batches.iter_mut().find(|b| b.stream == batch.stream) {
            let first = |b: &Batch| b.events.first().map(|e| e.seq);
            return match (first(&batch), first(held)) {
                (Some(again), Some(before)) if held.epoch == batch.epoch && again <= before => {
                    *held = batch;
                    Offer::Held
                }
                _ => Offer::Twice,
            };
        }
        // It may go at once only when nothing is held; else it waits its
        // turn behind the held one, so a small batch never starves a full
        // one of the budget.
        if self.batches.is_empty() {
            match self.budget.take(self.now_ms(), batch.events.len()) {
                Ok(()) => return Offer::Now(batch),
                // More than the budget ever holds is more than a batch
                // may hold: the hub refuses it whole, and the connection
                // ends.
                Err(OverBudget::Never) => return Offer::Now(batch),
                Err(OverBudget::Wait(wait)) => self.retry_at = Some(Instant::now() + wait),
            }
        }
        self.held_batches += 1;
        self.held_events += batch.events.len() as u64;
        self.batches.push_back(batch);
        Offer::Held
    }

    /// The first held batch, if the budget now allows it; else when to
    /// try again is set.
    pub(super) fn release(&mut self) -> Option<Batch> {
        let events = self.batches.front()?.events.len();
        match self.budget.take(self.now_ms(), events) {
            Ok(()) | Err(OverBudget::Never) => {
                let batch = self.batches.pop_front();
                // The next in turn is tried at once (the loop runs
                // between).
                self.retry_at = (!self.batches.is_empty()).then(Instant::now);
                batch
            }
            Err(OverBudget::Wait(wait)) => {
                self.retry_at = Some(Instant::now() + wait);
                None
            }
        }
    }

    /// Logs the holds since the last line once they are more than a burst
    /// of events (a new connection's first batches are held briefly by
    /// design: that is no news) and the last line is a minute old. Counts
    /// only: never what the events say.
    pub(super) fn warn_if_due(&mut self, agent_id: &str) {
        if self.held_events < redwall_policy::site_events::SITE_EVENTS_BURST
            || self
                .warned_at
                .is_some_and(|at| at.elapsed() < HOLDS_LOGGED_EVERY)
        {
            return;
        }
        tracing::warn!(
            agent = agent_id,
            batches = self.held_batches,
            events = self.held_events,
            per_second = redwall_policy::site_events::SITE_EVENTS_PER_SECOND,
            "an agent sends site events faster than its budget: held, the agent is slowed"
        );
        self.warned_at = Some(Instant::now());
        self.held_batches = 0;
        self.held_events = 0;
    }
}

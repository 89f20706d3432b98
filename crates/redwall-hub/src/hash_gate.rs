//! At most one password hash per core at a time, known clients first.
//!
//! Argon2 is slow on purpose, so a flood of wrong passwords could otherwise
//! keep every core busy and make the owner's own login wait behind it. The
//! gate hands a free slot to a waiting known client (a valid device cookie
//! for that account, or a signed-in user) before any unknown one, and keeps
//! at most a bounded queue of unknown ones: beyond it an attempt is refused
//! at once (`Busy`) rather than queued for seconds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A client known for this account, or an authenticated user.
    Known,
    /// Anyone else.
    Unknown,
}

/// Too many unknown clients are already waiting.
#[derive(Debug)]
pub struct Busy;

pub struct HashGate {
    shared: Arc<Mutex<Slots>>,
}

struct Slots {
    free: usize,
    max_unknown_waiting: usize,
    known: VecDeque<oneshot::Sender<Permit>>,
    unknown: VecDeque<oneshot::Sender<Permit>>,
}

/// The right to run one hash; the slot goes to the next waiter when dropped.
pub struct Permit {
    shared: Option<Arc<Mutex<Slots>>>,
}

impl HashGate {
    /// `slots` hashes at once; at most `max_unknown_waiting` unknown clients queued.
    pub fn new(slots: usize, max_unknown_waiting: usize) -> HashGate {
        HashGate {
            shared: Arc::new(Mutex::new(Slots {
                free: slots.max(1),
                max_unknown_waiting,
                known: VecDeque::new(),
                unknown: VecDeque::new(),
            })),
        }
    }

    pub async fn acquire(&self, priority: Priority) -> Result<Permit, Busy> {
        let waiting = {
            let mut slots = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            if slots.free > 0 {
                slots.free -= 1;
                return Ok(Permit {
                    shared: Some(self.shared.clone()),
                });
            }
            let (tx, rx) = oneshot::channel();
            match priority {
                Priority::Known => slots.known.push_back(tx),
                Priority::Unknown => {
                    // Waiters that gave up (their client left) hold no place.
                    slots.unknown.retain(|w| !w.is_closed());
                    if slots.unknown.len() >= slots.max_unknown_waiting {
                        return Err(Busy);
                    }
                    slots.unknown.push_back(tx);
                }
            }
            rx
        };
        // A dropped sender cannot happen (senders only leave the queue by
        // being sent on); answer busy rather than panic if it ever did.
        waiting.await.map_err(|_| Busy)
    }

    #[cfg(test)]
    fn free(&self) -> usize {
        self.shared.lock().map(|s| s.free).unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let mut slots = shared.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let next = match slots.known.pop_front() {
                Some(w) => Some(w),
                None => slots.unknown.pop_front(),
            };
            let Some(waiter) = next else {
                slots.free += 1;
                return;
            };
            let handed = Permit {
                shared: Some(shared.clone()),
            };
            match waiter.send(handed) {
                Ok(()) => return,
                // That waiter gave up: disarm the permit (no re-entrant
                // release under this lock) and try the next one.
                Err(mut back) => back.shared = None,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn known_clients_overtake_unknown_ones() {
        let gate = Arc::new(HashGate::new(1, 10));
        let held = gate.acquire(Priority::Unknown).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, p) in [
            ("u1", Priority::Unknown),
            ("u2", Priority::Unknown),
            ("k1", Priority::Known),
        ] {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = gate.acquire(p).await.unwrap();
                order.lock().unwrap().push(name);
            }));
            // Each is queued before the next arrives.
            tokio::task::yield_now().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["k1", "u1", "u2"]);
        assert_eq!(gate.free(), 1);
    }

    #[tokio::test]
    async fn unknown_clients_beyond_the_queue_are_turned_away_known_ones_never() {
        let gate = Arc::new(HashGate::new(1, 2));
        let held = gate.acquire(Priority::Known).await.unwrap();
        let mut queued = Vec::new();
        for _ in 0..2 {
            let g = gate.clone();
            queued.push(tokio::spawn(async move {
                g.acquire(Priority::Unknown).await.map(drop)
            }));
            tokio::task::yield_now().await;
        }
        assert!(gate.acquire(Priority::Unknown).await.is_err());
        let g = gate.clone();
        let known = tokio::spawn(async move { g.acquire(Priority::Known).await.map(drop) });
        tokio::task::yield_now().await;
        drop(held);
        assert!(known.await.unwrap().is_ok());
        for q in queued {
            assert!(q.await.unwrap().is_ok());
        }
        assert_eq!(gate.free(), 1);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_lose_the_slot() {
        let gate = Arc::new(HashGate::new(1, 10));
        let held = gate.acquire(Priority::Unknown).await.unwrap();
        let g = gate.clone();
        let abandoned = tokio::spawn(async move { g.acquire(Priority::Unknown).await.map(drop) });
        tokio::task::yield_now().await;
        abandoned.abort();
        let _ = abandoned.await;
        drop(held);
        assert_eq!(gate.free(), 1);
        let _again = gate.acquire(Priority::Unknown).await.unwrap();
    }
}

//! systemd's watchdog: the unit (`Type=notify`, `WatchdogSec=`) kills and
//! restarts an agent that stops saying it is alive.
//!
//! A new build that hangs without crashing (a deadlock, a busy loop, a
//! file that is some other program) never reaches the point where it
//! would roll itself back, and the old build never gets control again: the
//! site would be lost until someone logs in. With the watchdog, systemd
//! kills it after `WatchdogSec`, starts the installed binary, and its
//! launcher tries the new build again while its time lasts and then goes
//! back to the build that ran (`launcher.rs`).
//!
//! "Alive" means the main loop moves: it marks [`Progress`] on every turn
//! (at least every [`TICK`] while connected, and between dials), and the
//! pinger sends `WATCHDOG=1` only while the last mark is younger than the
//! watchdog interval. The pinger runs on the same runtime, so a runtime
//! that stopped running tasks stops it too. Without `NOTIFY_SOCKET` (not
//! under systemd) none of this does anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::{info, warn};

/// How often the main loop marks progress while nothing else happens.
pub const TICK: Duration = Duration::from_secs(5);

/// When the main loop last moved, shared with the pinger.
#[derive(Clone)]
pub struct Progress {
    start: Instant,
    /// Milliseconds after `start` of the last mark.
    last_ms: Arc<AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Progress {
    /// The main loop moved.
    pub fn mark(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last mark.
    pub fn age(&self) -> Duration {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Tells systemd the agent is up, and starts the pinger if systemd set a
/// watchdog for this process. Returns the progress the main loop marks.
pub fn start() -> Progress {
    let progress = Progress::default();
    progress.mark();
    // Keep the variables: a build this process execs into is the same
    // process to systemd and must speak to it too. Node-RED never sees
    // them (the runtime clears its environment).
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        warn!("could not tell systemd the agent is ready: {e}");
    }
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return progress;
    }
    let interval = Duration::from_micros(usec);
    info!(
        "systemd's watchdog is on: the agent says it is alive every {} ms while its main loop moves",
        (interval / 3).as_millis()
    );
    let watched = progress.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(interval / 3);
        loop {
            every.tick().await;
            if watched.age() < interval {
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
            } else {
                warn!(
                    "the main loop has not moved for {} s; not telling systemd the agent is alive",
                    watched.age().as_secs()
                );
            }
        }
    });
    progress
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_ages_until_marked() {
        let p = Progress::default();
        p.mark();
        assert!(p.age() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(30));
        assert!(p.age() >= Duration::from_millis(30));
        p.clone().mark();
        assert!(p.age() < Duration::from_millis(30));
    }
}

//! The one timing loop of the policy benches: the median over 7 runs of
//! `CALLS` calls, in nanoseconds per call.

use std::hint::black_box;
use std::time::Instant;

pub const CALLS: usize = 1_000_000;

/// Runs `call(i)` `CALLS` times, 7 times over; `call` says whether it was
/// allowed, and the count of allowed calls per run is returned with the
/// median, so a bench can check that it measured what it meant to.
pub fn median_ns_per_call(mut call: impl FnMut(usize) -> bool) -> (f64, usize) {
    let mut allowed_per_run = 0;
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            let mut allowed = 0usize;
            for i in 0..CALLS {
                if call(black_box(i)) {
                    allowed += 1;
                }
            }
            allowed_per_run = black_box(allowed);
            start.elapsed().as_nanos() as f64 / CALLS as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    (runs[runs.len() / 2], allowed_per_run)
}

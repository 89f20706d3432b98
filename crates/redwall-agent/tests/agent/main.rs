//! The agent against real TLS servers and a fake hub on 127.0.0.1. One
//! test binary (each links the whole tree).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod certs;
mod enrolment;
mod fake_hub;
mod node_red;
mod sessions;
mod snapshots;
mod tls_trust;
mod updates;

use std::future::Future;
use std::time::Duration;

/// Generous: the test machine is small and often busy. Correctness never
/// depends on it; it only turns a hang into a failure.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// `fut`, or a failure naming `what` if it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

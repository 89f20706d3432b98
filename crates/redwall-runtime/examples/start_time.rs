//! How long an instance takes from `Supervisor::start` to `Running` (the
//! editor answers), on the host network and isolated (own network, mount and
//! PID namespaces plus nftables), alternating so both see the same machine
//! load. Needs root. `cargo run --release -p redwall-runtime --example
//! start_time -- 7` runs 7 starts of each; prints every run and the medians.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redwall_runtime::testing::{self, RecordingReporter};
use redwall_runtime::{NetworkMode, SandboxIdentity, Supervisor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let install = testing::shared_install().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let sup = Supervisor::new(
        data.path().join("run"),
        Arc::new(RecordingReporter::default()),
    )
    .unwrap();
    let mut host = Vec::new();
    let mut isolated = Vec::new();
    for run in 0..runs {
        for isolate in [false, true] {
            let id = format!("bench-{run}-{}", if isolate { "iso" } else { "host" });
            let mut spec = testing::spec(
                &id,
                &data.path().join("instances"),
                testing::free_port(),
                SandboxIdentity::OsUser {
                    uid: 61050,
                    gid: 61050,
                },
            );
            spec.read_only_paths = install.sandbox_read_paths();
            if isolate {
                spec.network = NetworkMode::Isolated { egress: vec![] };
            }
            let t = Instant::now();
            sup.start(spec, &install).await.unwrap();
            sup.wait_until_running(&id, Duration::from_secs(60))
                .await
                .unwrap();
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let t = Instant::now();
            sup.stop(&id).await.unwrap();
            let stop_ms = t.elapsed().as_secs_f64() * 1000.0;
            println!(
                "run {run} {:8}: start {ms:7.1} ms, stop {stop_ms:6.1} ms",
                if isolate { "isolated" } else { "host" }
            );
            if isolate {
                isolated.push(ms);
            } else {
                host.push(ms);
            }
        }
    }
    let (h, i) = (median(host), median(isolated));
    println!(
        "median start: host {h:.1} ms, isolated {i:.1} ms (+{:.1} ms, x{:.2})",
        i - h,
        i / h
    );
}

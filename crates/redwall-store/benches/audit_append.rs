//! Audit append throughput on SQLite, with the HMAC chain.
//!
//! A plain bench binary (`harness = false`) that prints its figures:
//!
//! * concurrent: `TASKS` Tokio tasks share one [`AuditWriter`] (group commit)
//!   and append `EVENTS` events in all;
//! * sequential: one task appends events one after another through the
//!   writer, each waiting for its commit (the worst case: one transaction per
//!   event).
//!
//! Each run uses a fresh SQLite file (WAL, as the server does). Run with
//!
//! ```text
//! cargo bench -p redwall-store --bench audit_append
//! ```
//!
//! Environment: `RUNS` (default 5), `EVENTS` (default 20000), `TASKS`
//! (default 64), `SEQ_EVENTS` (default 2000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use redwall_crypto::chain::ChainKey;
use redwall_crypto::keyring::Keyring;
use redwall_store::testing::TestDatabase;
use redwall_store::{AuditWriter, NewAuditEntry, Store};
use serde_json::json;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A typical per-request event: actor, address, user agent, small details.
fn event(i: usize) -> NewAuditEntry {
    NewAuditEntry {
        at: 1_700_000_000_000_000 + i as i64,
        actor_id: Some("0f3c2b9a8d7e6f5a4b3c2d1e0f9a8b7c".into()),
        actor_name: Some("alice".into()),
        client_ip: Some("127.0.0.1".into()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) redwall-bench".into()),
        event: "auth.login".into(),
        target: Some(format!("user:{}", i % 97)),
        outcome: "success".into(),
        details: json!({"method": "password", "mfa": false, "n": i}),
        team_id: None,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

async fn fresh() -> (TestDatabase, Store, ChainKey) {
    let db = TestDatabase::sqlite().await.expect("temp sqlite");
    let store = db.connect().await.expect("connect");
    let key = ChainKey::from_keyring(&Keyring::generate());
    (db, store, key)
}

/// `events` appends from `tasks` concurrent tasks; returns the elapsed time.
async fn concurrent(tasks: usize, events: usize) -> Duration {
    let (db, store, key) = fresh().await;
    let writer = AuditWriter::spawn(store.clone(), key.clone());
    let per_task = events / tasks;
    let extra = events % tasks;
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let writer = writer.clone();
        let n = per_task + usize::from(t < extra);
        handles.push(tokio::spawn(async move {
            for i in 0..n {
                writer
                    .append(event(t * 1_000_000 + i))
                    .await
                    .expect("append");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let took = started.elapsed();
    drop(writer);
    let report = store.verify_audit_chain(&key).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, events as u64);
    store.close().await;
    db.cleanup().await;
    took
}

/// `events` appends, one at a time, each awaited before the next.
async fn sequential(events: usize) -> Duration {
    let (db, store, key) = fresh().await;
    let writer = AuditWriter::spawn(store.clone(), key.clone());
    let started = Instant::now();
    for i in 0..events {
        writer.append(event(i)).await.expect("append");
    }
    let took = started.elapsed();
    drop(writer);
    let report = store.verify_audit_chain(&key).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    store.close().await;
    db.cleanup().await;
    took
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // special but we still run quickly enough. Ignore any other arguments.
    let runs = env_or("RUNS", 5).max(1);
    let events = env_or("EVENTS", 20_000).max(1);
    let tasks = env_or("TASKS", 64).max(1);
    let seq_events = env_or("SEQ_EVENTS", 2_000).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    runtime.block_on(async {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "audit append on SQLite (WAL, synchronous=NORMAL), {runs} runs, tokio workers = {workers}"
        );
        let mut rates = Vec::new();
        for run in 1..=runs {
            let took = concurrent(tasks, events).await;
            let rate = events as f64 / took.as_secs_f64();
            println!(
                "  concurrent run {run}: {events} events from {tasks} tasks in {:.3}s = {rate:.0} events/s",
                took.as_secs_f64()
            );
            rates.push(rate);
        }
        let conc = median(rates);
        let mut rates = Vec::new();
        for run in 1..=runs {
            let took = sequential(seq_events).await;
            let rate = seq_events as f64 / took.as_secs_f64();
            println!(
                "  sequential run {run}: {seq_events} events from 1 task in {:.3}s = {rate:.0} events/s",
                took.as_secs_f64()
            );
            rates.push(rate);
        }
        let seq = median(rates);
        println!("RESULT audit_append_concurrent_events_per_s {conc:.0} (tasks={tasks}, events={events}, median of {runs}; target >= 10000)");
        println!("RESULT audit_append_sequential_events_per_s {seq:.0} (1 task, events={seq_events}, median of {runs})");
    });
}

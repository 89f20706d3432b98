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
//!
//! `PREFILLED_DIR=DIR` adds a third figure: the concurrent case on a copy of
//! a log that already holds many entries (DIR as written by the
//! `fill_audit` example: `master.key` and `redwall.db`). The copy is made
//! once, the runs append to it one after another, and the whole chain is
//! verified at the end.
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

/// A typical per-request event: actor, address, user agent, small details,
/// stamped with the current time as the server does (audit ids, and so
/// their index, follow `at`).
fn event(i: usize) -> NewAuditEntry {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    NewAuditEntry {
        at: now,
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

/// `events` appends from `tasks` concurrent tasks to a fresh database;
/// returns the elapsed time.
async fn concurrent(tasks: usize, events: usize) -> Duration {
    let (db, store, key) = fresh().await;
    let took = concurrent_on(&store, &key, tasks, events).await;
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

/// `events` appends from `tasks` concurrent tasks through one group-commit
/// writer to `store`; returns the elapsed time.
async fn concurrent_on(store: &Store, key: &ChainKey, tasks: usize, events: usize) -> Duration {
    let before = head(store).await;
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
    assert_eq!(head(store).await, before + events as i64);
    took
}

async fn head(store: &Store) -> i64 {
    let page = store
        .list_audit(&redwall_store::AuditFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("list");
    page.first().map_or(0, |r| r.seq)
}

async fn prefilled(dir: &std::path::Path, runs: usize, tasks: usize, events: usize) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("master.key")).expect("master.key");
    let key = ChainKey::from_keyring(&Keyring::from_base64(text.trim()).expect("master key"));
    let copy = tempfile::Builder::new()
        .prefix("redwall-bench-prefilled")
        .tempdir()
        .expect("temp dir");
    let db = copy.path().join("redwall.db");
    std::fs::copy(dir.join("redwall.db"), &db).expect("copying the database");
    let store = Store::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("connect");
    let start_len = head(&store).await;
    println!(
        "  prefilled log: {start_len} entries (a copy of {})",
        dir.display()
    );
    let mut rates = Vec::new();
    for run in 1..=runs {
        let took = concurrent_on(&store, &key, tasks, events).await;
        let rate = events as f64 / took.as_secs_f64();
        println!(
            "  prefilled concurrent run {run}: {events} events from {tasks} tasks in {:.3}s = {rate:.0} events/s",
            took.as_secs_f64()
        );
        rates.push(rate);
    }
    let report = store.verify_audit_chain(&key).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    store.close().await;
    drop(copy);
    Some(median(rates))
}

fn main() {
    // `cargo bench` passes `--bench`. Without it (`cargo test --all-targets`
    // runs this binary too) only a quick smoke run is made.
    let bench = std::env::args().any(|a| a == "--bench");
    let (runs, events, seq_events) = if bench {
        (5, 20_000, 2_000)
    } else {
        (1, 640, 20)
    };
    let runs = env_or("RUNS", runs).max(1);
    let events = env_or("EVENTS", events).max(1);
    let tasks = env_or("TASKS", 64).max(1);
    let seq_events = env_or("SEQ_EVENTS", seq_events).max(1);
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
        let long = match std::env::var_os("PREFILLED_DIR") {
            Some(dir) => prefilled(std::path::Path::new(&dir), runs, tasks, events).await,
            None => None,
        };
        println!("RESULT audit_append_concurrent_events_per_s {conc:.0} (tasks={tasks}, events={events}, median of {runs}; target >= 10000)");
        println!("RESULT audit_append_sequential_events_per_s {seq:.0} (1 task, events={seq_events}, median of {runs})");
        if let Some(long) = long {
            println!("RESULT audit_append_concurrent_on_prefilled_events_per_s {long:.0} (tasks={tasks}, events={events}, median of {runs}; target >= 10000)");
        }
    });
}

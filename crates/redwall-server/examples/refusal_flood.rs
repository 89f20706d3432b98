//! How many audit entries a flood of refusals from many addresses writes,
//! and what the aggregating table costs in memory, through the real
//! recorder (`audit::record_refusal`) and a real SQLite log.
//!
//!   cargo run --release -p redwall-server --example refusal_flood -- [REFUSALS] [SOURCES]
//!
//! Sends REFUSALS (default 1,000,000) wrong-API-key refusals, each from a
//! different IPv4 address spread over all /24s, within one minute, with
//! `audit.refusal_sources` = SOURCES (default 1000, the shipped default);
//! then ends the minute, flushes, and counts the rows. Prints the process's
//! resident memory before and after, and the table's size.

use redwall_policy::audit_event::AuditEvent;
use redwall_server::audit::Refusal;
use redwall_server::clock::ManualClock;
use redwall_server::config::Config;
use redwall_server::net::client::ClientInfo;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let refusals: u32 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let sources: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.audit.refusal_sources = sources;
    let clock = ManualClock::default();
    let state = redwall_server::open_state(config, Arc::new(clock.clone()), None).await?;
    let rows = || async {
        state
            .hub
            .store
            .verify_audit_chain(&state.hub.chain_key())
            .await
            .map(|r| r.checked)
    };
    let rows_before = rows().await?;
    let rss_before = rss_kib();
    let started = std::time::Instant::now();
    for i in 0..refusals {
        // A multiplicative hash spreads consecutive numbers over all /24s.
        let ip = IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761)));
        let client = ClientInfo {
            ip,
            user_agent: Some("flood".into()),
            https: true,
        };
        state
            .hub
            .record_refusal(
                &client.origin(),
                Refusal {
                    event: AuditEvent::InstanceKeyRejected,
                    reason: "invalid_key",
                    team_id: Some("team-1"),
                    target: Some("instance:plant".into()),
                    actor: None,
                    details: serde_json::json!({ "path": "/hook" }),
                },
            )
            .await?;
    }
    let took = started.elapsed();
    let rss_flood = rss_kib();
    let table = state.hub.refusals.len();
    let immediate = rows().await? - rows_before;
    clock.advance_secs(61);
    let flushed = state.hub.flush_refusals(false).await;
    let total = rows().await? - rows_before;
    println!("refusals:            {refusals} from {refusals} addresses in {took:.2?}");
    println!("refusal_sources:     {sources}");
    println!("rows written at once {immediate}");
    println!("rows at minute's end {flushed}");
    println!("rows in total        {total}");
    println!("tallies in table     {table} (before the flush)");
    println!(
        "RSS                  {rss_before} KiB before, {rss_flood} KiB during the flood (+{} KiB)",
        rss_flood.saturating_sub(rss_before)
    );
    Ok(())
}

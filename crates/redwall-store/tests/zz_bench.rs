#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use redwall_store::Store;
use sqlx::Row;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_parts() -> anyhow::Result<()> {
    let path = "/tmp/rw-bench.db";
    let url = format!("sqlite://{path}");
    let store = Store::connect(&url).await?;
    let n: i64 = {
        let pool = sqlx::AnyPool::connect(&url).await?;
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&pool)
            .await?
    };
    if n == 0 {
        let t = Instant::now();
        let batch: Vec<_> = (1..=10_000).map(entry).collect();
        for _ in 0..100 {
            store.append_audit(&key(), &batch).await?;
        }
        eprintln!("fill {:?}", t.elapsed());
    }

    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await?;
    for (name, cols) in [
        ("seq only", "seq"),
        ("all", "seq, id, at, actor_id, actor_name, client_ip, user_agent, event, target, outcome, details, team_id, prev_hash, hash"),
        ("concat", "seq, id || char(0) || at || char(0) || coalesce(actor_id, '') || char(0) || coalesce(actor_name,'') || char(0) || coalesce(client_ip,'') || char(0) || coalesce(user_agent,'') || char(0) || event || char(0) || coalesce(target,'') || char(0) || outcome || char(0) || details || char(0) || coalesce(team_id,''), prev_hash, hash"),
        ("text7", "seq, id, at, actor_id, actor_name, client_ip, user_agent"),
    ] {
        let t = Instant::now();
        let mut total = 0;
        let mut bytes = 0;
        for i in 0..100i64 {
            let lo = i * 10_000;
            let rows = sqlx::query(&format!("SELECT {cols} FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq"))
                .bind(lo).bind(lo + 10_000).fetch_all(&pool).await?;
            total += rows.len();
            if name == "concat" { for r in &rows { let s: &str = r.try_get(1)?; bytes += s.len(); } }
        }
        eprintln!("{name}: {:?} {total} {bytes}", t.elapsed());
    }

    let t = Instant::now();
    let e = entry(5);
    let k = key();
    let mut prev = redwall_crypto::chain::GENESIS;
    for i in 0..1_000_000 {
        let b = redwall_store::canonical_entry_bytes(i, "0123456789abcdef0123456789abcdef", &e);
        prev = k.link(&prev, &b);
    }
    eprintln!("hash+canon {:?} {}", t.elapsed(), prev[0]);
    Ok(())
}

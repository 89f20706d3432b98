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

    for _ in 0..2 {
        let t = Instant::now();
        let r = store.verify_audit_chain(&key()).await?;
        eprintln!("verify {:?} {}", t.elapsed(), r.checked);
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

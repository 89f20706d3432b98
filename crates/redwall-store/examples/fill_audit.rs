//! Fills a Redwall data directory with chained audit entries, for timing
//! `redwall audit verify` (see `scripts/bench`).
//!
//! ```text
//! cargo run --release -p redwall-store --example fill_audit -- DATA_DIR [COUNT] [BATCH]
//! redwall audit verify --data-dir DATA_DIR
//! ```
//!
//! Writes `DATA_DIR/master.key` (a fresh master key, mode 0600) unless one is
//! there already, and appends COUNT entries (default 1,000,000) to
//! `DATA_DIR/redwall.db` (the database `redwall` uses for that data dir) in
//! transactions of BATCH entries (default 5,000), chained with the audit
//! sub-key of that master key, exactly as the server writes them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::time::Instant;

use redwall_crypto::chain::ChainKey;
use redwall_crypto::keyring::Keyring;
use redwall_store::{NewAuditEntry, Store};
use serde_json::json;

const EVENTS: [&str; 6] = [
    "auth.login",
    "auth.logout",
    "token.created",
    "user.created",
    "settings.changed",
    "access.denied",
];

fn entry(i: u64) -> NewAuditEntry {
    let user = i % 50;
    NewAuditEntry {
        at: 1_700_000_000_000_000 + (i as i64) * 1_000,
        actor_id: Some(format!("{user:032x}")),
        actor_name: Some(format!("user{user}")),
        client_ip: Some(format!("10.0.{}.{}", (i / 256) % 256, i % 256)),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) redwall-fill".into()),
        event: EVENTS[(i % EVENTS.len() as u64) as usize].into(),
        target: Some(format!("user:{:032x}", (i * 7) % 50)),
        outcome: if i.is_multiple_of(10) {
            "failure"
        } else {
            "success"
        }
        .into(),
        details: json!({"method": "password", "mfa": i.is_multiple_of(3), "n": i}),
        team_id: None,
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: fill_audit DATA_DIR [COUNT] [BATCH]");
        std::process::exit(2);
    };
    let count: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let batch: u64 = args.next().map_or(Ok(5_000), |s| s.parse())?;
    let batch = batch.max(1);

    std::fs::create_dir_all(&dir)?;
    let key_path = dir.join("master.key");
    let keyring = if key_path.is_file() {
        Keyring::from_base64(std::fs::read_to_string(&key_path)?.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?
    } else {
        let k = Keyring::generate();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)?;
        f.write_all(k.to_base64().expose().as_bytes())?;
        k
    };
    let key = ChainKey::from_keyring(&keyring);

    let db = dir.join("redwall.db");
    let url = format!(
        "sqlite://{}",
        db.to_str()
            .ok_or_else(|| anyhow::anyhow!("data dir is not UTF-8"))?
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Store::connect(&url).await?;
        let started = Instant::now();
        let mut done = 0u64;
        let mut next = 0u64;
        while done < count {
            let n = batch.min(count - done);
            let entries: Vec<NewAuditEntry> = (next..next + n).map(entry).collect();
            store.append_audit(&key, &entries).await?;
            next += n;
            done += n;
            if done.is_multiple_of(100_000) || done == count {
                eprintln!("  {done} entries ({:.1}s)", started.elapsed().as_secs_f64());
            }
        }
        let took = started.elapsed();
        println!(
            "appended {count} entries to {} in {:.2}s ({:.0} entries/s, batches of {batch})",
            db.display(),
            took.as_secs_f64(),
            count as f64 / took.as_secs_f64()
        );
        store.close().await;
        anyhow::Ok(())
    })
}

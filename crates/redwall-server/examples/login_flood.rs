//! The owner's login under a flood of wrong passwords (BENCHMARKS.md,
//! "Login under a flood"). Starts Redwall in process on 127.0.0.1 with the
//! shipped argon2 parameters, SQLite, a trusted proxy on loopback (so each
//! attack can come from its own address), then:
//!
//! 1. the owner logs in once from their laptop (which keeps what cookies it
//!    is given), then logs in `LOGINS` times without any load: the baseline;
//! 2. `ATTACKERS` concurrent clients post wrong passwords, each request from
//!    a new address, alternately naming the owner and a made-up account
//!    (unknown accounts cost a hash too); meanwhile the owner logs in
//!    `LOGINS` times from the laptop.
//!
//! Prints `RESULT` lines: success rate and p50/p99 latency of the owner's
//! logins in both phases, and what the attackers got.
//!
//!   cargo run --release -p redwall-server --example login_flood -- [ATTACKERS] [LOGINS]

use redwall_server::clock::SystemClock;
use redwall_server::config::{Config, TlsMode};
use redwall_server::StartOptions;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN_PASSWORD: &str = "violet-harbor-copper-9";
const OWNER_PASSWORD: &str = "amber-falcon-meadow-42";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let attackers: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let logins: usize = args.next().map_or(Ok(40), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".parse()?;
    config.server.trusted_proxies = vec!["127.0.0.1/32".parse()?];
    config.tls.mode = TlsMode::Off;
    let running = redwall_server::start(StartOptions {
        config,
        clock: Arc::new(SystemClock),
        master_key: None,
        run_instances: false,
    })
    .await?;
    let base = running.base_url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;

    let token = running
        .setup_token
        .as_ref()
        .map(|t| t.expose().to_string())
        .ok_or_else(|| anyhow::anyhow!("no setup token"))?;
    let r = http
        .post(format!("{base}/api/v1/setup"))
        .json(&json!({"setup_token": token, "username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "setup: {}", r.status());
    let (admin_cookie, csrf) = login(&http, &base, "203.0.113.1", "", "admin", ADMIN_PASSWORD)
        .await
        .session
        .ok_or_else(|| anyhow::anyhow!("admin login"))?;
    let r = http
        .post(format!("{base}/api/v1/users"))
        .header("cookie", admin_cookie)
        .header("x-csrf-token", csrf)
        .json(&json!({"username": "owner", "password": OWNER_PASSWORD}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "create owner: {}", r.status());

    // The owner's laptop logs in once and keeps its cookies (but the session).
    let first = login(&http, &base, "203.0.113.5", "", "owner", OWNER_PASSWORD).await;
    anyhow::ensure!(first.status == 200, "owner's first login: {}", first.status);
    let jar = first.kept_cookies.join("; ");
    println!(
        "owner's laptop keeps: {}",
        if jar.is_empty() {
            "no cookie"
        } else {
            "a device cookie"
        }
    );

    let baseline = owner_logins(&http, &base, &jar, logins).await;
    report("baseline", &baseline);

    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
    let mut tasks = Vec::new();
    for _ in 0..attackers {
        let (http, base, stop, seq, seen) = (
            http.clone(),
            base.clone(),
            stop.clone(),
            seq.clone(),
            seen.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let ip = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
                let name = if n % 2 == 0 {
                    "owner".to_string()
                } else {
                    format!("ghost{n}")
                };
                let status = login(&http, &base, &ip, "", &name, "wrong-password-123")
                    .await
                    .status;
                *seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(status)
                    .or_default() += 1;
            }
        }));
    }
    // Let the flood fill the queue first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let flooded_at = Instant::now();
    let under_flood = owner_logins(&http, &base, &jar, logins).await;
    let flood_secs = flooded_at.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    report("flood", &under_flood);
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let total: u64 = seen.values().sum();
    println!(
        "RESULT flood attackers={attackers} attempts={total} ({:.0}/s) statuses={seen:?}",
        total as f64 / (flood_secs + 2.0)
    );
    running.shutdown().await;
    Ok(())
}

struct Answer {
    status: u16,
    session: Option<(String, String)>,
    kept_cookies: Vec<String>,
}

async fn login(
    http: &reqwest::Client,
    base: &str,
    ip: &str,
    jar: &str,
    username: &str,
    password: &str,
) -> Answer {
    let mut req = http
        .post(format!("{base}/api/v1/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({"username": username, "password": password}));
    if !jar.is_empty() {
        req = req.header("cookie", jar);
    }
    let Ok(r) = req.send().await else {
        return Answer {
            status: 0,
            session: None,
            kept_cookies: Vec::new(),
        };
    };
    let status = r.status().as_u16();
    let pairs: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_string)
        .collect();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let session = pairs
        .iter()
        .find(|p| p.contains("_session="))
        .cloned()
        .zip(body["csrf_token"].as_str().map(str::to_string));
    Answer {
        status,
        session,
        kept_cookies: pairs
            .into_iter()
            .filter(|p| !p.contains("_session="))
            .collect(),
    }
}

async fn owner_logins(
    http: &reqwest::Client,
    base: &str,
    jar: &str,
    n: usize,
) -> Vec<(u16, Duration)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let a = login(http, base, "203.0.113.5", jar, "owner", OWNER_PASSWORD).await;
        out.push((a.status, t.elapsed()));
    }
    out
}

fn report(phase: &str, runs: &[(u16, Duration)]) {
    let ok = runs.iter().filter(|(s, _)| *s == 200).count();
    let mut ms: Vec<f64> = runs.iter().map(|(_, d)| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    let mut statuses = BTreeMap::<u16, usize>::new();
    for (s, _) in runs {
        *statuses.entry(*s).or_default() += 1;
    }
    println!(
        "RESULT {phase} owner_success={ok}/{} p50={:.1}ms p99={:.1}ms max={:.1}ms statuses={statuses:?}",
        runs.len(),
        pct(0.5),
        pct(0.99),
        ms[ms.len() - 1]
    );
}

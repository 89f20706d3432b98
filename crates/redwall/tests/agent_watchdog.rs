//! A new agent build that hangs without crashing is rolled back, as the
//! shipped unit runs the agent (`Type=notify`, `WatchdogSec=`): the test
//! plays systemd (its notify socket, its watchdog that kills a process
//! whose pings stop, `Restart=always`), with the real `redwall serve` and
//! the real `redwall-agent`. The hanging build is a real ELF program that
//! never speaks to the hub or to systemd (it waits for a signal for ever). Without the watchdog the
//! site would run it for ever; with it, systemd kills it, the installed
//! binary's launcher finds the update's time over and goes back, and the
//! rollout stops naming the rollback. A healthy agent is never killed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod agent_host;
mod serve_kit;

use agent_host::*;
use serde_json::Value;
use serve_kit::*;
use sha2::Digest as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// The watchdog interval the test's "systemd" gives the agent.
const WATCHDOG: Duration = Duration::from_secs(6);

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// systemd, as far as this unit is concerned.
struct Systemd<'a> {
    host: &'a AgentHost,
    socket: UnixDatagram,
    path: std::path::PathBuf,
    agent: Child,
    last_ping: Instant,
    pings: u32,
    ready: u32,
    watchdog_kills: u32,
    restarts: u32,
}

impl<'a> Systemd<'a> {
    fn start(host: &'a AgentHost, dir: &Path) -> Systemd<'a> {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        let agent = host.run_under_watchdog(&path, WATCHDOG.as_micros() as u64);
        Systemd {
            host,
            socket,
            path,
            agent,
            last_ping: Instant::now(),
            pings: 0,
            ready: 0,
            watchdog_kills: 0,
            restarts: 0,
        }
    }

    /// Reads what the agent said, then acts as systemd would: a process
    /// that ended is started again (`Restart=always`, but not after 3 or
    /// 4); one silent for longer than the watchdog interval gets SIGABRT
    /// (systemd's `WatchdogSignal=`) and is started again.
    fn tend(&mut self) {
        let mut buf = [0u8; 512];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            for line in text.lines() {
                match line {
                    "WATCHDOG=1" => {
                        self.pings += 1;
                        self.last_ping = Instant::now();
                    }
                    "READY=1" => {
                        self.ready += 1;
                        // The watchdog starts counting once the unit is up.
                        self.last_ping = Instant::now();
                    }
                    _ => {}
                }
            }
        }
        if let Some(status) = self.agent.try_wait().unwrap() {
            assert!(
                !matches!(status.code(), Some(3 | 4)),
                "the agent stopped for good ({status}):\n{}",
                self.host.log()
            );
            self.restart();
        } else if self.last_ping.elapsed() > WATCHDOG {
            self.watchdog_kills += 1;
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(self.agent.id() as i32, libc::SIGABRT) };
            let _ = self.agent.wait();
            self.restart();
        }
    }

    fn restart(&mut self) {
        self.restarts += 1;
        assert!(
            self.restarts < 20,
            "restarted too often:\n{}",
            self.host.log()
        );
        std::thread::sleep(Duration::from_millis(500));
        self.agent = self
            .host
            .run_under_watchdog(&self.path, WATCHDOG.as_micros() as u64);
        self.last_ping = Instant::now();
    }

    fn stop(mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// Tends "systemd" until `done` holds for the agent's state.
async fn tend_until(
    sd: &mut Systemd<'_>,
    admin: &Api,
    path: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        sd.tend();
        let (status, v) = admin.get(path).await;
        assert_eq!(status, 200, "{v}");
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{v}\n{}", sd.host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_hangs_is_killed_by_the_watchdog_and_rolled_back() {
    let port = redwall_runtime::testing::free_port();
    let dir = DataDir::for_agents(&format!("127.0.0.1:{port}"), None, 1);
    let config = dir.path().join("redwall.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("update_confirm_secs = 5\n");
    std::fs::write(&config, text).unwrap();
    let s = dir.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    let work = tempfile::tempdir().unwrap();

    let installed = work.path().join("redwall-agent");
    let out = std::process::Command::new("strip")
        .arg("-o")
        .arg(&installed)
        .arg(agent_bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "strip: {}", stderr(&out));
    let original_sha = sha256_hex(&std::fs::read(&installed).unwrap());

    // A real program for this platform that takes any arguments, never
    // connects and never pings systemd: it waits for a signal for ever.
    // Built with the C compiler every Rust build here links with.
    let source = work.path().join("hang.c");
    std::fs::write(
        &source,
        "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n",
    )
    .unwrap();
    let hang = work.path().join("hang");
    let out = std::process::Command::new("cc")
        .arg("-o")
        .arg(&hang)
        .arg(&source)
        .output()
        .unwrap();
    assert!(out.status.success(), "cc: {}", stderr(&out));
    let out = DataDir::without_instances()
        .command()
        .args(["agent", "build-add", hang.to_str().unwrap()])
        .args(["--version", "9.9.9-hangs", "--json"])
        .args(["--insecure-skip-verify", "--url", &s.base, "--team", &team])
        .env("REDWALL_TOKEN", &pat)
        .output()
        .unwrap();
    let build: Value = serde_json::from_str(&ok(out)).unwrap();
    let build_id = build["id"].as_str().unwrap().to_string();

    let bundle = provision(&s, &team, &pat, &[]);
    let host = AgentHost::with_binary(&installed);
    let out = host.enrol(&bundle, "site-1");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut sd = Systemd::start(&host, work.path());
    let agent_path = format!("/api/v1/teams/{team}/agents/site-1");
    tend_until(&mut sd, &admin, &agent_path, Duration::from_secs(30), |a| {
        a["online"] == true
    })
    .await;

    // Healthy: it says it is ready, then pings; longer than the watchdog
    // interval passes without a kill.
    let healthy_until = Instant::now() + WATCHDOG * 2;
    while Instant::now() < healthy_until {
        sd.tend();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        sd.watchdog_kills,
        0,
        "a healthy agent was killed:\n{}",
        host.log()
    );
    assert!(
        sd.ready >= 1 && sd.pings >= 3,
        "ready {} pings {}",
        sd.ready,
        sd.pings
    );

    // The hanging build: systemd kills it, and the agent goes back.
    let (status, v) = admin
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/teams/{team}/agent-updates"),
            Some(serde_json::json!({"build": build_id,
                "target": {"kind": "agent", "name": "site-1"}})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let update = v["id"].as_str().unwrap().to_string();
    let ended = tend_until(
        &mut sd,
        &admin,
        &format!("/api/v1/teams/{team}/agent-updates/{update}"),
        Duration::from_secs(90),
        |v| v["status"] != "rolling",
    )
    .await;
    assert_eq!(ended["status"], "stopped", "{ended}\n{}", host.log());
    assert!(
        ended["error"].as_str().unwrap().contains("rolled back"),
        "{ended}\n{}",
        host.log()
    );
    assert!(
        sd.watchdog_kills >= 1,
        "the hanging build was never killed by the watchdog:\n{}",
        host.log()
    );
    let a = tend_until(&mut sd, &admin, &agent_path, Duration::from_secs(30), |a| {
        a["online"] == true && a["build_sha256"] == original_sha.as_str()
    })
    .await;
    assert_eq!(a["build_sha256"], original_sha.as_str());
    // Back on the old build, it pings again and is left alone.
    let kills = sd.watchdog_kills;
    let pings = sd.pings;
    let healthy_until = Instant::now() + WATCHDOG * 2;
    while Instant::now() < healthy_until {
        sd.tend();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sd.watchdog_kills, kills, "{}", host.log());
    assert!(sd.pings > pings, "{}", host.log());
    sd.stop();
    drop(s);
}

//! Agents updating themselves as they run: the real `redwall serve` (HTTPS,
//! self-signed, pinned by the bundle) and the real `redwall-agent`. A
//! platform admin adds a build with `redwall agent build-add` (a copy of
//! the agent with bytes appended: another digest, the same program), an
//! Owner rolls it out with `redwall agent update`; the agent switches to
//! it in place (same process id) and comes back with the new digest. A
//! build that cannot run is rolled back: the test plays systemd and starts
//! the installed binary again whenever the agent's process ends, and the
//! agent returns to the build it ran; the rollout stops, naming it.

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
use std::process::{Child, Output};
use std::time::{Duration, Instant};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `redwall agent ...` against the hub, with the admin's token.
fn agent_cli(s: &Serving, pat: &str, team: &str, args: &[&str]) -> Output {
    DataDir::without_instances()
        .command()
        .arg("agent")
        .args(args)
        .args(["--insecure-skip-verify", "--url", &s.base, "--team", team])
        .env("REDWALL_TOKEN", pat)
        .output()
        .unwrap()
}

/// Adds `bytes` as a build; its id.
fn add_build(
    s: &Serving,
    pat: &str,
    team: &str,
    dir: &std::path::Path,
    name: &str,
    bytes: &[u8],
) -> String {
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    let out = agent_cli(
        s,
        pat,
        team,
        &[
            "build-add",
            file.to_str().unwrap(),
            "--version",
            name,
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(&ok(out)).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Keeps the agent running as systemd would (Restart=on-failure): a new
/// process of the installed binary whenever the last one ended.
fn keep_running(host: &AgentHost, agent: &mut Child, restarts: &mut u32) {
    if let Some(status) = agent.try_wait().unwrap() {
        assert!(
            !matches!(status.code(), Some(3 | 4)),
            "the agent stopped for good ({status}):\n{}",
            host.log()
        );
        *restarts += 1;
        assert!(*restarts < 50, "restarted too often:\n{}", host.log());
        std::thread::sleep(Duration::from_millis(500));
        *agent = host.run_appending();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_takes_a_signed_build_in_place_and_rolls_a_broken_one_back() {
    let port = redwall_runtime::testing::free_port();
    // Heartbeats every 5 s, as in the agent crate's update tests: the
    // debug-built hub loads, encodes and signs a build of tens of
    // megabytes before its first byte to the agent (a release hub takes
    // milliseconds), and with 1 s heartbeats (3 s of tolerated silence)
    // the agent took that for a dead link under CI's load.
    let dir = DataDir::for_agents(&format!("127.0.0.1:{port}"), None, 5);
    // A broken build gets 5 s to connect (the least the hub allows).
    let config = dir.path().join("redwall.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("update_confirm_secs = 5\n");
    std::fs::write(&config, text).unwrap();
    let s = dir.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    let work = tempfile::tempdir().unwrap();

    // The installed agent, stripped as a release is shipped (the debug
    // build is larger than a build may be).
    let installed = work.path().join("redwall-agent");
    let out = std::process::Command::new("strip")
        .arg("-o")
        .arg(&installed)
        .arg(agent_bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "strip: {}", stderr(&out));
    let original = std::fs::read(&installed).unwrap();
    let mut second = original.clone();
    second.extend_from_slice(b"\nredwall test build two\n");
    let second_sha = sha256_hex(&second);
    let second_id = add_build(&s, &pat, &team, work.path(), "9.0.0-two", &second);

    let bundle = provision(&s, &team, &pat, &["--group", "plants"]);
    let host = AgentHost::with_binary(&installed);
    let out = host.enrol(&bundle, "site-1");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut agent = host.run();
    let pid = agent.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = agent_state(&admin, &team, "site-1").await;
        if a["online"] == true {
            assert_eq!(a["build_sha256"], sha256_hex(&original), "{a}");
            break;
        }
        assert!(Instant::now() < deadline, "{a}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The rollout: the agent runs the new build in the same process.
    let out = agent_cli(
        &s,
        &pat,
        &team,
        &[
            "update", "--build", &second_id, "--group", "plants", "--wait", "60",
        ],
    );
    let text = ok(out);
    assert!(text.contains("done"), "{text}\n{}", host.log());
    let a = agent_state(&admin, &team, "site-1").await;
    assert_eq!(a["build_sha256"], second_sha.as_str(), "{a}");
    assert_eq!(agent.id(), pid);
    assert!(agent.try_wait().unwrap().is_none(), "{}", host.log());
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&exe).unwrap()),
        second_sha,
        "{exe:?}"
    );

    // A build that cannot run: an ELF header with nothing behind it.
    let broken: Vec<u8> = original[..4096].to_vec();
    let broken_id = add_build(&s, &pat, &team, work.path(), "9.0.1-broken", &broken);
    let (status, v) = admin
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/teams/{team}/agent-updates"),
            Some(serde_json::json!({"build": broken_id,
                "target": {"kind": "agent", "name": "site-1"}})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let update = v["id"].as_str().unwrap().to_string();
    let mut restarts = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let ended = loop {
        keep_running(&host, &mut agent, &mut restarts);
        let (status, v) = admin
            .get(&format!("/api/v1/teams/{team}/agent-updates/{update}"))
            .await;
        assert_eq!(status, 200, "{v}");
        if v["status"] != "rolling" {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ended["status"], "stopped", "{ended}\n{}", host.log());
    assert!(
        ended["error"].as_str().unwrap().contains("rolled back"),
        "{ended}\n{}",
        host.log()
    );
    // Back on the build it ran, and connected.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        keep_running(&host, &mut agent, &mut restarts);
        let a = agent_state(&admin, &team, "site-1").await;
        if a["online"] == true && a["build_sha256"] == second_sha.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "{a}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, audit) = admin
        .get("/api/v1/audit?event=agent.update_failed&limit=10")
        .await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit}");
    let _ = agent.kill();
    let _ = agent.wait();
    drop(s);
}

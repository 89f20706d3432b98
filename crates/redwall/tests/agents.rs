//! Remote agents as they run: the real `redwall-agent` binary against real
//! `redwall serve` processes on their defaults (HTTPS with the self-signed
//! certificate, which the provisioning bundle pins).
//!
//! - Two hubs on one PostgreSQL: the agent is connected to one; a ping, a
//!   snapshot deploy and a revocation issued through the other reach it,
//!   and the revocation cuts it off within a second.
//! - An agent in its own network namespace (veth pair, nothing inbound
//!   accepted): it dials out, shows online, goes offline within two
//!   heartbeats of a cut link, and comes back on its own, also after the
//!   hub restarts.
//! - An agent whose key is not the enrolled one is refused, and the
//!   refusal is audited; a provisioning token works once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod agent_host;
mod serve_kit;

use agent_host::*;
use serve_kit::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_and_a_revocation_reach_the_agent_through_the_other_hub() {
    let Some(db) = redwall_store::testing::TestDatabase::postgres()
        .await
        .unwrap()
    else {
        return;
    };
    // A long heartbeat: only the hubs' announcements can cut the agent off
    // within a second, not its next heartbeat.
    let first_dir = DataDir::for_agents("127.0.0.1:0", Some(&db.url), 60);
    let first = first_dir.serve();
    let (admin, team, pat) = bootstrap(&first).await;
    // The second hub shares the database, so it needs the same master key.
    let second_dir = DataDir::for_agents("127.0.0.1:0", Some(&db.url), 60);
    std::fs::copy(
        first_dir.path().join("master.key"),
        second_dir.path().join("master.key"),
    )
    .unwrap();
    let second = second_dir.serve();
    let via_second = Api::bearer(&second.base, &pat);

    // Enrolment: the key file only the agent reads, the token never kept.
    let bundle = provision(&first, &team, &pat, &[]);
    let host = AgentHost::new(None);
    let out = host.enrol(&bundle, "plant-7");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode_of(&host.state_dir().join("agent.key")), 0o600);
    let token = bundle_token(&bundle);
    for entry in std::fs::read_dir(host.state_dir()).unwrap() {
        let text =
            String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap()).into_owned();
        assert!(
            !text.contains(&token),
            "the provisioning token was written to disk"
        );
    }
    assert!(!stderr(&out).contains(&token) && !stdout(&out).contains(&token));
    // The token works once.
    let again = AgentHost::new(None).enrol(&bundle, "plant-8");
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not valid"), "{}", stderr(&again));

    let mut agent = host.run();
    wait_online(&via_second, &team, "plant-7", true, Duration::from_secs(20)).await;
    let state = agent_state(&via_second, &team, "plant-7").await;
    assert_eq!(state["node_red"], "none", "{state}");

    // A ping sent through the hub the agent is not connected to.
    let out = DataDir::without_instances()
        .command()
        .args(["agent", "ping", "plant-7", "--insecure-skip-verify"])
        .args(["--url", &second.base, "--team", &team])
        .env("REDWALL_TOKEN", &pat)
        .output()
        .unwrap();
    assert_eq!(ok(out).trim(), "plant-7: pong");

    // A snapshot deployed through that other hub reaches the agent too:
    // this one runs no Node-RED and says so, which ends the deployment.
    via_second
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            serde_json::json!({"name": "central"}),
        )
        .await;
    let flows = serde_json::json!([{"id": "t1", "type": "tab", "label": "Site"}]);
    let imported = via_second
        .post(
            &format!("/api/v1/teams/{team}/instances/central/snapshots/import"),
            serde_json::json!({"file": base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                serde_json::to_vec(&flows).unwrap(),
            )}),
        )
        .await;
    let deployed = via_second
        .post(
            &format!("/api/v1/teams/{team}/deploys"),
            serde_json::json!({"snapshot": imported["snapshot"]["id"],
                               "target": {"kind": "agent", "name": "plant-7"}}),
        )
        .await;
    let deployment = deployed[0]["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    loop {
        let (status, list) = via_second
            .get(&format!("/api/v1/teams/{team}/agents/plant-7/deployments"))
            .await;
        assert_eq!(status, 200, "{list}");
        let d = &list[0];
        assert_eq!(d["id"], deployment.as_str(), "{list}");
        if d["status"] == "failed" {
            assert_eq!(d["error"], "this agent runs no Node-RED", "{d}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{d}\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Revoked through the other hub: cut off within a second, for good.
    let started = Instant::now();
    let (status, v) = via_second
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/teams/{team}/agents/plant-7/revoke"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let exit = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the agent still runs; its log:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "cut off after {took:?}");
    assert_eq!(exit.code(), Some(3), "{}", host.log());
    // Its debug log never held the token, nor the hub its audit entries.
    assert!(!host.log().contains(&token), "the agent logged its token");
    assert!(!first.log_text().contains(&token) && !second.log_text().contains(&token));
    let state = agent_state(&admin, &team, "plant-7").await;
    assert_eq!(state["revoked"], true);
    assert_eq!(state["online"], false);
    // Its key no longer gets in, on either hub.
    let mut retry = host.run();
    let exit = wait_exit(&mut retry, Duration::from_secs(20));
    assert_eq!(exit, Some(4), "{}", host.log());

    drop(second);
    drop(first);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_audited() {
    let dir = DataDir::for_agents("127.0.0.1:0", None, 1);
    let s = dir.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    let host = AgentHost::new(None);
    let out = host.enrol(
        &provision(&s, &team, &pat, &["--group", "line-one"]),
        "press-2",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = agent_state(&admin, &team, "press-2").await;
    assert_eq!(v["group"], "line-one");
    // Another key in the agent's key file: it no longer proves the agent.
    let other = AgentHost::new(None);
    let out = other.enrol(&provision(&s, &team, &pat, &[]), "press-3");
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::copy(
        other.state_dir().join("agent.key"),
        host.state_dir().join("agent.key"),
    )
    .unwrap();
    let mut agent = host.run();
    assert_eq!(
        wait_exit(&mut agent, Duration::from_secs(20)),
        Some(4),
        "{}",
        host.log()
    );
    let (_, log) = admin
        .get(&format!("/api/v1/teams/{team}/audit?event=agent.*"))
        .await;
    let text = log.to_string();
    assert!(text.contains("agent.enrolled"), "{text}");
    let (_, platform) = admin.get("/api/v1/audit?event=agent.connect_refused").await;
    assert!(platform.to_string().contains("bad_signature"), "{platform}");
    assert_eq!(agent_state(&admin, &team, "press-2").await["online"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_behind_a_firewall_dials_out_and_comes_back_after_cuts() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: network namespaces need root; skipped");
        return;
    }
    let site = Site::new(1);
    let port = redwall_runtime::testing::free_port();
    let listen = format!("{}:{port}", site.host_ip);
    let dir = DataDir::for_agents(&listen, None, 1);
    let s = dir.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    // The site reaches the hub; the hub cannot open a connection into it.
    // (Dropped, not refused: nothing answers at all.)
    let inbound = std::net::TcpStream::connect_timeout(
        &format!("{}:22", site.site_ip).parse().unwrap(),
        Duration::from_millis(500),
    );
    assert_eq!(
        inbound.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::TimedOut,
        "the site answered a connection from outside"
    );

    // Provisioned through the API (the hub is not on loopback, and its
    // self-signed certificate names only localhost, so the CLI would want
    // a CA); the bundle says where the hub listens and pins its certificate.
    let made = Api::bearer(&s.base, &pat)
        .post(
            &format!("/api/v1/teams/{team}/agent-tokens"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(made["hub_url"], format!("https://{listen}"), "{made}");
    assert_eq!(
        made["cert_sha256"].as_str().map(str::len),
        Some(64),
        "{made}"
    );
    let host = AgentHost::new(Some(&site.ns));
    let out = host.enrol(made["bundle"].as_str().unwrap(), "site-a");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut agent = host.run();
    wait_online(&admin, &team, "site-a", true, Duration::from_secs(20)).await;

    // The link is cut: offline within two heartbeats (one second each),
    // plus the time to read the list.
    site.link(false);
    let took = wait_online(&admin, &team, "site-a", false, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(4), "offline only after {took:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    site.link(true);
    wait_online(&admin, &team, "site-a", true, Duration::from_secs(45)).await;

    // The hub restarts: the agent dials again by itself.
    drop(s);
    let s = dir.serve();
    let admin = Api::login(&s.base, "admin").await;
    wait_online(&admin, &team, "site-a", true, Duration::from_secs(45)).await;
    assert!(agent.try_wait().unwrap().is_none(), "{}", host.log());
    let _ = agent.kill();
    let _ = agent.wait();
    drop(s);
}

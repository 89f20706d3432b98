//! Snapshots reaching a remote site as a managed-service team runs it: the
//! real `redwall serve` on its defaults (HTTPS, self-signed, pinned by the
//! bundle) and the real `redwall-agent` running its own sandboxed Node-RED
//! from npm. A snapshot made on the hub is deployed with `redwall deploy
//! --agent-group`, checked and run by the agent, and its endpoint answers
//! on the site's Node-RED. Then the hub is killed in the middle of the next
//! deploy and started again: the agent finishes, reconnects, and the
//! deployment ends once, as done, with the new flows running.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod agent_host;
mod serve_kit;

use agent_host::*;
use serde_json::{json, Value};
use serve_kit::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A flow whose `/hello` answers `text`, with a credential in it.
fn hello_flows(text: &str) -> Value {
    json!([
        {"id": "t1", "type": "tab", "label": "Site"},
        {"id": "h1", "type": "http in", "z": "t1", "url": "/hello", "method": "get",
         "upload": false, "swaggerDoc": "", "wires": [["f1"]]},
        {"id": "f1", "type": "function", "z": "t1", "name": "greet",
         "func": format!("msg.payload = {};\nreturn msg;", json!(text)),
         "outputs": 1, "wires": [["r1"]]},
        {"id": "r1", "type": "http response", "z": "t1", "statusCode": "", "headers": {},
         "wires": []},
        {"id": "b1", "type": "mqtt-broker", "name": "plant", "broker": "127.0.0.1",
         "port": "1", "autoConnect": false,
         "credentials": {"user": "plc", "password": format!("pw-{text}")}}
    ])
}

/// GET /hello on the site's Node-RED, with an endpoint token as the agent's
/// keys make it (endpoints answer nothing else).
async fn hello(state_dir: &Path, port: u16) -> Option<String> {
    let token = endpoint_token(state_dir)?;
    let r = redwall_runtime::request(
        ([127, 0, 0, 1], port).into(),
        "GET",
        "/hello",
        &[(redwall_runtime::ENDPOINT_TOKEN_HEADER, token.as_str())],
        None,
        Duration::from_secs(5),
    )
    .await
    .ok()?;
    (r.status == 200).then(|| r.text())
}

async fn wait_hello(host: &AgentHost, port: u16, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = hello(&host.state_dir(), port).await;
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/hello answered {got:?}, not {want:?}; the agent's log:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `pred` holds for the agent's state.
async fn wait_agent(api: &Api, team: &str, host: &AgentHost, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = agent_state(api, team, "site-1").await;
        if pred(&v) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never got there: {v}; its log:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_reaches_the_site_and_a_hub_killed_mid_deploy_loses_nothing() {
    let port = redwall_runtime::testing::free_port();
    let dir = DataDir::for_agents(&format!("127.0.0.1:{port}"), None, 1);
    let s = dir.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    // The team's central instance (not started here): its snapshots are
    // what the sites run.
    let v = admin
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": "central"}),
        )
        .await;
    assert_eq!(v["name"], "central", "{v}");
    let v1 = snapshot_of(&admin, &team, &hello_flows("v1")).await;
    let v2 = snapshot_of(&admin, &team, &hello_flows("v2")).await;

    let bundle = provision(&s, &team, &pat, &["--group", "plants"]);
    let host = AgentHost::new(None);
    let node_red_port = host.enrol_with_node_red(&bundle, "site-1");
    let mut agent = host.run();
    wait_agent(&admin, &team, &host, |a| {
        a["online"] == true && a["node_red"] == "running"
    })
    .await;

    // `redwall deploy --agent-group` follows the agent's answer.
    let out = DataDir::without_instances()
        .command()
        .args(["deploy", &v1, "--agent-group", "plants"])
        .args(["--insecure-skip-verify", "--url", &s.base, "--team", &team])
        .env("REDWALL_TOKEN", &pat)
        .output()
        .unwrap();
    let text = ok(out);
    assert!(text.contains("done"), "{text}\nagent log:\n{}", host.log());
    wait_hello(&host, node_red_port, "v1").await;
    assert_eq!(
        agent_state(&admin, &team, "site-1").await["running_snapshot"],
        v1.as_str()
    );
    // The credentials reached the site's Node-RED, and nothing of them is
    // in the agent's files in the clear.
    for entry in std::fs::read_dir(host.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains("pw-v1"),
                "{} holds the credential in the clear",
                path.display()
            );
        }
    }

    // The next deploy: the hub is killed once the agent has it in hand.
    let v = admin
        .post(
            &format!("/api/v1/teams/{team}/deploys"),
            json!({"snapshot": v2, "target": {"kind": "agent", "name": "site-1"}}),
        )
        .await;
    let deployment = v[0]["id"].as_str().expect("a deployment").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !host.log().contains(&format!("deploying snapshot {v2}")) {
        assert!(Instant::now() < deadline, "{}", host.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill_hard();
    let s = dir.serve();
    let admin = Api::login(&s.base, "admin").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, list) = admin
            .get(&format!("/api/v1/teams/{team}/agents/site-1/deployments"))
            .await;
        assert_eq!(status, 200, "{list}");
        let d = list
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == deployment.as_str())
            .cloned()
            .unwrap();
        if d["status"] == "done" {
            break;
        }
        assert_ne!(d["status"], "failed", "{d}\n{}", host.log());
        assert!(Instant::now() < deadline, "{d}\nagent log:\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_hello(&host, node_red_port, "v2").await;
    wait_agent(&admin, &team, &host, |a| {
        a["running_snapshot"] == v2.as_str()
    })
    .await;
    // Ended once, with one audit entry.
    let (status, audit) = admin
        .get("/api/v1/audit?event=snapshot.deployed&limit=100")
        .await;
    assert_eq!(status, 200, "{audit}");
    let ended: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["details"]["deployment"] == deployment.as_str())
        .collect();
    assert_eq!(ended.len(), 1, "{audit}");
    assert_eq!(ended[0]["target"], "agent:site-1");
    // It was mid-deploy: the agent lost the hub after it had the snapshot
    // in hand, and dialled again.
    let log = host.log();
    let started = log.find(&format!("deploying snapshot {v2}")).unwrap();
    assert!(log[started..].contains("dialling again"), "{log}");
    assert!(agent.try_wait().unwrap().is_none(), "{}", host.log());
    let _ = agent.kill();
    let _ = agent.wait();
    drop(s);
}

//! The agent with a real Node-RED (`redwall_runtime::testing::shared_install`,
//! installed from npm once per machine): started under the supervisor on
//! loopback, reported in heartbeats, restarted by the hub's command, left
//! running while the hub link is down, stopped with the agent.

use std::path::Path;
use std::time::Duration;

use redwall_agent::node_red::{NodeRedSecrets, INSTANCE_ID, NODE_RED_DIR, SECRETS_FILE};
use redwall_agent::state::{self, CONFIG_FILE};
use redwall_agent::{Agent, NodeRedConfig, RunOutcome};
use redwall_crypto::Secret;
use redwall_runtime::testing::{free_port, request, shared_install, HttpResponse};
use redwall_runtime::{mint_editor_token, EditorPermission, NodeRedInstall, EDITOR_TOKEN_HEADER};
use serde_json::{json, Value};

use crate::fake_hub::{AgentSocket, FakeHub, AGENT_ID, TOKEN};
use crate::sessions::RunningAgent;
use crate::within;

pub(crate) fn install() -> NodeRedInstall {
    shared_install().expect("Node-RED installed for the tests")
}

/// Node-RED's pid, from the supervisor's pidfile in the agent's directory.
pub(crate) fn node_red_pid(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(
        dir.join(NODE_RED_DIR)
            .join("run")
            .join(format!("{INSTANCE_ID}.pid")),
    )
    .ok()?;
    text.split_whitespace().next()?.parse().ok()
}

pub(crate) fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// GET `path` on Node-RED's port, with an editor token minted from the
/// agent's own keys file (or none).
async fn get(dir: &Path, port: u16, path: &str, with_token: bool) -> std::io::Result<HttpResponse> {
    let secrets = NodeRedSecrets::load_or_create(dir).unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 600;
    let token = mint_editor_token(
        &Secret::new(secrets.editor.clone()),
        INSTANCE_ID,
        "test",
        EditorPermission::Read,
        exp,
    );
    let headers: Vec<(&str, &str)> = if with_token {
        vec![(EDITOR_TOKEN_HEADER, token.as_str())]
    } else {
        Vec::new()
    };
    request(
        ([127, 0, 0, 1], port).into(),
        "GET",
        path,
        &headers,
        None,
        Duration::from_secs(30),
    )
    .await
}

/// Node-RED answers: its settings with a token, 401 without one (the
/// generated settings guard the admin API; `/` only reaches the endpoint
/// guard once a flow has an HTTP route, so it is not asked here).
async fn assert_answers(dir: &Path, port: u16) {
    let settings = get(dir, port, "/editor/settings", true).await.unwrap();
    assert_eq!(settings.status, 200, "{}", settings.text());
    let body = settings.json().expect("settings are JSON");
    assert_eq!(body["httpNodeRoot"], "/", "{body}");
    let refused = get(dir, port, "/editor/settings", false).await.unwrap();
    assert_eq!(refused.status, 401);
}

/// Every TCP listener on `port`, from the kernel's own tables: (IPv6?,
/// local address as the kernel writes it).
fn listeners(port: u16) -> Vec<(bool, String)> {
    let suffix = format!(":{port:04X}");
    let mut found = Vec::new();
    for (v6, table) in [(false, "/proc/net/tcp"), (true, "/proc/net/tcp6")] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // State 0A is LISTEN.
            if fields.len() > 3 && fields[3] == "0A" && fields[1].ends_with(&suffix) {
                found.push((v6, fields[1].to_owned()));
            }
        }
    }
    found
}

/// Writes Node-RED's settings into an enrolled agent's `agent.json`, as
/// `enrol --node-red-path` does.
pub(crate) fn configure(dir: &Path, install: &NodeRedInstall, port: u16) -> Agent {
    let mut config = state::load_config(dir).unwrap();
    config.node_red = Some(
        redwall_agent::node_red::check_config(&NodeRedConfig {
            package_dir: install.package_dir.clone(),
            node: install.node.clone(),
            port,
        })
        .unwrap(),
    );
    state::write_config(dir, &config).unwrap();
    Agent::load(dir).unwrap()
}

/// Heartbeats until one reports `want`; a `failed` before it is a failure.
pub(crate) async fn until_reported(ws: &mut AgentSocket, want: &str) {
    within(&format!("a heartbeat saying {want}"), async {
        loop {
            let v = ws.next_json().await;
            if v["type"] != "heartbeat" {
                continue;
            }
            let state = v["status"]["node_red"].as_str().unwrap().to_owned();
            if state == want {
                return;
            }
            assert!(
                ["starting", "stopped", "running"].contains(&state.as_str()),
                "unexpected Node-RED state {state}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_node_red_restarts_it_and_keeps_it_without_the_hub() {
    let install = tokio::task::spawn_blocking(install).await.unwrap();
    let mut hub = FakeHub::start().await;
    let (agent, tmp) = hub.enrolled_agent();
    let dir = tmp.path().to_path_buf();
    let public = agent.key.public_key();
    let port = free_port();
    let agent = configure(&dir, &install, port);
    let mut running = RunningAgent::start(agent);

    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;
    until_reported(&mut ws, "running").await;
    let first = node_red_pid(&dir).expect("a pidfile for Node-RED");
    assert!(alive(first));
    assert_answers(&dir, port).await;

    // Loopback only, as the kernel sees it.
    let listening = listeners(port);
    assert!(!listening.is_empty(), "Node-RED listens on {port}");
    for (v6, local) in &listening {
        assert!(
            !v6 && local.starts_with("0100007F:"),
            "Node-RED listens beyond 127.0.0.1: {local}"
        );
    }
    // The keys stay private; the state directory too.
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&dir.join(SECRETS_FILE)), 0o600);
    assert_eq!(mode(&dir.join(CONFIG_FILE)), 0o600);
    assert_eq!(mode(&dir.join(NODE_RED_DIR).join("userdir")), 0o700);

    // A restart answers once Node-RED is back; a ping sent after it is
    // answered first, so the restart does not hold up the connection.
    ws.send_json(json!({"type": "command", "id": "r1", "command": {"kind": "restart"}}))
        .await;
    ws.send_json(json!({"type": "command", "id": "p1", "command": {"kind": "ping"}}))
        .await;
    assert_eq!(
        ws.next_non_heartbeat().await,
        json!({"type": "command_done", "id": "p1", "ok": true, "message": "pong"})
    );
    let done: Value = within("the restart", ws.next_non_heartbeat()).await;
    assert_eq!(
        done,
        json!({"type": "command_done", "id": "r1", "ok": true, "message": "restarted"})
    );
    let second = node_red_pid(&dir).expect("a pidfile after the restart");
    assert_ne!(second, first, "a new Node-RED process");
    assert!(!alive(first), "the old Node-RED is gone");
    assert_answers(&dir, port).await;
    until_reported(&mut ws, "running").await;

    // The hub goes away: Node-RED does not notice. The agent dials again;
    // while that connection is not yet welcomed, Node-RED still answers.
    drop(ws);
    let mut again = hub.next_socket().await;
    assert_eq!(node_red_pid(&dir), Some(second));
    assert!(alive(second));
    assert_answers(&dir, port).await;
    again.greet(AGENT_ID, &public, 1).await;
    until_reported(&mut again, "running").await;
    assert_eq!(node_red_pid(&dir), Some(second), "never restarted");

    // Stopping the agent stops Node-RED.
    running.stop();
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);
    assert!(!alive(second), "Node-RED stopped with the agent");
    assert_eq!(node_red_pid(&dir), None);
    assert!(get(&dir, port, "/editor/settings", true).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_enrols_with_node_red_and_stops_it_on_sigterm() {
    let install = tokio::task::spawn_blocking(install).await.unwrap();
    let mut hub = FakeHub::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let bundle = tmp.path().join("bundle");
    std::fs::write(&bundle, hub.bundle(TOKEN).encode()).unwrap();
    let port = free_port();
    let bin = env!("CARGO_BIN_EXE_redwall-agent");

    let enrolled = tokio::process::Command::new(bin)
        .arg("--dir")
        .arg(&dir)
        .args(["enrol", "--name", "plant-7", "--bundle"])
        .arg(format!("@{}", bundle.display()))
        .arg("--node-red-path")
        .arg(&install.package_dir)
        .arg("--node")
        .arg(&install.node)
        .args(["--port", &port.to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    hub.next_enrolment().await;
    let config = state::load_config(&dir).unwrap();
    let node_red = config.node_red.expect("Node-RED in agent.json");
    assert_eq!(node_red.port, port);
    assert_eq!(
        node_red.package_dir,
        install.package_dir.canonicalize().unwrap()
    );
    assert!(node_red.node.is_absolute());
    let written = std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
    assert!(!written.contains(TOKEN));

    let mut child = tokio::process::Command::new(bin)
        .arg("--dir")
        .arg(&dir)
        .arg("run")
        .env("REDWALL_AGENT_LOG", "info")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let public = Agent::load(&dir).unwrap().key.public_key();
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;
    until_reported(&mut ws, "running").await;
    let pid = node_red_pid(&dir).expect("a pidfile for Node-RED");
    assert_answers(&dir, port).await;

    // SIGTERM: Node-RED stops, the hub is told 1000, the agent exits 0.
    let agent_pid = i32::try_from(child.id().unwrap()).unwrap();
    // SAFETY: kill with plain integers, on our own child.
    assert_eq!(unsafe { libc::kill(agent_pid, libc::SIGTERM) }, 0);
    ws.drain().await;
    let status = within("the agent to exit", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!alive(pid), "Node-RED stopped with the agent");
    assert_eq!(node_red_pid(&dir), None);
}

#[tokio::test]
async fn an_agent_without_node_red_reports_none() {
    // The default stays as it was: covered in full by the sessions tests;
    // here only that no Node-RED file appears.
    let mut hub = FakeHub::start().await;
    let (agent, tmp) = hub.enrolled_agent();
    let public = agent.key.public_key();
    let mut running = RunningAgent::start(agent);
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;
    assert_eq!(ws.next_json().await["status"]["node_red"], "none");
    running.stop();
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);
    assert!(!tmp.path().join(NODE_RED_DIR).exists());
    assert!(!tmp.path().join(SECRETS_FILE).exists());
}

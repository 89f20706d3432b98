//! Signed snapshots from the fake hub: run on a real Node-RED (its HTTP-in
//! endpoint answers the flow's text), refused when tampered with (Node-RED
//! untouched), rolled back when the health check fails, and still reported
//! after the agent restarts. Also the simulated agent's record-only runner.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redwall_agent::apply::RUNNING_FILE;
use redwall_agent::node_red::{NodeRedSecrets, INSTANCE_ID, NODE_RED_DIR, USERDIR};
use redwall_agent::state::BOX_KEY_FILE;
use redwall_agent::{Agent, DeployOptions, RecordOnly, RunOptions, RunOutcome};
use redwall_crypto::agent_box::AgentBoxKey;
use redwall_crypto::signing::HubSigningKey;
use redwall_crypto::Secret;
use redwall_policy::agent_protocol::SignedSnapshot;
use redwall_policy::snapshot_format::Content;
use redwall_runtime::testing::{free_port, request, HttpResponse};
use redwall_runtime::{mint_endpoint_token, read_flow_files, ENDPOINT_TOKEN_HEADER};
use serde_json::{json, Value};

use crate::fake_hub::{sign_snapshot, AgentSocket, FakeHub, AGENT_ID, TEAM_ID};
use crate::node_red::{alive, configure, install, node_red_pid, until_reported};
use crate::sessions::{quick, RunningAgent};
use crate::{within, PATIENCE};

/// A short settle keeps the tests quick; the probe keeps its default, so a
/// busy machine does not make a healthy Node-RED look hung.
fn options() -> RunOptions {
    RunOptions {
        deploy: DeployOptions {
            settle: Duration::from_millis(1500),
            deploy_timeout: Duration::from_secs(20),
            ..DeployOptions::default()
        },
        ..quick()
    }
}

/// GET /hello answers `text` (HTTP-in, a function that sets the text, a
/// template that passes it on, HTTP-response); one more node holds
/// credentials, so they have somewhere to go.
fn hello_flows(text: &str) -> Vec<Value> {
    vec![
        json!({"id": "tab1", "type": "tab", "label": "Hello"}),
        json!({"id": "in1", "type": "http in", "z": "tab1", "name": "", "url": "/hello",
               "method": "get", "upload": false, "swaggerDoc": "", "wires": [["fn1"]]}),
        json!({"id": "fn1", "type": "function", "z": "tab1", "name": "",
               "func": format!("msg.text = {};\nreturn msg;", json!(text)),
               "outputs": 1, "timeout": 0, "noerr": 0, "initialize": "", "finalize": "",
               "libs": [], "wires": [["tpl1"]]}),
        json!({"id": "tpl1", "type": "template", "z": "tab1", "name": "", "field": "payload",
               "fieldType": "msg", "format": "text", "syntax": "mustache",
               "template": "{{{text}}}", "output": "str", "wires": [["out1"]]}),
        json!({"id": "out1", "type": "http response", "z": "tab1", "name": "",
               "statusCode": "", "headers": {}, "wires": []}),
        json!({"id": "cred1", "type": "http request", "z": "tab1", "name": "", "method": "GET",
               "ret": "txt", "paytoqs": "ignore", "url": "http://127.0.0.1:9/", "tls": "",
               "persist": false, "proxy": "", "authType": "basic", "senderr": false,
               "headers": [], "wires": [[]]}),
    ]
}

fn content(flows: Vec<Value>) -> Content {
    Content {
        flows: Value::Array(flows),
        env_names: Vec::new(),
        options: json!({}),
        modules: Default::default(),
    }
}

fn creds(password: &str) -> Value {
    json!({"cred1": {"user": "agent", "password": password}})
}

/// GET `path` on Node-RED's endpoints, with an endpoint token made from
/// the agent's own keys.
async fn endpoint(dir: &Path, port: u16, path: &str) -> std::io::Result<HttpResponse> {
    let secrets = NodeRedSecrets::load_or_create(dir).unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 600;
    let token = mint_endpoint_token(
        &Secret::new(secrets.endpoint.clone()),
        INSTANCE_ID,
        Some("test"),
        exp,
    );
    request(
        ([127, 0, 0, 1], port).into(),
        "GET",
        path,
        &[(ENDPOINT_TOKEN_HEADER, token.as_str())],
        None,
        Duration::from_secs(10),
    )
    .await
}

/// Waits until GET /hello answers 200 with `want` (a deploy or a restart
/// registers the route a moment after it returns); fails with the last
/// answer seen after [`PATIENCE`].
async fn until_hello(dir: &Path, port: u16, want: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let last = match endpoint(dir, port, "/hello").await {
            Ok(r) if r.status == 200 && r.text() == want => return,
            Ok(r) => format!("HTTP {}: {}", r.status, r.text()),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "/hello never answered {want:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The answer to deploy `id`, and how many heartbeats came before it.
async fn answer(ws: &mut AgentSocket, id: &str) -> (Value, usize) {
    within(&format!("the answer to {id}"), async {
        let mut beats = 0;
        loop {
            let v = ws.next_json().await;
            if v["type"] == "heartbeat" {
                beats += 1;
                continue;
            }
            assert_eq!(v["type"], "command_done", "{v}");
            assert_eq!(v["id"], id, "{v}");
            return (v, beats);
        }
    })
    .await
}

/// The snapshot the next heartbeat reports.
async fn reported(ws: &mut AgentSocket) -> Value {
    loop {
        let v = ws.next_json().await;
        if v["type"] == "heartbeat" {
            return v["status"]["running_snapshot"].clone();
        }
    }
}

fn assert_refused(done: &Value) {
    assert_eq!(done["ok"], false, "{done}");
    let message = done["message"].as_str().unwrap();
    assert!(
        message.starts_with("refused, nothing was changed"),
        "{message}"
    );
}

fn box_public(agent: &Agent) -> String {
    agent.box_key.as_ref().unwrap().public_base64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_snapshot_runs_a_tampered_one_changes_nothing_and_a_restart_still_reports_it() {
    let install = tokio::task::spawn_blocking(install).await.unwrap();
    let mut hub = FakeHub::start().await;
    let (_, tmp) = hub.enrolled_agent();
    let dir = tmp.path().to_path_buf();
    let port = free_port();
    let agent = configure(&dir, &install, port);
    let public = agent.key.public_key();
    let boxed = box_public(&agent);
    let mut running = RunningAgent::start_with(agent, options(), None);
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;
    until_reported(&mut ws, "running").await;
    assert_eq!(reported(&mut ws).await, Value::Null);

    // A good snapshot: it runs, the heartbeat names it, its credentials
    // reached Node-RED's own store, and what is kept on disk is private
    // and holds them only sealed.
    let s1 = hub.snapshot(
        "s1",
        &content(hello_flows("hello from s1")),
        &creds("pw-1"),
        &boxed,
    );
    ws.deploy("d1", &s1).await;
    let (done, _) = answer(&mut ws, "d1").await;
    assert_eq!(
        done,
        json!({"type": "command_done", "id": "d1", "ok": true, "message": "runs snapshot s1"})
    );
    assert_eq!(reported(&mut ws).await, "s1");
    until_hello(&dir, port, "hello from s1").await;
    let secrets = NodeRedSecrets::load_or_create(&dir).unwrap();
    let userdir = dir.join(NODE_RED_DIR).join(USERDIR);
    let files = read_flow_files(&userdir, &secrets.credential).unwrap();
    assert_eq!(files.credentials["cred1"]["password"], "pw-1");
    let kept_path = dir.join(RUNNING_FILE);
    let kept = std::fs::read(&kept_path).unwrap();
    assert_eq!(
        std::fs::metadata(&kept_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!String::from_utf8_lossy(&kept).contains("pw-1"));
    let pid = node_red_pid(&dir).unwrap();
    // Handed over again (the hub lost the answer): it already runs, so the
    // agent says so without loading it again.
    let again = std::time::Instant::now();
    ws.deploy("d1", &s1).await;
    let (done, _) = answer(&mut ws, "d1").await;
    assert_eq!(
        done,
        json!({"type": "command_done", "id": "d1", "ok": true,
               "message": "runs snapshot s1 (it already ran here)"})
    );
    assert!(
        again.elapsed() < Duration::from_secs(2),
        "{:?}",
        again.elapsed()
    );
    assert_eq!(node_red_pid(&dir), Some(pid));

    // Tampered snapshots, each of which would serve other text on /hello.
    let evil = content(hello_flows("evil"));
    let s2 = hub.snapshot(
        "s2",
        &content(hello_flows("from s2")),
        &creds("pw-2"),
        &boxed,
    );
    let tampered: Vec<(&str, SignedSnapshot)> = vec![
        (
            "content changed",
            SignedSnapshot {
                content: evil.to_canonical().unwrap(),
                ..s2.clone()
            },
        ),
        (
            "statement changed",
            SignedSnapshot {
                statement: s2.statement.replace("\"s2\"", "\"s9\""),
                ..s2.clone()
            },
        ),
        (
            "signed by another key",
            sign_snapshot(
                &HubSigningKey::generate(),
                "s2",
                TEAM_ID,
                &evil,
                &creds("x"),
                &boxed,
            ),
        ),
        (
            "credentials sealed for another agent",
            hub.snapshot(
                "s2",
                &content(hello_flows("from s2")),
                &creds("pw-2"),
                &AgentBoxKey::generate().public_base64(),
            ),
        ),
        (
            "credentials of another snapshot",
            SignedSnapshot {
                credentials: s1.credentials.clone(),
                ..s2.clone()
            },
        ),
        (
            "another team's",
            sign_snapshot(&hub.signer, "s2", "team_other", &evil, &creds("x"), &boxed),
        ),
    ];
    for (i, (what, snapshot)) in tampered.iter().enumerate() {
        let id = format!("t{i}");
        ws.deploy(&id, snapshot).await;
        let (done, _) = answer(&mut ws, &id).await;
        assert_refused(&done);
        assert_eq!(reported(&mut ws).await, "s1", "after {what}");
    }
    until_hello(&dir, port, "hello from s1").await;
    assert_eq!(node_red_pid(&dir), Some(pid), "Node-RED was not touched");
    assert_eq!(
        std::fs::read(&kept_path).unwrap(),
        kept,
        "the kept file too"
    );
    // s2 itself was fine all along.
    ws.deploy("d2", &s2).await;
    assert_eq!(answer(&mut ws, "d2").await.0["ok"], true);
    until_hello(&dir, port, "from s2").await;

    // The agent restarts: it reports s2 from its first heartbeat, and
    // Node-RED, started afresh, serves it.
    running.stop();
    ws.drain().await;
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);
    let mut running = RunningAgent::start_with(Agent::load(&dir).unwrap(), options(), None);
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;
    assert_eq!(reported(&mut ws).await, "s2");
    until_reported(&mut ws, "running").await;
    until_hello(&dir, port, "from s2").await;
    running.stop();
    ws.drain().await;
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_fails_its_health_check_is_rolled_back() {
    let install = tokio::task::spawn_blocking(install).await.unwrap();
    let mut hub = FakeHub::start().await;
    let (_, tmp) = hub.enrolled_agent();
    let dir = tmp.path().to_path_buf();
    let port = free_port();
    let agent = configure(&dir, &install, port);
    let public = agent.key.public_key();
    let boxed = box_public(&agent);
    let mut running = RunningAgent::start_with(agent, options(), None);
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;
    until_reported(&mut ws, "running").await;

    let s1 = hub.snapshot("s1", &content(hello_flows("v1")), &creds("pw-1"), &boxed);
    ws.deploy("d1", &s1).await;
    assert_eq!(answer(&mut ws, "d1").await.0["ok"], true);
    until_hello(&dir, port, "v1").await;
    let pid = node_red_pid(&dir).unwrap();

    // A node type Node-RED does not have: it takes the deploy, then runs
    // nothing at all. Rolled back through the deploy API, no restart.
    let mut flows = hello_flows("v2");
    flows.push(json!({"id": "bad1", "type": "no-such-node", "z": "tab1", "wires": []}));
    let s2 = hub.snapshot("s2", &content(flows), &creds("pw-2"), &boxed);
    ws.deploy("d2", &s2).await;
    let (done, _) = answer(&mut ws, "d2").await;
    assert_eq!(done["ok"], false, "{done}");
    let message = done["message"].as_str().unwrap();
    assert!(message.contains("rolled back to snapshot s1"), "{message}");
    assert!(message.contains("no-such-node"), "{message}");
    until_hello(&dir, port, "v1").await;
    assert_eq!(reported(&mut ws).await, "s1");
    assert_eq!(node_red_pid(&dir), Some(pid));
    let secrets = NodeRedSecrets::load_or_create(&dir).unwrap();
    let userdir = dir.join(NODE_RED_DIR).join(USERDIR);
    let files = read_flow_files(&userdir, &secrets.credential).unwrap();
    assert_eq!(
        files.credentials["cred1"]["password"], "pw-1",
        "s1's credentials are back"
    );

    // A function whose start-up code never returns: Node-RED's event loop
    // is blocked for good and it stops answering. Rolled back by a restart
    // on s1's flows; heartbeats went on meanwhile.
    let mut flows = hello_flows("v3");
    flows.push(
        json!({"id": "hang1", "type": "function", "z": "tab1", "name": "hang",
        "func": "return msg;", "outputs": 1, "timeout": 0, "noerr": 0,
        "initialize": "while (true) {}", "finalize": "", "libs": [], "wires": [[]]}),
    );
    let s3 = hub.snapshot("s3", &content(flows), &creds("pw-3"), &boxed);
    ws.deploy("d3", &s3).await;
    let (done, beats) = answer(&mut ws, "d3").await;
    assert_eq!(done["ok"], false, "{done}");
    let message = done["message"].as_str().unwrap();
    assert!(message.contains("rolled back to snapshot s1"), "{message}");
    assert!(beats >= 2, "heartbeats went on during the deploy ({beats})");
    until_hello(&dir, port, "v1").await;
    let restarted = node_red_pid(&dir).unwrap();
    assert_ne!(restarted, pid, "the hung Node-RED was replaced");
    assert!(!alive(pid));
    assert_eq!(reported(&mut ws).await, "s1");

    // A module this Node-RED lacks: refused before anything changes. A
    // module unresolved when the snapshot was taken is not asked for.
    let mut needs = content(hello_flows("v4"));
    needs
        .modules
        .insert("node-red-contrib-nope".into(), "1.0.0".into());
    needs
        .modules
        .insert("node-red-contrib-old".into(), "unresolved:^1.0.0".into());
    let s4 = hub.snapshot("s4", &needs, &creds("pw-4"), &boxed);
    ws.deploy("d4", &s4).await;
    let (done, _) = answer(&mut ws, "d4").await;
    assert_refused(&done);
    let message = done["message"].as_str().unwrap();
    assert!(message.contains("node-red-contrib-nope@1.0.0"), "{message}");
    assert!(!message.contains("node-red-contrib-old"), "{message}");
    until_hello(&dir, port, "v1").await;
    assert_eq!(node_red_pid(&dir), Some(restarted));

    // And a good one still runs after all that.
    let s5 = hub.snapshot("s5", &content(hello_flows("v5")), &creds("pw-5"), &boxed);
    ws.deploy("d5", &s5).await;
    assert_eq!(answer(&mut ws, "d5").await.0["ok"], true);
    until_hello(&dir, port, "v5").await;
    assert_eq!(reported(&mut ws).await, "s5");
    running.stop();
    ws.drain().await;
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);
}

#[tokio::test]
async fn a_simulated_agent_verifies_records_and_distrusts_an_edited_kept_file() {
    let mut hub = FakeHub::start().await;
    let (agent, tmp) = hub.enrolled_agent();
    let dir = tmp.path().to_path_buf();
    let public = agent.key.public_key();
    let boxed = box_public(&agent);
    let start = |agent: Agent| RunningAgent::start_with(agent, quick(), Some(Arc::new(RecordOnly)));
    let mut running = start(agent);
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;

    let s1 = hub.snapshot("s1", &content(hello_flows("a")), &creds("pw"), &boxed);
    ws.deploy("d1", &s1).await;
    let (done, _) = answer(&mut ws, "d1").await;
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(reported(&mut ws).await, "s1");
    // Verified in full all the same.
    let forged = sign_snapshot(
        &HubSigningKey::generate(),
        "s2",
        TEAM_ID,
        &content(hello_flows("b")),
        &creds("pw"),
        &boxed,
    );
    ws.deploy("d2", &forged).await;
    assert_refused(&answer(&mut ws, "d2").await.0);
    assert_eq!(reported(&mut ws).await, "s1");
    // A deploy inside a command is not how snapshots arrive.
    ws.send_json(
        json!({"type": "command", "id": "c1", "command": {"kind": "deploy", "snapshot_id": "s1"}}),
    )
    .await;
    assert_eq!(
        answer(&mut ws, "c1").await.0,
        json!({"type": "command_done", "id": "c1", "ok": false, "message": "deploy arrives as a deploy message"})
    );
    running.stop();
    ws.drain().await;
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);

    // Restarted: still s1.
    let mut running = start(Agent::load(&dir).unwrap());
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;
    assert_eq!(reported(&mut ws).await, "s1");
    running.stop();
    ws.drain().await;
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);

    // The kept file edited (other flows under s1's signature): not trusted.
    let path = dir.join(RUNNING_FILE);
    let mut kept: SignedSnapshot = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    kept.content = content(hello_flows("edited")).to_canonical().unwrap();
    std::fs::write(&path, serde_json::to_vec(&kept).unwrap()).unwrap();
    let mut running = start(Agent::load(&dir).unwrap());
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;
    assert_eq!(reported(&mut ws).await, Value::Null);
    running.stop();
    ws.drain().await;
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);

    // Without its box key (enrolled by an older agent) nothing opens.
    std::fs::remove_file(dir.join(BOX_KEY_FILE)).unwrap();
    let mut running = start(Agent::load(&dir).unwrap());
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;
    ws.deploy("d3", &s1).await;
    let (done, _) = answer(&mut ws, "d3").await;
    assert_refused(&done);
    assert!(
        done["message"].as_str().unwrap().contains("enrol it again"),
        "{done}"
    );
    running.stop();
    ws.drain().await;
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);
}

#[tokio::test]
async fn an_agent_without_node_red_runs_no_snapshot() {
    let mut hub = FakeHub::start().await;
    let (agent, _tmp) = hub.enrolled_agent();
    let public = agent.key.public_key();
    let boxed = box_public(&agent);
    let mut running = RunningAgent::start(agent);
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, 1).await;
    let s1 = hub.snapshot("s1", &content(hello_flows("a")), &creds("pw"), &boxed);
    ws.deploy("d1", &s1).await;
    assert_eq!(
        answer(&mut ws, "d1").await.0,
        json!({"type": "command_done", "id": "d1", "ok": false, "message": "this agent runs no Node-RED"})
    );
    assert_eq!(reported(&mut ws).await, Value::Null);
    running.stop();
    ws.drain().await;
    assert_eq!(running.outcome().await, RunOutcome::Shutdown);
}

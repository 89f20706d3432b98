//! What the snapshot, pipeline and git tests share: a server that runs
//! real Node-RED instances, deploys from the editor as a browser makes
//! them, and waiting for snapshots.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

pub async fn instance_server() -> TestServer {
    instance_server_with(|_| {}).await
}

/// The same, with a change to its configuration.
pub async fn instance_server_with(
    tweak: impl FnOnce(&mut redwall_server::config::Config),
) -> TestServer {
    let install = redwall_runtime::testing::shared_install().expect("Node-RED installs from npm");
    let base = redwall_runtime::testing::free_port();
    TestServer::start_with(Backend::Sqlite, move |c| {
        c.instances.node_red_path = Some(install.package_dir.clone());
        c.instances.node = install.node.clone();
        c.instances.port_min = base;
        c.instances.port_max = base.saturating_add(9);
        c.instances.uid_base = 100_000 + u32::from(base);
        tweak(c);
    })
    .await
    .expect("sqlite server")
}

pub async fn create_running(c: &Client, team: &str, name: &str) {
    let r = c
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": name}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    wait_running(c, team, name).await;
}

/// Waits until the instance runs.
pub async fn wait_running(c: &Client, team: &str, name: &str) {
    for _ in 0..600 {
        let r = c
            .get(&format!("/api/v1/teams/{team}/instances/{name}"))
            .await;
        match r.body["status"]["state"].as_str() {
            Some("running") => return,
            Some("crash_loop") => panic!("instance gave up: {}", r.body),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("instance did not start in 60 s");
}

/// A flow with function code and a config node holding credentials (the
/// mqtt-broker node registers `user` and `password` as credentials).
pub fn flows(greeting: &str) -> Value {
    json!([
        {"id": "t1", "type": "tab", "label": "Main"},
        {"id": "h1", "type": "http in", "z": "t1", "url": "/hello", "method": "get", "upload": false, "swaggerDoc": "", "wires": [["f1"]]},
        {"id": "f1", "type": "function", "z": "t1", "name": "greet", "func": format!("const who = 'world';\nmsg.payload = '{greeting}, ' + who;\nreturn msg;"), "outputs": 1, "wires": [["r1"]]},
        {"id": "r1", "type": "http response", "z": "t1", "statusCode": "", "headers": {}, "wires": []},
        {"id": "b1", "type": "mqtt-broker", "name": "plant", "broker": "127.0.0.1", "port": "1", "autoConnect": false, "credentials": {"user": "plc", "password": format!("pw-{greeting}")}}
    ])
}

/// Deploys through the editor, on the instance's own host name, as a
/// browser would.
pub async fn deploy_from_editor(s: &TestServer, c: &Client, name: &str, flows: Value) {
    let mut editor = on_host(s, c, name).await;
    let host = editor
        .headers
        .iter()
        .find(|(k, _)| *k == "host")
        .map(|(_, v)| v.clone())
        .unwrap();
    editor.headers.push(("origin", format!("http://{host}")));
    editor
        .headers
        .push(("node-red-deployment-type", "full".into()));
    let r = editor.post("/editor/flows", flows).await;
    assert!(r.status == 200 || r.status == 204, "deploy: {}", r.text);
}

/// Waits until the instance has `count` snapshots; returns them, newest first.
pub async fn snapshots(c: &Client, team: &str, name: &str, count: usize) -> Vec<Value> {
    let mut last = Value::Null;
    for _ in 0..300 {
        let r = c
            .get(&format!("/api/v1/teams/{team}/snapshots?instance={name}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body.as_array().unwrap().len() >= count {
            return r.body.as_array().unwrap().clone();
        }
        last = r.body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {count} snapshots, have {last}");
}

/// The flows the instance serves now, through its editor API.
pub async fn live_flows(s: &TestServer, c: &Client, name: &str) -> Value {
    let editor = on_host(s, c, name).await;
    let r = editor.get("/editor/flows").await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

pub fn running_snapshot(v: &Value) -> Option<String> {
    v["running_snapshot"].as_str().map(str::to_string)
}

//! An isolated instance's egress as an Owner sees it: the outside world is
//! reachable by default, the host's metadata address is not, and an egress
//! rule opens exactly what it names, at once and across restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use common::*;
use redwall_runtime::testing;
use redwall_runtime::{EgressProtocol, EgressRule, NetworkMode, SandboxIdentity};
use serde_json::{json, Value};

const PROBE: &str = r#"
const T = __TARGETS__;
const p = Buffer.constructor('return process')();
const net = p.getBuiltinModule ? p.getBuiltinModule('net') : p.mainModule.require('net');
function greet(host, port) {
    return new Promise(res => {
        let done = false, data = '';
        const s = net.connect({ host, port });
        const finish = r => { if (!done) { done = true; clearTimeout(t); s.destroy(); res(r); } };
        const t = setTimeout(() => finish({ ok: false, code: 'TIMEOUT' }), 3000);
        s.on('data', d => { data += d; if (data.includes('\n')) finish({ ok: true, value: data.trim() }); });
        s.once('error', e => finish({ ok: false, code: e.code || String(e) }));
    });
}
(async () => {
    msg.payload = {
        outside: await greet(T.outside, 80),
        metadata: await greet('169.254.169.254', 80),
        metadataOtherPort: await greet('169.254.169.254', 81),
        host: await greet(T.host, T.hostPort),
    };
    node.send(msg);
})();
return null;
"#;

async fn probe(spec: &redwall_runtime::InstanceSpec) -> Value {
    let r = testing::call_endpoint(spec, "GET", "/probe", Some("owner"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_rule_opens_what_it_names_live_and_across_restarts() {
    let outside = testing::OutsideWorld::new().unwrap();
    // A service of the host on all its addresses; the instance tries the
    // host's address on the outside world's link (not loopback).
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in host_service.incoming().flatten() {
            use std::io::Write;
            let _ = writeln!(conn, "{}", testing::OUTSIDE_GREETING);
        }
    });
    let h = Harness::new();
    let mut spec = h.spec(
        "egress",
        SandboxIdentity::OsUser {
            uid: 61002,
            gid: 61002,
        },
    );
    spec.network = NetworkMode::Isolated { egress: vec![] };
    h.start(&spec).await;
    let func = PROBE.replace(
        "__TARGETS__",
        &json!({"outside": outside.address.to_string(), "host": "198.18.7.1", "hostPort": host_port})
            .to_string(),
    );
    let r = testing::deploy_flows(&spec, "owner", &endpoint_flow("/probe", &func))
        .await
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    testing::wait_for_endpoint(&spec, "/probe").await.unwrap();

    let greeting = json!({"ok": true, "value": testing::OUTSIDE_GREETING});
    let out = probe(&spec).await;
    assert_eq!(out["outside"], greeting, "{out:#}");
    assert_eq!(out["metadata"]["ok"], false, "{out:#}");
    assert_eq!(out["host"]["ok"], false, "{out:#}");

    let to_host = EgressRule {
        network: "198.18.7.1".parse().unwrap(),
        prefix_len: 32,
        protocol: EgressProtocol::Tcp,
        ports: Some((host_port, host_port)),
    };
    let rule = EgressRule {
        network: "169.254.169.254".parse().unwrap(),
        prefix_len: 32,
        protocol: EgressProtocol::Tcp,
        ports: Some((80, 80)),
    };
    h.sup
        .set_egress("egress", vec![rule, to_host])
        .await
        .unwrap();
    let out = probe(&spec).await;
    assert_eq!(out["metadata"], greeting, "{out:#}");
    assert_eq!(out["host"], greeting, "{out:#}");
    // Only the port the rule names.
    assert_eq!(out["metadataOtherPort"]["ok"], false, "{out:#}");
    assert_ne!(out["metadataOtherPort"]["code"], "ECONNREFUSED", "{out:#}");

    h.sup.restart("egress").await.unwrap();
    h.sup.wait_until_running("egress", BOOT).await.unwrap();
    testing::wait_for_endpoint(&spec, "/probe").await.unwrap();
    assert_eq!(probe(&spec).await["metadata"], greeting);

    h.sup.set_egress("egress", vec![]).await.unwrap();
    let out = probe(&spec).await;
    assert_eq!(out["metadata"]["ok"], false, "{out:#}");
    assert_eq!(out["host"]["ok"], false, "{out:#}");
    assert_eq!(out["outside"], greeting, "{out:#}");
    h.sup.stop("egress").await.unwrap();
}

/// What the host's link and address watchers see (a browser's network
/// change notifier among them): `ip monitor` lines while `during` runs.
async fn host_link_changes_during<F: std::future::Future<Output = ()>>(during: F) -> String {
    let mut monitor = tokio::process::Command::new("ip")
        .args(["-o", "monitor", "link", "address"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Let the monitor subscribe before anything happens.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    during.await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    monitor.start_kill().unwrap();
    let out = monitor.wait_with_output().await.unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Chromium on the same host aborted its requests in flight with
/// ERR_NETWORK_CHANGED whenever an isolated instance started or stopped,
/// because each added and removed a link on the host. Instances' links now
/// live in Redwall's own namespace; the host's stay as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_and_stopping_isolated_instances_leaves_the_hosts_links_alone() {
    let h = Harness::new();
    // Made once, as Redwall does when it starts.
    redwall_runtime::prepare_network().unwrap();
    let mut spec = h.spec("quiet", SandboxIdentity::Inherit);
    spec.network = NetworkMode::Isolated { egress: vec![] };
    let changes = host_link_changes_during(async {
        h.start(&spec).await;
        // Only the instance's own address is routed to Redwall's namespace:
        // a route for all of 10.254.0.0/15 took this machine's DNS resolver
        // (10.255.255.53) away from the host.
        let route = std::process::Command::new("ip")
            .args(["route", "get", "10.255.255.53"])
            .output()
            .unwrap();
        let route = String::from_utf8_lossy(&route.stdout);
        assert!(!route.contains("rwhub"), "{route}");
        h.sup.restart("quiet").await.unwrap();
        h.sup.wait_until_running("quiet", BOOT).await.unwrap();
        h.sup.stop("quiet").await.unwrap();
    })
    .await;
    // Other tests add links of their own meanwhile (the outside world's);
    // only the instance's may not show.
    let ours: Vec<&str> = changes
        .lines()
        .filter(|l| l.contains("rwh") || l.contains("rwi") || l.contains("10.254."))
        .collect();
    assert!(ours.is_empty(), "the host's links changed:\n{changes}");
}

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
        &json!({"outside": outside.address.to_string()}).to_string(),
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

    let rule = EgressRule {
        network: "169.254.169.254".parse().unwrap(),
        prefix_len: 32,
        protocol: EgressProtocol::Tcp,
        ports: Some((80, 80)),
    };
    h.sup.set_egress("egress", vec![rule]).await.unwrap();
    let out = probe(&spec).await;
    assert_eq!(out["metadata"], greeting, "{out:#}");
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
    assert_eq!(out["outside"], greeting, "{out:#}");
    h.sup.stop("egress").await.unwrap();
}

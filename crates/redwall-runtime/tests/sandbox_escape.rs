//! A user who can deploy flows can run arbitrary code in the instance (the
//! function node's `vm` is no boundary). What that code can reach is the
//! sandbox's job: not Redwall's database or master key, not another
//! instance's files, no port but its own, no writes outside its userdir.
//! Landlock alone (no own uid) must already refuse all of it; reading
//! Redwall's /proc/<pid>/environ is refused because the instance runs without
//! capabilities and the supervisor makes Redwall non-dumpable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use redwall_runtime::testing;
use redwall_runtime::{landlock_abi, SandboxIdentity};
use serde_json::{json, Value};

const ESCAPE: &str = r#"
const T = __TARGETS__;
const p = Buffer.constructor('return process')();
const fs = p.getBuiltinModule ? p.getBuiltinModule('fs') : p.mainModule.require('fs');
const net = p.getBuiltinModule ? p.getBuiltinModule('net') : p.mainModule.require('net');
function attempt(f) {
    try { return { ok: true, value: String(f()).slice(0, 80) }; }
    catch (e) { return { ok: false, code: e.code || String(e) }; }
}
const out = {
    readDb: attempt(() => fs.readFileSync(T.db, 'utf8')),
    readMasterKey: attempt(() => fs.readFileSync(T.key, 'utf8')),
    readOtherInstanceFlows: attempt(() => fs.readFileSync(T.otherFlows, 'utf8')),
    listDataDir: attempt(() => fs.readdirSync(T.dataDir).join(',')),
    writeInstanceDir: attempt(() => fs.writeFileSync(T.outside, 'x')),
    writeTmp: attempt(() => fs.writeFileSync('/tmp/redwall-escape-' + T.id, 'x')),
    rewriteSettings: attempt(() => fs.appendFileSync(T.settings, '\n// pwned')),
    readParentEnviron: attempt(() => fs.readFileSync('/proc/' + p.ppid + '/environ', 'utf8')),
    signalParent: attempt(() => p.kill(p.ppid, 0)),
    ownUserdir: attempt(() => { fs.writeFileSync(T.own, 'mine'); return fs.readFileSync(T.own, 'utf8'); }),
};
const srv = net.createServer();
srv.once('error', e => { out.listenOtherPort = { ok: false, code: e.code }; msg.payload = out; node.send(msg); });
srv.listen(T.port, '127.0.0.1', () => { out.listenOtherPort = { ok: true }; srv.close(); msg.payload = out; node.send(msg); });
return null;
"#;

async fn escape_attempts_are_refused(identity: SandboxIdentity, id: &str) {
    let abi = landlock_abi();
    assert!(
        abi.unwrap_or(0) >= 6,
        "Landlock ABI >= 6 is required for this test, kernel offers {abi:?}"
    );
    let h = Harness::new();
    let data = h.data.path();
    for (name, content) in [
        ("redwall.db", "SQLITE-SECRET-ROWS"),
        ("master.key", "MASTER-KEY-BYTES"),
    ] {
        std::fs::write(data.join(name), content).unwrap();
        std::fs::set_permissions(data.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Another instance's files, world-readable on purpose: only the sandbox
    // may stand in the way.
    let other = h.instances().join("other/userdir");
    std::fs::create_dir_all(&other).unwrap();
    for dir in [h.instances(), h.instances().join("other"), other.clone()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(other.join("flows.json"), "OTHER-INSTANCE-FLOWS").unwrap();
    std::fs::set_permissions(
        other.join("flows.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let spec = h.spec(id, identity);
    h.start(&spec).await;
    let report = h.sup.sandbox_report(id).unwrap();
    assert!(
        report.landlock_enforced && report.bind_restricted && report.ipc_scoped,
        "{report:?}"
    );
    assert_eq!(
        report.os_user,
        matches!(identity, SandboxIdentity::OsUser { .. })
    );

    let targets = json!({
        "id": id,
        "db": data.join("redwall.db"),
        "key": data.join("master.key"),
        "otherFlows": other.join("flows.json"),
        "dataDir": data,
        "outside": spec.dir.join("escaped.txt"),
        "settings": spec.dir.join("settings.js"),
        "own": spec.dir.join("userdir/mine.txt"),
        "port": testing::free_port(),
    });
    let func = ESCAPE.replace("__TARGETS__", &targets.to_string());
    let r = testing::deploy_flows(&spec, "mallory", &endpoint_flow("/escape", &func))
        .await
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let r = testing::wait_for_endpoint(&spec, "/escape").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let out: Value = r.json().unwrap();

    assert_eq!(
        out["ownUserdir"],
        json!({"ok": true, "value": "mine"}),
        "{out:#}"
    );
    for attempt in [
        "readDb",
        "readMasterKey",
        "readOtherInstanceFlows",
        "listDataDir",
        "writeInstanceDir",
        "writeTmp",
        "rewriteSettings",
        "readParentEnviron",
        "signalParent",
        "listenOtherPort",
    ] {
        let code = out[attempt]["code"].as_str().unwrap_or_default();
        assert!(
            out[attempt]["ok"] == false && (code == "EACCES" || code == "EPERM"),
            "{attempt} was not refused: {}\n{out:#}",
            out[attempt]
        );
    }
    for secret in [
        "SQLITE-SECRET-ROWS",
        "MASTER-KEY-BYTES",
        "OTHER-INSTANCE-FLOWS",
    ] {
        assert!(!r.text().contains(secret));
    }
    assert!(!spec.dir.join("escaped.txt").exists());
    assert!(!std::path::Path::new(&format!("/tmp/redwall-escape-{id}")).exists());
    let settings = std::fs::read_to_string(spec.dir.join("settings.js")).unwrap();
    assert!(!settings.contains("pwned"));
    h.sup.stop(id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_under_its_own_uid_cannot_escape() {
    escape_attempts_are_refused(
        SandboxIdentity::OsUser {
            uid: 61001,
            gid: 61001,
        },
        "esc-uid",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landlock_alone_stops_an_instance_running_as_root() {
    escape_attempts_are_refused(SandboxIdentity::Inherit, "esc-landlock").await;
}

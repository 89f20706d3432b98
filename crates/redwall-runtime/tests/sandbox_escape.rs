//! A user who can deploy flows can run arbitrary code in the instance (the
//! function node's `vm` is no boundary). What that code can reach is the
//! sandbox's job: not Redwall's database or master key, not another
//! instance's files, no port but its own, no writes outside its userdir.
//! Landlock alone (no own uid) must already refuse all of it; reading
//! Redwall's /proc/<pid>/environ is refused because the instance runs without
//! capabilities and the supervisor makes Redwall non-dumpable.
//!
//! The network is the sandbox's job too: by default an instance reaches no
//! service of the host (loopback TCP and UDP, Unix sockets such as
//! PostgreSQL's, the metadata address) and sees no other process in `/proc`,
//! while the outside world stays reachable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use redwall_runtime::testing;
use redwall_runtime::{landlock_abi, NetworkMode, SandboxIdentity};
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
    readParentEnviron: attempt(() => fs.readFileSync('/proc/' + T.redwallPid + '/environ', 'utf8')),
    signalParent: attempt(() => p.kill(T.redwallPid, 0)),
    ownUserdir: attempt(() => { fs.writeFileSync(T.own, 'mine'); return fs.readFileSync(T.own, 'utf8'); }),
};
const dgram = p.getBuiltinModule ? p.getBuiltinModule('dgram') : p.mainModule.require('dgram');
function connect(opts, expectGreeting) {
    return new Promise(res => {
        let done = false, data = '';
        const s = net.connect(opts);
        const finish = r => { if (!done) { done = true; clearTimeout(t); s.destroy(); res(r); } };
        const t = setTimeout(() => finish({ ok: false, code: 'TIMEOUT' }), 3000);
        s.once('connect', () => { if (!expectGreeting) finish({ ok: true }); });
        s.on('data', d => { data += d; if (data.includes('\n')) finish({ ok: true, value: data.trim() }); });
        s.once('error', e => finish({ ok: false, code: e.code || String(e) }));
    });
}
function listen() {
    return new Promise(res => {
        const srv = net.createServer();
        srv.once('error', e => res({ ok: false, code: e.code }));
        srv.listen(T.port, '127.0.0.1', () => { srv.close(); res({ ok: true }); });
    });
}
function udp() {
    return new Promise(res => {
        const s = dgram.createSocket('udp4');
        s.send('escaped', T.udpPort, '127.0.0.1', e => { s.close(); res(e ? { ok: false, code: e.code } : { ok: true }); });
    });
}
function processes() {
    try {
        return { ok: true, value: fs.readdirSync('/proc').filter(n => /^[0-9]+$/.test(n)).map(n => {
            try { return n + ':' + fs.readFileSync('/proc/' + n + '/cmdline', 'utf8').split('\0').join(' '); }
            catch (e) { return n + ':?'; }
        }).join('\n') };
    } catch (e) { return { ok: false, code: e.code || String(e) }; }
}
(async () => {
    out.listenOtherPort = await listen();
    out.tcpPostgres = await connect({ host: '127.0.0.1', port: 5432 });
    out.tcpHostService = await connect({ host: '127.0.0.1', port: T.hostPort });
    out.unixPostgres = await connect({ path: '/var/run/postgresql/.s.PGSQL.5432' });
    out.metadata = await connect({ host: '169.254.169.254', port: 80 }, true);
    out.outside = await connect({ host: T.outsideAddr, port: 80 }, true);
    out.udpLoopback = await udp();
    out.readInitCmdline = attempt(() => fs.readFileSync('/proc/1/cmdline', 'utf8').split('\0').join(' '));
    out.processes = processes();
    msg.payload = out;
    node.send(msg);
})();
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

    let outside = testing::OutsideWorld::new().unwrap();
    // Stand-ins for Redwall's own port and another loopback service.
    let host_service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp_service = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_service
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    assert!(
        std::path::Path::new("/var/run/postgresql/.s.PGSQL.5432").exists(),
        "this test needs PostgreSQL's Unix socket"
    );

    let mut spec = h.spec(id, identity);
    spec.network = NetworkMode::Isolated { egress: vec![] };
    h.start(&spec).await;
    let report = h.sup.sandbox_report(id).unwrap();
    assert!(
        report.landlock_enforced
            && report.bind_restricted
            && report.ipc_scoped
            && report.network_isolated
            && report.namespaces,
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
        // Redwall's pid as Redwall sees it; in the instance's PID namespace
        // it names nothing.
        "redwallPid": std::process::id(),
        "hostPort": host_service.local_addr().unwrap().port(),
        "udpPort": udp_service.local_addr().unwrap().port(),
        "outsideAddr": outside.address.to_string(),
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
        // ENOENT: the data directory lies under /tmp, which the instance's
        // mount namespace replaces with an empty one. ESRCH: Redwall is
        // outside the instance's PID namespace.
        let code = out[attempt]["code"].as_str().unwrap_or_default();
        assert!(
            out[attempt]["ok"] == false && ["EACCES", "EPERM", "ENOENT", "ESRCH"].contains(&code),
            "{attempt} was not refused: {}\n{out:#}",
            out[attempt]
        );
    }
    // The outside world answers; nothing of the host does.
    assert_eq!(
        out["outside"],
        json!({"ok": true, "value": testing::OUTSIDE_GREETING}),
        "{out:#}"
    );
    for attempt in ["tcpPostgres", "tcpHostService", "unixPostgres", "metadata"] {
        assert!(
            out[attempt]["ok"] == false,
            "{attempt} was not refused: {}\n{out:#}",
            out[attempt]
        );
    }
    let mut buf = [0u8; 64];
    assert!(
        udp_service.recv_from(&mut buf).is_err(),
        "a datagram from the instance reached a host loopback port\n{out:#}"
    );
    // The instance sees its own processes only: pid 1 is its Node-RED.
    let init = out["readInitCmdline"]["value"].as_str().unwrap_or_default();
    assert!(
        out["readInitCmdline"]["ok"] == false || init.contains("node-red"),
        "/proc/1 is not the instance's own process: {init}\n{out:#}"
    );
    let processes = out["processes"]["value"].as_str().unwrap_or_default();
    assert!(
        !processes.contains("postgres"),
        "the instance lists the host's processes:\n{processes}"
    );
    for line in processes.lines() {
        assert!(
            line.contains("node-red"),
            "a foreign process in /proc: {line}\n{processes}"
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

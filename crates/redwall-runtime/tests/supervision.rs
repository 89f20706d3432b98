//! Supervision as an operator sees it: a killed instance comes back, one
//! that cannot start ends in a crash loop with a reason, ports and instance
//! ids are never double-booked, and a Redwall killed with its instances
//! running leaves nothing behind for the next one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use redwall_runtime::testing::{self, RecordingReporter};
use redwall_runtime::{InstanceStatus, NetworkMode, RuntimeError, SandboxIdentity, Supervisor};
use serde_json::json;

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

fn running_pid(status: &InstanceStatus) -> u32 {
    match status {
        InstanceStatus::Running { pid, .. } => *pid,
        other => panic!("not running: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_restarted() {
    let h = Harness::new();
    let spec = h.spec("phoenix", SandboxIdentity::Inherit);
    h.start(&spec).await;
    let first = running_pid(&h.sup.status("phoenix"));
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let crashed = h
        .sup
        .wait_for_status("phoenix", BOOT, |s| {
            matches!(s, InstanceStatus::Crashed { .. })
        })
        .await
        .unwrap();
    match crashed {
        InstanceStatus::Crashed {
            reason, restarts, ..
        } => {
            assert!(reason.contains("signal 9"), "{reason}");
            assert_eq!(restarts, 1);
        }
        other => panic!("{other:?}"),
    }
    let second = running_pid(&h.sup.wait_until_running("phoenix", BOOT).await.unwrap());
    assert_ne!(first, second);
    assert!(!alive(first));
    // The reporter saw the whole story.
    let states: Vec<String> = h
        .reporter
        .statuses()
        .into_iter()
        .map(|(_, s)| {
            serde_json::to_value(s).unwrap()["state"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        states,
        ["starting", "running", "crashed", "starting", "running"]
    );
    h.sup.stop("phoenix").await.unwrap();
    assert_eq!(h.sup.status("phoenix"), InstanceStatus::Stopped);
    assert!(!alive(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_cannot_start_ends_in_a_crash_loop_with_the_reason() {
    let h = Harness::new();
    let spec = h.spec("doomed", SandboxIdentity::Inherit);
    h.sup.start(spec.clone(), &h.install).await.unwrap();
    // Someone grabs the port before Node-RED binds it, every time.
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", spec.port)).unwrap();
    let status = h
        .sup
        .wait_for_status("doomed", BOOT, |s| {
            matches!(s, InstanceStatus::CrashLoop { .. })
        })
        .await
        .unwrap();
    let InstanceStatus::CrashLoop { reason } = status else {
        unreachable!()
    };
    assert!(reason.contains("in use"), "{reason}");
    let crashes = h
        .reporter
        .statuses()
        .iter()
        .filter(|(_, s)| matches!(s, InstanceStatus::Crashed { .. }))
        .count();
    assert_eq!(crashes, 4, "the fifth crash gives up");
    // It can be started again once the cause is gone.
    drop(_squatter);
    h.start(&spec).await;
    h.sup.stop("doomed").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_and_ids_are_not_double_booked() {
    let h = Harness::new();
    let spec = h.spec("once", SandboxIdentity::Inherit);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", spec.port)).unwrap();
    let err = h.sup.start(spec.clone(), &h.install).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::PortInUse(p) if p == spec.port),
        "{err}"
    );
    drop(squatter);
    h.start(&spec).await;
    let err = h.sup.start(spec.clone(), &h.install).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::AlreadyRunning(ref id) if id == "once"),
        "{err}"
    );
    assert!(h.sup.status("once").is_running());
    // Logs were captured. Node-RED answers its readiness probe before it
    // prints "Started flows", and the line reaches the buffer through the
    // output pump: wait for it (CI once looked too early).
    let deadline = std::time::Instant::now() + BOOT;
    while !h
        .sup
        .logs("once", 1000)
        .iter()
        .any(|l| l.text.contains("Started flows"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no \"Started flows\" in the captured log: {:?}",
            h.sup.logs("once", 1000)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    h.sup.restart("once").await.unwrap();
    h.sup.wait_until_running("once", BOOT).await.unwrap();
    h.sup.stop_all().await;
    assert_eq!(h.sup.status("once"), InstanceStatus::Stopped);
}

/// A start whose caller gives up half-way (an HTTP client that disconnects
/// drops its request's future) once left the instance claimed with no
/// runner: every later stop waited forever (an API fuzz run hung on one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_abandoned_by_its_caller_can_still_be_stopped() {
    let h = Harness::new();
    let spec = h.spec("abandoned", SandboxIdentity::Inherit);
    // A zero timeout polls the start once, up to its first wait, then drops
    // it. On a loaded machine the spawn (on its own task) can finish before
    // that first poll, and then nothing was abandoned: try again.
    let mut abandoned = false;
    for _ in 0..20 {
        match tokio::time::timeout(Duration::ZERO, h.sup.start(spec.clone(), &h.install)).await {
            Err(_) => {
                abandoned = true;
                break;
            }
            Ok(finished) => {
                eprintln!("the start finished at its first poll ({finished:?}); again");
                let _ = h.sup.stop("abandoned").await;
            }
        }
    }
    assert!(abandoned, "no start was abandoned half-way in 20 tries");
    let stopped = tokio::time::timeout(Duration::from_secs(60), h.sup.stop("abandoned")).await;
    assert!(stopped.is_ok(), "the stop hung");
    stopped.unwrap().unwrap();
    assert_eq!(h.sup.status("abandoned"), InstanceStatus::Stopped);
    // Nothing of it runs, and it starts again normally.
    assert!(std::net::TcpListener::bind(("127.0.0.1", spec.port)).is_ok());
    h.start(&spec).await;
    h.sup.stop("abandoned").await.unwrap();
}

/// Run by `orphans_of_a_killed_supervisor_are_reaped` in a child process:
/// a supervisor that starts an instance (whose flow starts a long `sleep`)
/// and then waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_helper() {
    let Ok(dir) = std::env::var("REDWALL_ORPHAN_HELPER_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let install = testing::shared_install().unwrap();
    let sup = Supervisor::new(dir.join("run"), Arc::new(RecordingReporter::default())).unwrap();
    let mut spec = testing::spec(
        "orphan",
        &dir.join("instances"),
        testing::free_port(),
        SandboxIdentity::Inherit,
    );
    if std::env::var_os("REDWALL_ORPHAN_HELPER_ISOLATED").is_some() {
        spec.network = NetworkMode::Isolated { egress: vec![] };
    }
    sup.start(spec.clone(), &install).await.unwrap();
    let status = sup.wait_until_running("orphan", BOOT).await.unwrap();
    let flows = json!([
        {"id": "tab1", "type": "tab", "label": "t"},
        {"id": "inj", "type": "inject", "z": "tab1", "once": true, "onceDelay": 0.1,
         "repeat": "", "payload": "", "payloadType": "date", "topic": "", "wires": [["ex"]]},
        {"id": "ex", "type": "exec", "z": "tab1", "command": "sleep 300", "addpay": "",
         "append": "", "useSpawn": "true", "timer": "", "winHide": false, "oldrc": false,
         "wires": [[], [], []]}
    ]);
    testing::deploy_flows(&spec, "ops", &flows).await.unwrap();
    println!("READY {} {}", running_pid(&status), spec.port);
    tokio::time::sleep(Duration::from_secs(120)).await;
}

fn group_members(pgrp: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                let f: Vec<&str> = s
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                f.get(2) == Some(&pgrp.to_string().as_str()) && f[0] != "Z"
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_a_killed_supervisor_are_reaped() {
    orphans_are_reaped(false).await;
}

/// An isolated instance also leaves a network namespace, a veth link and an
/// nftables table on the host; the next supervisor removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_a_killed_supervisor_are_reaped_with_their_network() {
    orphans_are_reaped(true).await;
}

fn host_has(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn network_left(port: u16) -> Vec<&'static str> {
    let mut left = Vec::new();
    if std::path::Path::new(&format!("/run/netns/redwall-{port}")).exists() {
        left.push("namespace");
    }
    if host_has(&[
        "ip",
        "-n",
        "redwall-net",
        "link",
        "show",
        &format!("rwh{port}"),
    ]) {
        left.push("link");
    }
    if host_has(&["nft", "list", "table", "inet", &format!("redwall_{port}")]) {
        left.push("nftables table");
    }
    let hub_table = [
        "ip",
        "netns",
        "exec",
        "redwall-net",
        "nft",
        "list",
        "table",
        "inet",
    ];
    if host_has(&[&hub_table[..], &[&format!("redwall_{port}")]].concat()) {
        left.push("the hub's nftables table");
    }
    left
}

async fn orphans_are_reaped(isolated: bool) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut helper = Command::new(std::env::current_exe().unwrap());
    if isolated {
        helper.env("REDWALL_ORPHAN_HELPER_ISOLATED", "1");
    }
    let mut helper = helper
        .args([
            "--exact",
            "orphan_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REDWALL_ORPHAN_HELPER_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = helper.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split_once("READY ").map(|(_, rest)| rest.to_owned()))
    });
    let line = tokio::time::timeout(BOOT, ready)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let parts: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (node_pid, port) = (parts[0], parts[1] as u16);

    // While the helper lives, its supervisor holds the run dir.
    let reporter = Arc::new(RecordingReporter::default());
    let err = Supervisor::new(dir.path().join("run"), reporter.clone()).err();
    assert!(
        matches!(err, Some(RuntimeError::SupervisorLocked { .. })),
        "{err:?}"
    );

    // Wait for the exec node's sleep, then kill the supervisor outright.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while group_members(node_pid).len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        group_members(node_pid).len() >= 2,
        "the flow did not start its sleep"
    );
    helper.kill().unwrap();
    helper.wait().unwrap();
    if isolated {
        assert_eq!(network_left(port).len(), 4, "the network was not set up");
    }

    let sup = Supervisor::new(dir.path().join("run"), reporter).unwrap();
    let reaped = sup.reap_orphans();
    // An isolated instance's processes die with their PID namespace as soon
    // as the supervisor does (Node-RED is its PID 1), so there may be none
    // left to reap; on the host network the flow's `sleep` outlives it.
    if !isolated {
        assert_eq!(reaped, vec!["orphan".to_owned()]);
    }
    assert!(
        group_members(node_pid).is_empty(),
        "processes of the instance survived"
    );
    assert!(!alive(node_pid));
    if isolated {
        assert!(
            network_left(port).is_empty(),
            "left: {:?}",
            network_left(port)
        );
        assert!(sup.reap_orphans().is_empty());
        return;
    }
    // The kernel releases a dead process's sockets asynchronously.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "port {port} still taken"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sup.reap_orphans().is_empty());
}

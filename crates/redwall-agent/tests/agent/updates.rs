//! Self-update with real processes: the `redwall-agent` binary against the
//! fake hub, switching builds by exec (same PID), confirming, refusing,
//! rolling back. "New builds" are the agent binary with a few bytes
//! appended: ELF ignores trailing data, so each still runs, under another
//! SHA-256. The copy is stripped first, to fit the protocol's build limit.

use std::fs::File;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use redwall_agent::builds::{ANSWER_FILE, BUILDS_DIR, CURRENT_FILE, PENDING_FILE};
use redwall_agent::enrol::platform;
use redwall_agent::launcher::HOPS_ENV;
use redwall_crypto::signing::HubSigningKey;
use redwall_policy::agent_protocol::{MAX_BUILD_BYTES, PLATFORMS};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::fake_hub::{sign_build, AgentSocket, FakeHub, AGENT_ID};

/// The heartbeat these tests' hub asks for. Not 1 s: signing and encoding
/// a build of tens of megabytes takes this debug-built hub seconds under
/// load, and an agent hears nothing meanwhile (three heartbeats of silence
/// and it hangs up, as it should with a real hub).
const UPDATE_HEARTBEAT_SECS: u64 = 5;
use crate::within;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn short(sha: &str) -> &str {
    &sha[..12]
}

/// The agent binary as it would be installed (`/usr/local/bin`): a
/// stripped copy in a directory of its own.
struct Installed {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    sha256: String,
}

impl Installed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redwall-agent");
        let status = Command::new("strip")
            .arg("-o")
            .arg(&path)
            .arg(env!("CARGO_BIN_EXE_redwall-agent"))
            .status()
            .expect("these tests need binutils' strip");
        assert!(status.success());
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            (bytes.len() as u64) < MAX_BUILD_BYTES - 4096,
            "the stripped agent ({} bytes) must fit a build",
            bytes.len()
        );
        Self {
            _dir: dir,
            sha256: sha256_hex(&bytes),
            path,
            bytes,
        }
    }

    /// Another build: this one with `tag` appended.
    fn variant(&self, tag: &str) -> Vec<u8> {
        [self.bytes.as_slice(), tag.as_bytes()].concat()
    }
}

/// `redwall-agent --dir DIR run` as systemd would start it; its log goes
/// to a file, printed if the test fails.
struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    fn spawn(binary: &Path, state: &Path) -> Self {
        let log = state.with_extension(format!("{}.log", rand::random::<u32>()));
        let err = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(binary)
            .arg("--dir")
            .arg(state)
            .arg("run")
            .env("REDWALL_AGENT_LOG", "info")
            .env_remove(HOPS_ENV)
            .env_remove("REDWALL_AGENT_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file the process executes now.
    fn exe(&self) -> PathBuf {
        std::fs::read_link(format!("/proc/{}/exe", self.pid())).unwrap()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    async fn exit(&mut self) -> ExitStatus {
        within("the agent to exit", async {
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await
    }

    /// SIGTERM, as `systemctl stop`: the agent says goodbye and exits 0.
    async fn stop(&mut self, ws: &mut AgentSocket) {
        self.signal(libc::SIGTERM);
        ws.drain().await;
        assert!(self.exit().await.success());
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- agent log ---\n{log}--- end ---");
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The next command answer, skipping heartbeats.
async fn answer(ws: &mut AgentSocket) -> Value {
    let v = ws.next_non_heartbeat().await;
    assert_eq!(v["type"], "command_done", "{v}");
    v
}

/// Waits until `cond` holds (files the agent removes just after sending).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

fn builds_in(state: &Path) -> Vec<String> {
    match std::fs::read_dir(state.join(BUILDS_DIR)) {
        Err(_) => Vec::new(),
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_build_is_switched_to_confirmed_and_kept_across_restarts() {
    let installed = Installed::new();
    let mut hub = FakeHub::start().await;
    let (agent, state) = hub.enrolled_agent();
    let public = agent.key.public_key();
    let mut process = AgentProcess::spawn(&installed.path, state.path());
    let pid = process.pid();

    let mut ws = hub.next_socket().await;
    let hello = ws.greet(AGENT_ID, &public, UPDATE_HEARTBEAT_SECS).await;
    assert_eq!(hello["build_sha256"], installed.sha256.as_str());

    let new = installed.variant("\nredwall test build: good");
    let new_sha = sha256_hex(&new);
    let build = sign_build(&hub.signer, &new, &platform());
    ws.update("upd_1", &build, 60).await;

    // The old build hangs up normally to switch; the same process comes
    // back as the new build, which answers once the hub welcomed it.
    ws.drain().await;
    let mut ws = hub.next_socket().await;
    let hello = ws.greet(AGENT_ID, &public, UPDATE_HEARTBEAT_SECS).await;
    assert_eq!(hello["build_sha256"], new_sha.as_str());
    assert_eq!(
        answer(&mut ws).await,
        json!({"type": "command_done", "id": "upd_1", "ok": true,
               "message": format!("runs build 0.2.0 ({})", short(&new_sha))})
    );
    assert!(process.running());
    assert_eq!(process.pid(), pid, "exec keeps the PID systemd watches");
    let new_path = state.path().join(BUILDS_DIR).join(&new_sha);
    assert_eq!(process.exe(), new_path);
    assert_eq!(
        std::fs::metadata(&new_path).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    assert_eq!(std::fs::read(&new_path).unwrap(), new);
    assert_eq!(
        std::fs::read_to_string(state.path().join(BUILDS_DIR).join(CURRENT_FILE))
            .unwrap()
            .trim(),
        new_sha
    );
    assert!(!state.path().join(PENDING_FILE).exists());
    eventually("the sent answer to be forgotten", || {
        !state.path().join(ANSWER_FILE).exists()
    })
    .await;

    // The hub hands the same update over again while it has no answer
    // (its answer was lost with a connection): the answer is given again.
    ws.update("upd_1", &build, 60).await;
    assert_eq!(
        answer(&mut ws).await,
        json!({"type": "command_done", "id": "upd_1", "ok": true,
               "message": format!("runs build 0.2.0 ({})", short(&new_sha))})
    );
    // Another update of the build it runs: it runs already.
    ws.update("upd_2", &build, 60).await;
    assert_eq!(
        answer(&mut ws).await,
        json!({"type": "command_done", "id": "upd_2", "ok": true,
               "message": format!("runs build 0.2.0 ({}) already", short(&new_sha))})
    );

    // Killed, then started again from the installed binary (as systemd
    // would): it starts the current build again, same PID.
    process.signal(libc::SIGKILL);
    process.exit().await;
    drop(process);
    let mut process = AgentProcess::spawn(&installed.path, state.path());
    let mut ws = hub.next_socket().await;
    let hello = ws.greet(AGENT_ID, &public, UPDATE_HEARTBEAT_SECS).await;
    assert_eq!(hello["build_sha256"], new_sha.as_str());
    assert_eq!(process.exe(), new_path);
    // No answer is owed any more: the next message is a heartbeat.
    assert_eq!(ws.next_json().await["type"], "heartbeat");
    process.stop(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_builds_are_refused_and_nothing_changes() {
    let installed = Installed::new();
    let mut hub = FakeHub::start().await;
    let (agent, state) = hub.enrolled_agent();
    let public = agent.key.public_key();
    let new = installed.variant("\nredwall test build: tampered");
    // A byte of the binary changed after signing.
    let mut changed = sign_build(&hub.signer, &new, &platform());
    let mut bytes = new.clone();
    bytes[new.len() / 2] ^= 0x01;
    changed.binary = STANDARD.encode(&bytes);
    // Well signed, by a key this agent did not enrol with.
    let other_key = sign_build(&HubSigningKey::generate(), &new, &platform());
    // Signed by the hub, for the other platform.
    let other = PLATFORMS
        .iter()
        .find(|p| **p != platform())
        .unwrap()
        .to_string();
    let other_platform = sign_build(&hub.signer, &new, &other);
    // Made before the agent connects: signing and encoding builds of tens
    // of megabytes takes this debug-built hub longer than the agent waits
    // in silence (three 1 s heartbeats).
    let mut process = AgentProcess::spawn(&installed.path, state.path());
    let pid = process.pid();
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, UPDATE_HEARTBEAT_SECS).await;

    for (id, build, why) in [
        (
            "upd_bytes",
            &changed,
            "the binary does not match the signed SHA-256".to_owned(),
        ),
        (
            "upd_key",
            &other_key,
            "the signature is not the hub's".to_owned(),
        ),
        (
            "upd_platform",
            &other_platform,
            format!(
                "the build is for {other}, this agent runs on {}",
                platform()
            ),
        ),
    ] {
        ws.update(id, build, 60).await;
        assert_eq!(
            answer(&mut ws).await,
            json!({"type": "command_done", "id": id, "ok": false,
                   "message": format!("refused the build: {why}")})
        );
    }
    assert!(
        builds_in(state.path()).is_empty(),
        "{:?}",
        builds_in(state.path())
    );
    assert!(!state.path().join(PENDING_FILE).exists());
    assert!(!state.path().join(ANSWER_FILE).exists());

    // Still the same build, on the next connection too.
    ws.close(1012, "hub restarting").await;
    let mut ws = hub.next_socket().await;
    let hello = ws.greet(AGENT_ID, &public, UPDATE_HEARTBEAT_SECS).await;
    assert_eq!(hello["build_sha256"], installed.sha256.as_str());
    assert_eq!(process.pid(), pid);
    assert_eq!(process.exe(), installed.path);
    process.stop(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_the_hub_never_welcomes_is_rolled_back_in_the_same_process() {
    let installed = Installed::new();
    let mut hub = FakeHub::start().await;
    let (agent, state) = hub.enrolled_agent();
    let public = agent.key.public_key();
    let mut process = AgentProcess::spawn(&installed.path, state.path());
    let pid = process.pid();
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, UPDATE_HEARTBEAT_SECS).await;

    let new = installed.variant("\nredwall test build: never welcomed");
    let new_sha = sha256_hex(&new);
    let build = sign_build(&hub.signer, &new, &platform());
    ws.update("upd_3", &build, 5).await;
    ws.drain().await;

    // The new build dials and says hello; this hub never welcomes it (its
    // sockets are held open, silent). After its 5 s the agent goes back.
    let mut held = Vec::new();
    let mut new_hellos = 0;
    let mut ws = loop {
        let mut socket = hub.next_socket().await;
        let hello = socket.challenge(AGENT_ID, &public).await;
        if hello["build_sha256"] == new_sha.as_str() {
            new_hellos += 1;
            held.push(socket);
            continue;
        }
        assert_eq!(hello["build_sha256"], installed.sha256.as_str());
        socket.welcome(AGENT_ID, 1).await;
        break socket;
    };
    assert!(new_hellos >= 1, "the new build ran and dialled");
    assert_eq!(
        answer(&mut ws).await,
        json!({"type": "command_done", "id": "upd_3", "ok": false,
               "message": format!(
                   "rolled back to build {}: build {} did not connect to the hub within 5 s",
                   short(&installed.sha256), short(&new_sha))})
    );
    assert_eq!(process.pid(), pid);
    assert_eq!(process.exe(), installed.path);
    // The failed build is gone, nothing names it, nothing is pending.
    assert!(
        builds_in(state.path()).is_empty(),
        "{:?}",
        builds_in(state.path())
    );
    assert!(!state.path().join(PENDING_FILE).exists());
    eventually("the sent answer to be forgotten", || {
        !state.path().join(ANSWER_FILE).exists()
    })
    .await;
    // The hub hands the update over again (the rollback's answer was lost
    // with a connection): the same answer, and the build is not tried
    // again.
    ws.update("upd_3", &build, 5).await;
    assert_eq!(
        answer(&mut ws).await["message"],
        format!(
            "rolled back to build {}: build {} did not connect to the hub within 5 s",
            short(&installed.sha256),
            short(&new_sha)
        )
    );
    assert!(builds_in(state.path()).is_empty());
    assert!(!state.path().join(PENDING_FILE).exists());
    assert_eq!(process.exe(), installed.path);
    process.stop(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_crashes_is_retried_while_its_time_lasts_then_rolled_back() {
    let installed = Installed::new();
    let mut hub = FakeHub::start().await;
    let (agent, state) = hub.enrolled_agent();
    let public = agent.key.public_key();
    let mut process = AgentProcess::spawn(&installed.path, state.path());
    let mut ws = hub.next_socket().await;
    ws.greet(AGENT_ID, &public, UPDATE_HEARTBEAT_SECS).await;

    // Signed and runnable, but it dies at once.
    let crasher = b"#!/bin/sh\nexit 1\n".to_vec();
    let crasher_sha = sha256_hex(&crasher);
    ws.update("upd_4", &sign_build(&hub.signer, &crasher, &platform()), 4)
        .await;
    ws.drain().await;
    assert_eq!(process.exit().await.code(), Some(1));
    assert!(state.path().join(PENDING_FILE).exists());

    // The test plays systemd (Restart=on-failure): start the installed
    // binary again whenever it exits, until an agent connects. While the
    // time lasts it starts the crashing build again; then it rolls back.
    let mut starts = 0;
    let mut ws = within("the agent to come back", async {
        loop {
            process = AgentProcess::spawn(&installed.path, state.path());
            starts += 1;
            loop {
                if let Some(socket) = hub.try_socket() {
                    return socket;
                }
                if !process.running() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let hello = ws.greet(AGENT_ID, &public, UPDATE_HEARTBEAT_SECS).await;
    assert_eq!(hello["build_sha256"], installed.sha256.as_str());
    assert_eq!(
        answer(&mut ws).await,
        json!({"type": "command_done", "id": "upd_4", "ok": false,
               "message": format!(
                   "rolled back to build {}: build {} did not connect to the hub within 4 s",
                   short(&installed.sha256), short(&crasher_sha))})
    );
    assert!(starts >= 1);
    assert_eq!(process.exe(), installed.path);
    assert!(
        builds_in(state.path()).is_empty(),
        "{:?}",
        builds_in(state.path())
    );
    assert!(!state.path().join(PENDING_FILE).exists());

    // Started again later, it stays on the installed build.
    process.stop(&mut ws).await;
    let mut process = AgentProcess::spawn(&installed.path, state.path());
    let mut ws = hub.next_socket().await;
    let hello = ws.greet(AGENT_ID, &public, UPDATE_HEARTBEAT_SECS).await;
    assert_eq!(hello["build_sha256"], installed.sha256.as_str());
    assert_eq!(ws.next_json().await["type"], "heartbeat");
    process.stop(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_run_inside_another_program_reports_no_build_and_takes_no_update() {
    let mut hub = FakeHub::start().await;
    let (agent, state) = hub.enrolled_agent();
    let public = agent.key.public_key();
    // `run_with` as a library: self_update is off unless asked for, so the
    // agent must never exec over the program that runs it.
    let mut running = crate::sessions::RunningAgent::start(agent);
    let mut ws = hub.next_socket().await;
    let hello = ws.greet(AGENT_ID, &public, UPDATE_HEARTBEAT_SECS).await;
    assert_eq!(hello["build_sha256"], Value::Null);

    let build = sign_build(&hub.signer, b"#!/bin/sh\nexit 0\n", &platform());
    ws.update("upd_lib", &build, 60).await;
    assert_eq!(
        answer(&mut ws).await,
        json!({"type": "command_done", "id": "upd_lib", "ok": false,
               "message": "this agent runs inside another program and does not update itself"})
    );
    // An update sent as a plain command is not one either.
    ws.send_json(
        json!({"type": "command", "id": "c_upd", "command": {"kind": "update", "build_id": "b1"}}),
    )
    .await;
    assert_eq!(answer(&mut ws).await["ok"], false);
    assert!(builds_in(state.path()).is_empty());
    assert!(!state.path().join(PENDING_FILE).exists());
    running.stop();
    ws.drain().await;
    assert_eq!(running.outcome().await, redwall_agent::RunOutcome::Shutdown);
}

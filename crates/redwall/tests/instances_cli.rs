//! Instances through the real binary: `redwall serve` as a child process
//! running a real Node-RED (the shared test install), driven by
//! `redwall instance ...`, by `node-red-admin`, and killed with SIGKILL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod serve_kit;
use serve_kit::*;

async fn wait_state(api: &Api, team: &str, name: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (status, v) = api
            .get(&format!("/api/v1/teams/{team}/instances/{name}"))
            .await;
        assert_eq!(status, 200, "{v}");
        let state = v["status"]["state"].as_str().unwrap_or_default();
        if state == want {
            return v;
        }
        assert_ne!(state, "crash_loop", "instance gave up: {v}");
        assert!(
            Instant::now() < deadline,
            "instance not {want} in 45 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `redwall instance <args>` against `s` with `token`.
fn cli(s: &Serving, token: &str, team: &str, args: &[&str]) -> Output {
    cli_with(s, token, team, args, &[])
}

fn cli_with(s: &Serving, token: &str, team: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("instance")
        .args(args)
        .env("REDWALL_URL", &s.base)
        .env("REDWALL_TOKEN", token)
        .env("REDWALL_TEAM", team)
        .env_remove("REDWALL_INSTANCE_KEY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null()).output().unwrap()
}

/// Live processes serving the instance `id`: its id is in the userDir path,
/// which is each Node-RED's working directory and in its arguments. (Node-RED
/// sets `process.title`, which rewrites /proc/PID/cmdline to "node-red", so
/// the command line alone finds nothing.)
fn processes_with(id: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let cwd = std::fs::read_link(entry.path().join("cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cwd.contains(id) || String::from_utf8_lossy(&cmdline).contains(id) {
            pids.push(pid);
        }
    }
    // An isolated instance is two processes: the supervisor's stand-in
    // (the pid Redwall reports) and Node-RED, its child, as PID 1 of the
    // instance's own PID namespace. Count the instance once, by its top.
    let parent = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("PPid:"))
                    .and_then(|p| p.trim().parse::<u32>().ok())
            })
    };
    let all = pids.clone();
    pids.retain(|&pid| parent(pid).is_none_or(|pp| !all.contains(&pp)));
    pids
}

/// Gone, or a zombie waiting for a reaper that is not Redwall (the test
/// machine's init may not reap): either way it runs no code.
fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn the_cli_drives_an_instance_end_to_end() {
    let data = DataDir::new();
    let s = data.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    let run = |args: &[&str]| cli(&s, &pat, &team, args);

    // Without a token the command says how to give one, and does not try.
    let mut c = Command::new(BIN);
    let o = c
        .args(["instance", "list", "--team", &team, "--url", &s.base])
        .env_remove("REDWALL_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("REDWALL_TOKEN"), "{}", stderr(&o));

    // Create (running), then it is listed as running.
    let out = ok(run(&["create", "plant"]));
    assert!(out.contains("plant"), "{out}");
    let v = wait_state(&admin, &team, "plant", "running").await;
    let out = ok(run(&["list"]));
    let row = out
        .lines()
        .find(|l| l.starts_with("plant "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("running"), "{out}");
    assert!(row.contains(&v["status"]["pid"].to_string()), "{out}");
    let listed: Value = serde_json::from_str(&ok(run(&["list", "--json"]))).unwrap();
    assert_eq!(listed[0]["status"]["state"], "running");

    // Environment: one plain variable, one secret; the secret's value is
    // never shown, and survives setting another variable.
    ok(run(&["env", "set", "plant", "GREETING=hello"]));
    ok(run(&[
        "env",
        "set",
        "plant",
        "DB_PASSWORD=s3cret-value",
        "--secret",
    ]));
    ok(run(&["env", "set", "plant", "GREETING=hello again"]));
    let out = ok(run(&["env", "list", "plant"]));
    assert!(
        out.contains("GREETING") && out.contains("hello again"),
        "{out}"
    );
    assert!(
        out.contains("DB_PASSWORD") && out.contains("(secret)"),
        "{out}"
    );
    assert!(!out.contains("s3cret-value"), "{out}");
    let env: Value = serde_json::from_str(&ok(run(&["env", "list", "plant", "--json"]))).unwrap();
    let secret = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "DB_PASSWORD")
        .unwrap();
    assert_eq!(secret["secret"], true, "{env}");
    assert_eq!(secret["value"], Value::Null, "{env}");
    ok(run(&["env", "unset", "plant", "GREETING"]));
    let out = ok(run(&["env", "list", "plant"]));
    assert!(
        !out.contains("GREETING") && out.contains("DB_PASSWORD"),
        "{out}"
    );

    // A key is printed once, on stdout alone; the list shows only its prefix.
    let o = run(&[
        "keys",
        "create",
        "plant",
        "--key-name",
        "ci",
        "--path-prefix",
        "/hello",
    ]);
    let key = ok(o).trim().to_string();
    assert!(key.starts_with("rwk_"), "{key}");
    let out = ok(run(&["keys", "list", "plant"]));
    assert!(out.contains("ci") && out.contains("active"), "{out}");
    assert!(!out.contains(&key), "the key is shown once only");

    // Rules from a file; the test call judges them (and can say no).
    let rules = data.path().join("rules.json");
    std::fs::write(
        &rules,
        json!([{"path_prefix": "/hello", "methods": ["GET"], "policy": {"type": "api_key"}}])
            .to_string(),
    )
    .unwrap();
    ok(run(&[
        "routes",
        "set",
        "plant",
        "--file",
        rules.to_str().unwrap(),
    ]));
    let got: Value = serde_json::from_str(&ok(run(&["routes", "get", "plant"]))).unwrap();
    assert_eq!(got[0]["path_prefix"], "/hello", "{got}");
    let test = [
        "routes", "test", "plant", "--method", "GET", "--path", "/hello/x",
    ];
    let out = ok(cli_with(
        &s,
        &pat,
        &team,
        &[&test[..], &["--credential", "api_key"]].concat(),
        &[("REDWALL_INSTANCE_KEY", &key)],
    ));
    assert!(out.contains("decision: allow"), "{out}");
    let out = ok(run(&test));
    assert!(out.contains("decision: credential_missing"), "{out}");

    // The logs hold Node-RED's start-up.
    let out = ok(run(&["logs", "plant", "--lines", "200"]));
    assert!(out.contains("Started flows"), "{out}");

    // Stop: show says stopped, and it is meant to stay so.
    ok(run(&["stop", "plant"]));
    wait_state(&admin, &team, "plant", "stopped").await;
    let out = ok(run(&["show", "plant"]));
    assert!(out.contains("state:") && out.contains("stopped"), "{out}");

    // Delete needs the right name; a wrong one is an API error, exit 2.
    let o = run(&["delete", "plant", "--confirm", "plant2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: ") && err.trim_end().ends_with(')'),
        "{err}"
    );
    assert!(err.contains("name"), "{err}");
    ok(run(&["show", "plant"]));
    ok(run(&["delete", "plant", "--confirm", "plant"]));
    let o = run(&["show", "plant"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("(not_found)"), "{}", stderr(&o));
    assert!(!ok(run(&["list"])).contains("plant"));
}

#[tokio::test]
async fn logs_follow_prints_new_lines_as_they_come() {
    let data = DataDir::new();
    let s = data.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    ok(cli(&s, &pat, &team, &["create", "tail"]));
    wait_state(&admin, &team, "tail", "running").await;
    let mut follow = Command::new(BIN)
        .args(["instance", "logs", "tail", "--follow", "--lines", "1"])
        .env("REDWALL_URL", &s.base)
        .env("REDWALL_TOKEN", &pat)
        .env("REDWALL_TEAM", &team)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The backlog's one line, then the restart's output as it happens.
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the backlog");
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(cli(&s, &pat, &team, &["restart", "tail"]));
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("Started flows") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(found, "no new start-up line streamed; saw: {seen:#?}");
}

#[tokio::test]
async fn sigkill_leaves_no_orphan_and_no_double_start() {
    let data = DataDir::new();
    let first = data.serve();
    let (_, team, pat) = bootstrap(&first).await;
    let api = Api::bearer(&first.base, &pat);
    api.post(
        &format!("/api/v1/teams/{team}/instances"),
        json!({"name": "line1"}),
    )
    .await;
    let v = wait_state(&api, &team, "line1", "running").await;
    let id = v["id"].as_str().unwrap().to_string();
    let old_pid = u32::try_from(v["status"]["pid"].as_u64().unwrap()).unwrap();
    assert_eq!(
        processes_with(&id),
        vec![old_pid],
        "one Node-RED, the one reported"
    );

    // A second Redwall on the same data directory refuses to run, says why,
    // and starts no Node-RED.
    let o = data
        .command()
        .arg("serve")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success(), "second serve must fail");
    let err = stderr(&o);
    assert!(
        err.contains("second Redwall running on this data directory"),
        "stdout: {}\nstderr: {err}",
        stdout(&o)
    );
    assert_eq!(processes_with(&id), vec![old_pid], "no second Node-RED");

    // SIGKILL: Redwall's shutdown never runs.
    first.kill_hard();
    let second = data.serve();
    let api = Api::bearer(&second.base, &pat);
    let v = wait_state(&api, &team, "line1", "running").await;
    let new_pid = u32::try_from(v["status"]["pid"].as_u64().unwrap()).unwrap();
    assert_ne!(new_pid, old_pid, "a fresh Node-RED");
    assert!(
        process_is_gone(old_pid),
        "the old Node-RED ({old_pid}) is gone"
    );
    // Exactly one, and it stays one (no late second start).
    for _ in 0..10 {
        assert_eq!(processes_with(&id), vec![new_pid], "exactly one Node-RED");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = api.get("/i/line1/editor/settings").await;
    assert_eq!(status, 200, "the new Node-RED answers through the proxy");
}

/// `node-red-admin` from npm, installed once per machine (a file lock keeps
/// parallel test processes from racing); returns its script.
fn node_red_admin() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var_os("REDWALL_TEST_NODE_RED_ADMIN_CACHE")
            .unwrap_or_else(|| "/var/tmp/redwall-test-node-red-admin".into()),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".install.lock"))
        .unwrap();
    // SAFETY: flock on a descriptor we own; released when `lock` closes.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let script = dir.join("node_modules/node-red-admin/node-red-admin.js");
    if !script.is_file() {
        let o = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("node-red-admin@4.1.7")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "npm install node-red-admin: {}",
            stderr(&o)
        );
    }
    script
}

/// Runs node-red-admin with a home of its own, targeting the instance's
/// editor through Redwall with `token` as its access token.
fn node_red_admin_as(
    script: &Path,
    node: &Path,
    target: &str,
    token: &str,
    args: &[&str],
) -> Output {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".node-red")).unwrap();
    std::fs::write(
        home.path().join(".node-red/.cli-config.json"),
        json!({"target": target, "tokens": {"access_token": token}}).to_string(),
    )
    .unwrap();
    Command::new(node)
        .arg(script)
        .args(args)
        .env("HOME", home.path())
        .env_remove("NODE_RED_HOME")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn node_red_admin_works_through_the_proxy_by_role() {
    let script = node_red_admin();
    let node = redwall_runtime::testing::shared_install().unwrap().node;
    let data = DataDir::new();
    let s = data.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    for (user, role) in [("martin", "member"), ("vera", "viewer")] {
        join(&admin, &s, &team, user, role).await;
    }
    let member = Api::login(&s.base, "martin").await;
    let viewer = Api::login(&s.base, "vera").await;
    let (member_token, member_token_id) = member.token("full").await;
    let (viewer_token, _) = viewer.token("full").await;
    ok(cli(&s, &pat, &team, &["create", "press"]));
    wait_state(&admin, &team, "press", "running").await;
    let target = format!("{}/i/press/editor", s.base);
    let nra = |token: &str, args: &[&str]| node_red_admin_as(&script, &node, &target, token, args);

    // A Member lists the core nodes, and may disable and enable them.
    let out = ok(nra(&member_token, &["list"]));
    assert!(out.contains("node-red/inject"), "{out}");
    let out = ok(nra(&member_token, &["disable", "node-red/inject"]));
    assert!(out.contains("disabled"), "{out}");
    ok(nra(&member_token, &["enable", "node-red/inject"]));

    // A Viewer lists, but cannot disable.
    let out = ok(nra(&viewer_token, &["list"]));
    assert!(out.contains("node-red/inject"), "{out}");
    let o = nra(&viewer_token, &["disable", "node-red/inject", "--json"]);
    assert!(!o.status.success(), "viewer disable: {}", stdout(&o));
    let refused: Value = serde_json::from_str(&stdout(&o)).unwrap_or_default();
    assert!(
        refused["status"] == 403 || refused["status"] == 401,
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    let (status, inject) = Api::bearer(&s.base, &member_token)
        .get("/i/press/editor/nodes/node-red/inject")
        .await;
    assert_eq!(status, 200, "{inject}");
    assert_eq!(
        inject["enabled"], true,
        "the Viewer changed nothing: {inject}"
    );

    // Revoked: refused outright.
    let (status, v) = member
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/me/tokens/{member_token_id}"),
            None,
        )
        .await;
    assert!((200..300).contains(&status), "revoke: {status} {v}");
    // Token checks are cached for up to a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let o = nra(&member_token, &["list", "--json"]);
    assert!(!o.status.success(), "revoked list: {}", stdout(&o));
    let refused: Value = serde_json::from_str(&stdout(&o)).unwrap_or_default();
    assert_eq!(
        refused["status"],
        401,
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    assert!(!stdout(&o).contains("node-red/inject"));
}

#[tokio::test]
async fn rotating_instance_secrets_offline_keeps_instances_working() {
    let data = DataDir::new();
    let s = data.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    ok(cli(&s, &pat, &team, &["create", "mixer", "--stopped"]));
    ok(cli(
        &s,
        &pat,
        &team,
        &[
            "env",
            "set",
            "mixer",
            "DB_PASSWORD=s3cret-value",
            "--secret",
        ],
    ));
    drop(admin);
    drop(s);

    // One key set and one variable move to the next key version.
    let o = data
        .command()
        .args(["keys", "rotate-instance-secrets"])
        .output()
        .unwrap();
    let out = ok(o);
    assert!(out.contains("re-sealed 2 "), "{out}");
    let first_version = out.split("key version ").nth(1).unwrap().to_string();
    let out = ok(data
        .command()
        .args(["keys", "rotate-instance-secrets"])
        .output()
        .unwrap());
    assert_ne!(
        out.split("key version ").nth(1).unwrap(),
        first_version,
        "{out}"
    );

    // The instance still starts with its (re-sealed) secrets.
    let s = data.serve();
    let api = Api::login(&s.base, "admin").await;
    ok(cli(&s, &pat, &team, &["start", "mixer"]));
    wait_state(&api, &team, "mixer", "running").await;
    let out = ok(cli(&s, &pat, &team, &["env", "list", "mixer"]));
    assert!(
        out.contains("DB_PASSWORD") && out.contains("(secret)"),
        "{out}"
    );
}

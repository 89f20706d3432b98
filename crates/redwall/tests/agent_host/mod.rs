//! A real `redwall-agent` for the `redwall` crate's tests: its state
//! directory, the command that runs it (maybe inside a network namespace),
//! provisioning through the CLI, and waiting on what the hub reports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::serve_kit::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The agent binary, built next to `redwall` by the workspace's build.
pub fn agent_bin() -> PathBuf {
    let bin = Path::new(BIN).with_file_name("redwall-agent");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// An agent's directory and the command that runs it (maybe inside a
/// network namespace).
pub struct AgentHost {
    dir: tempfile::TempDir,
    netns: Option<String>,
    /// The agent executable (the workspace's build unless said otherwise).
    bin: PathBuf,
}

impl AgentHost {
    pub fn new(netns: Option<&str>) -> AgentHost {
        AgentHost {
            dir: tempfile::tempdir().unwrap(),
            netns: netns.map(str::to_string),
            bin: agent_bin(),
        }
    }

    /// An agent installed as `bin` (no network namespace).
    pub fn with_binary(bin: &Path) -> AgentHost {
        AgentHost {
            bin: bin.to_path_buf(),
            ..AgentHost::new(None)
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn command(&self) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        c.env("REDWALL_AGENT_LOG", "debug");
        c
    }

    pub fn enrol(&self, bundle: &str, name: &str) -> std::process::Output {
        self.enrol_with(bundle, name, &[])
    }

    /// Enrols running its own Node-RED (the shared npm install) on a free
    /// port of its loopback; the port.
    pub fn enrol_with_node_red(&self, bundle: &str, name: &str) -> u16 {
        let install =
            redwall_runtime::testing::shared_install().expect("Node-RED installs from npm");
        let port = redwall_runtime::testing::free_port();
        let out = self.enrol_with(
            bundle,
            name,
            &[
                "--node-red-path",
                &install.package_dir.display().to_string(),
                "--node",
                &install.node.display().to_string(),
                "--port",
                &port.to_string(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        port
    }

    /// Enrols with more options (the Node-RED it runs).
    pub fn enrol_with(&self, bundle: &str, name: &str, extra: &[&str]) -> std::process::Output {
        let file = self.dir.path().join("bundle.txt");
        std::fs::write(&file, bundle).unwrap();
        self.command()
            .arg("enrol")
            .arg("--bundle")
            .arg(format!("@{}", file.display()))
            .args(["--name", name])
            .args(extra)
            .arg("--dir")
            .arg(self.state_dir())
            .output()
            .unwrap()
    }

    pub fn run(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("agent.log")).unwrap();
        self.command()
            .arg("run")
            .arg("--dir")
            .arg(self.state_dir())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Runs it again, its log kept (as systemd restarting it would).
    pub fn run_appending(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        self.command()
            .arg("run")
            .arg("--dir")
            .arg(self.state_dir())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Runs it as systemd does a `Type=notify` unit with `WatchdogSec=`:
    /// `NOTIFY_SOCKET`, `WATCHDOG_USEC`, and `WATCHDOG_PID` naming the
    /// process itself (set by a shell that then execs the agent, keeping
    /// its PID). The log is appended to.
    pub fn run_under_watchdog(&self, notify_socket: &Path, watchdog_usec: u64) -> Child {
        assert!(self.netns.is_none(), "not inside a network namespace");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        Command::new("sh")
            .arg("-c")
            .arg("export WATCHDOG_PID=$$; exec \"$0\" \"$@\"")
            .arg(&self.bin)
            .arg("run")
            .arg("--dir")
            .arg(self.state_dir())
            .env("REDWALL_AGENT_LOG", "debug")
            .env("NOTIFY_SOCKET", notify_socket)
            .env("WATCHDOG_USEC", watchdog_usec.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

/// A provisioning bundle for the team, made with the CLI as an Owner does.
pub fn provision(s: &Serving, team: &str, pat: &str, extra: &[&str]) -> String {
    let out = DataDir::without_instances()
        .command()
        .args(["agent", "provision", "--insecure-skip-verify"])
        .args(["--url", &s.base, "--team", team])
        .args(extra)
        .env("REDWALL_TOKEN", pat)
        .output()
        .unwrap();
    let text = ok(out);
    let bundle = text.trim().to_string();
    assert!(bundle.starts_with("rwbundle1."), "{bundle}");
    bundle
}

pub async fn agent_state(api: &Api, team: &str, name: &str) -> Value {
    let (status, v) = api
        .get(&format!("/api/v1/teams/{team}/agents/{name}"))
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Waits until the agent's `online` is `want`; how long it took.
pub async fn wait_online(
    api: &Api,
    team: &str,
    name: &str,
    want: bool,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let v = agent_state(api, team, name).await;
        if v["online"].as_bool() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{name} is not {} after {within:?}: {v}",
            if want { "online" } else { "offline" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The token inside a bundle (base64url JSON after the prefix).
pub fn bundle_token(bundle: &str) -> String {
    let json = base64_url_decode(bundle.trim().strip_prefix("rwbundle1.").unwrap());
    let v: Value = serde_json::from_slice(&json).unwrap();
    v["provisioning_token"].as_str().unwrap().to_string()
}

pub fn base64_url_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

pub fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace joined to the host by a veth pair, which accepts no
/// connection from outside (as a site's firewall would).
pub struct Site {
    pub ns: String,
    pub host_if: String,
    pub host_ip: String,
    pub site_ip: String,
}

impl Site {
    pub fn new(tag: u32) -> Site {
        let id = std::process::id() % 10_000;
        let ns = format!("rwag{id}-{tag}");
        let host_if = format!("rwh{id}x{tag}");
        let site_if = format!("rwa{id}x{tag}");
        let octet = (std::process::id() % 200) + 20 + tag;
        let host_ip = format!("10.213.{octet}.1");
        let site_ip = format!("10.213.{octet}.2");
        let sh = |args: &[&str]| {
            let out = std::process::Command::new(args[0])
                .args(&args[1..])
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .output();
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &site_if,
        ]);
        sh(&["ip", "link", "set", &site_if, "netns", &ns]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &host_if,
        ]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{site_ip}/30"),
            "dev",
            &site_if,
        ]);
        sh(&[
            "ip", "netns", "exec", &ns, "ip", "link", "set", &site_if, "up",
        ]);
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        for rule in [
            "add table inet site",
            "add chain inet site input { type filter hook input priority 0; policy drop; }",
            "add rule inet site input iif lo accept",
            "add rule inet site input ct state established,related accept",
        ] {
            sh(&["ip", "netns", "exec", &ns, "nft", rule]);
        }
        Site {
            ns,
            host_if,
            host_ip,
            site_ip,
        }
    }

    pub fn link(&self, up: bool) {
        let out = std::process::Command::new("ip")
            .args(["link", "set", &self.host_if, if up { "up" } else { "down" }])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .output();
    }
}

/// Kills a child on drop (an agent, also when the test fails: its
/// Node-RED goes with it).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Imports a flows file as a snapshot of the team's instance `central`.
pub async fn snapshot_of(api: &Api, team: &str, flows: &Value) -> String {
    use base64::Engine as _;
    let file = serde_json::to_vec(flows).unwrap();
    let v = api
        .post(
            &format!("/api/v1/teams/{team}/instances/central/snapshots/import"),
            serde_json::json!({
                "file": base64::engine::general_purpose::STANDARD.encode(file),
                "accept_plaintext_credentials": true,
            }),
        )
        .await;
    v["snapshot"]["id"]
        .as_str()
        .expect("a snapshot")
        .to_string()
}

/// Deploys `flows` to the agent's instance `line-1` (domain `sites.test`)
/// through the hub's tunnel with the editor's admin API, as the holder of
/// `pat`, trying again until the site's Node-RED answers (it restarts as
/// the hub's instance first).
pub async fn deploy_through_hub(listen: &str, pat: &str, flows: &Value, host: &AgentHost) {
    let editor = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .resolve("line-1.sites.test", listen.parse().unwrap())
        .build()
        .unwrap();
    let port = listen.rsplit(':').next().unwrap();
    let base = format!("https://line-1.sites.test:{port}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = editor
            .post(format!("{base}/editor/flows"))
            .header("authorization", format!("Bearer {pat}"))
            .header("origin", &base)
            .header("node-red-deployment-type", "full")
            .json(flows)
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "deploy: {} {}\n{}",
            r.status(),
            r.text().await.unwrap_or_default(),
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An endpoint token for the agent's own Node-RED, as the agent's keys
/// make it (its endpoints answer nothing else); `None` before it has keys.
pub fn endpoint_token(state_dir: &Path) -> Option<String> {
    use redwall_agent::node_red::{NodeRedSecrets, INSTANCE_ID};
    let secrets = NodeRedSecrets::load_or_create(state_dir).ok()?;
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 600;
    Some(redwall_runtime::mint_endpoint_token(
        &redwall_crypto::Secret::new(secrets.endpoint.clone()),
        INSTANCE_ID,
        Some("test"),
        expires,
    ))
}

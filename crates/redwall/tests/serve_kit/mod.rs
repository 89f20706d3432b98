//! `redwall serve` as a child process for the CLI tests: a data directory
//! with its configuration, the server's address and setup token, the HTTP
//! API for what the CLI does not do, and the outputs of CLI runs.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_redwall");
pub const PASSWORD: &str = "violet-harbor-copper-9";

/// A data directory with a config file: TLS off, loopback, cheap hashing,
/// instances from the shared Node-RED install on a port range of their own.
pub struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    pub fn new() -> DataDir {
        let install =
            redwall_runtime::testing::shared_install().expect("Node-RED installs from npm");
        let dir = tempfile::tempdir().unwrap();
        let base = redwall_runtime::testing::free_port().clamp(10_000, 60_000);
        let config = format!(
            r#"data_dir = {data:?}

[server]
listen = "127.0.0.1:0"

[tls]
mode = "off"

[passwords]
memory_kib = 1024
iterations = 1
parallelism = 1

[log]
level = "info"

[instances]
# node-red-admin and the API clients are machines: they use /i/{{name}}/.
path_routing = true
node_red_path = {path:?}
node = {node:?}
port_min = {min}
port_max = {max}
uid_base = {uid}
"#,
            data = dir.path().display().to_string(),
            path = install.package_dir.display().to_string(),
            node = install.node.display().to_string(),
            min = base,
            max = base + 9,
            uid = 100_000 + u32::from(base),
        );
        std::fs::write(dir.path().join("redwall.toml"), config).unwrap();
        DataDir { dir }
    }

    /// The same, for servers that run no instance (no Node-RED install).
    pub fn without_instances() -> DataDir {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "data_dir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[tls]\nmode = \"off\"\n\n\
             [passwords]\nmemory_kib = 1024\niterations = 1\nparallelism = 1\n\n\
             [instances]\ninstall_at_start = false\n",
            dir.path().display().to_string()
        );
        std::fs::write(dir.path().join("redwall.toml"), config).unwrap();
        DataDir { dir }
    }

    /// A hub for remote agents: HTTPS with its self-signed certificate (as
    /// shipped) on `listen`, no instances, agents' heartbeats every
    /// `heartbeat_secs`, and the database at `database_url` (else SQLite in
    /// the directory).
    pub fn for_agents(listen: &str, database_url: Option<&str>, heartbeat_secs: u64) -> DataDir {
        let dir = tempfile::tempdir().unwrap();
        let database = database_url
            .map(|u| format!("database_url = {u:?}\n"))
            .unwrap_or_default();
        let config = format!(
            "data_dir = {:?}\n{database}\n[server]\nlisten = {listen:?}\n\n\
             [passwords]\nmemory_kib = 1024\niterations = 1\nparallelism = 1\n\n\
             [log]\nlevel = \"info\"\n\n\
             [instances]\ninstall_at_start = false\n\n[agents]\nheartbeat_secs = {heartbeat_secs}\n",
            dir.path().display().to_string()
        );
        std::fs::write(dir.path().join("redwall.toml"), config).unwrap();
        DataDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(self.path().join("redwall.toml"));
        // Every test server's broker on ports of its own.
        c.env("REDWALL_MQTT_LISTEN", "127.0.0.1:0")
            .env("REDWALL_MQTTS_LISTEN", "off");
        for var in [
            "REDWALL_MASTER_KEY",
            "REDWALL_DATABASE_URL",
            "REDWALL_LISTEN",
            "REDWALL_TLS_MODE",
            "REDWALL_TOKEN",
            "REDWALL_URL",
            "REDWALL_TEAM",
        ] {
            c.env_remove(var);
        }
        c
    }

    /// Starts `redwall serve` and waits for its address.
    pub fn serve(&self) -> Serving {
        self.serve_with(&[])
    }

    /// The same, with these environment variables set (after the defaults
    /// above, so they win).
    pub fn serve_with(&self, env: &[(&str, &str)]) -> Serving {
        let log = self.path().join(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = self
            .command()
            .envs(env.iter().copied())
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the banner, then keeps draining so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut serving = Serving {
            child,
            base: String::new(),
            setup_token: None,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "redwall serve printed no address; its log:\n{}",
                    serving.log_text()
                )
            });
            if let Some((_, rest)) = line.split_once(r#""setup_token":""#) {
                serving.setup_token = rest.split('"').next().map(str::to_string);
            }
            if let Some(url) = line.strip_prefix("Redwall is listening on ") {
                serving.base = url.trim().to_string();
                return serving;
            }
        }
    }
}

pub struct Serving {
    pub child: Child,
    pub base: String,
    pub setup_token: Option<String>,
    pub log: PathBuf,
}

impl Serving {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serving {
    /// SIGTERM first so Redwall stops its instances, then SIGKILL.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- redwall serve log ---\n{}", self.log_text());
        }
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The HTTP API as a logged-in user (for what the CLI does not do: set-up,
/// users, teams, tokens).
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    pub bearer: Option<String>,
}

impl Api {
    pub fn anonymous(base: &str) -> Api {
        Api {
            base: base.to_string(),
            // Test servers with TLS have their self-signed certificate.
            http: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .build()
                .unwrap(),
            cookie: None,
            csrf: None,
            bearer: None,
        }
    }

    pub async fn login(base: &str, username: &str) -> Api {
        let mut api = Api::anonymous(base);
        let resp = api
            .http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "login {username}");
        let cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap();
        api.cookie = Some(cookie.split(';').next().unwrap().to_string());
        let body: Value = resp.json().await.unwrap();
        api.csrf = body["csrf_token"].as_str().map(str::to_string);
        api
    }

    pub fn bearer(base: &str, token: &str) -> Api {
        let mut api = Api::anonymous(base);
        api.bearer = Some(token.to_string());
        api
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("accept", "application/json");
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(c) = &self.csrf {
            req = req.header("x-csrf-token", c);
        }
        if let Some(t) = &self.bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {v}");
        v
    }

    /// A new personal access token of this (session) user.
    pub async fn token(&self, scope: &str) -> (String, String) {
        let v = self
            .post(
                "/api/v1/me/tokens",
                json!({"name": format!("cli {scope}"), "scope": scope}),
            )
            .await;
        (
            v["token"].as_str().unwrap().to_string(),
            v["id"].as_str().unwrap().to_string(),
        )
    }
}

/// Creates the admin with the setup token, a team it owns, and a full
/// personal access token: (admin session, team id, token).
pub async fn bootstrap(s: &Serving) -> (Api, String, String) {
    let token = s
        .setup_token
        .clone()
        .expect("a fresh server prints a setup token");
    Api::anonymous(&s.base)
        .post(
            "/api/v1/setup",
            json!({"setup_token": token, "username": "admin", "password": PASSWORD}),
        )
        .await;
    let admin = Api::login(&s.base, "admin").await;
    let team = admin.post("/api/v1/teams", json!({"name": "Plant"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (pat, _) = admin.token("full").await;
    (admin, team, pat)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and requires success; returns stdout.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// `redwall <words...> --team team` against `s` with `token` (and nothing
/// of the caller's own REDWALL_TEAM), the environment `env` added and
/// `input` on its standard input.
pub fn team_cli(
    s: &Serving,
    token: &str,
    team: &str,
    words: &[&str],
    env: &[(&str, &str)],
    input: Option<&str>,
) -> Output {
    use std::io::Write;
    let mut c = Command::new(BIN);
    c.args(words)
        .args(["--team", team])
        .env("REDWALL_URL", &s.base)
        .env("REDWALL_TOKEN", token)
        .env_remove("REDWALL_TEAM")
        .env_remove("REDWALL_SNAPSHOT_PASSPHRASE")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = c.spawn().expect("the redwall binary runs");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .expect("input reaches the command");
    }
    child.wait_with_output().expect("the command ends")
}

/// Requires the API's refusal (exit 2, `error: <message> (<code>)` on
/// stderr); returns stderr.
pub fn refused(o: Output, code: &str) -> String {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "stdout: {}\nstderr: {err}",
        stdout(&o)
    );
    assert!(
        err.starts_with("error: ") && err.trim_end().ends_with(&format!("({code})")),
        "{err}"
    );
    err
}

/// Makes `user` a member of the team with `role` (created, invited by the
/// admin, accepted); returns their session.
pub async fn join(admin: &Api, s: &Serving, team: &str, user: &str, role: &str) -> Api {
    admin
        .post(
            "/api/v1/users",
            json!({"username": user, "password": PASSWORD}),
        )
        .await;
    let invite = admin
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            json!({"username": user, "role": role}),
        )
        .await;
    let session = Api::login(&s.base, user).await;
    session
        .post(
            &format!(
                "/api/v1/me/invitations/{}/accept",
                invite["id"].as_str().expect("an invitation id")
            ),
            json!({}),
        )
        .await;
    session
}

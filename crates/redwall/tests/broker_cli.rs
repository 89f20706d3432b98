//! The team broker's clients through the real binary: `redwall serve` as a
//! child process (no Node-RED), driven by `redwall broker ...`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_redwall");
const PASSWORD: &str = "violet-harbor-copper-9";

/// A data directory with a config file: TLS off, loopback, cheap hashing.
struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    fn new() -> DataDir {
        let dir = tempfile::tempdir().unwrap();
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
"#,
            data = dir.path().display().to_string(),
        );
        std::fs::write(dir.path().join("redwall.toml"), config).unwrap();
        DataDir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `redwall serve` and waits for its address.
    fn serve(&self) -> Serving {
        let log = self.path().join("serve.log");
        let mut c = Command::new(BIN);
        c.arg("--config").arg(self.path().join("redwall.toml"));
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
        let mut child = c
            .arg("serve")
            // Tests run in parallel: no fixed broker port, no TLS listener.
            .env("REDWALL_MQTT_LISTEN", "127.0.0.1:0")
            .env("REDWALL_MQTTS_LISTEN", "off")
            // No instances here: no npm install behind them.
            .env("REDWALL_INSTALL_AT_START", "false")
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

struct Serving {
    child: Child,
    base: String,
    setup_token: Option<String>,
    log: PathBuf,
}

impl Serving {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- redwall serve log ---\n{}", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP API as the admin's session (set-up, team, token) or a token.
struct Api {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
    csrf: Option<String>,
    bearer: Option<String>,
}

impl Api {
    fn anonymous(base: &str) -> Api {
        Api {
            base: base.to_string(),
            http: reqwest::Client::new(),
            cookie: None,
            csrf: None,
            bearer: None,
        }
    }

    async fn login(base: &str, username: &str) -> Api {
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

    fn bearer(base: &str, token: &str) -> Api {
        let mut api = Api::anonymous(base);
        api.bearer = Some(token.to_string());
        api
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
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

    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {v}");
        v
    }
}

/// Creates the admin with the setup token, a team it owns, and a full
/// personal access token: (team id, token).
async fn bootstrap(s: &Serving) -> (String, String) {
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
    let pat = admin
        .post(
            "/api/v1/me/tokens",
            json!({"name": "cli broker", "scope": "full"}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    (team, pat)
}

/// `redwall broker <args>` against `s` with `token` and `--team team`,
/// `input` on its standard input.
fn broker(s: &Serving, token: &str, team: &str, args: &[&str], input: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.arg("broker")
        .args(args)
        .args(["--team", team])
        .env("REDWALL_URL", &s.base)
        .env("REDWALL_TOKEN", token)
        .env_remove("REDWALL_TEAM")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = c.spawn().unwrap();
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Requires success; returns stdout.
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Requires the API's refusal (exit 2, `error: <message> (<code>)` on
/// stderr, nothing on stdout); returns stderr.
fn refused(o: Output, code: &str) -> String {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "stdout: {}\nstderr: {err}",
        stdout(&o)
    );
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(
        err.starts_with("error: ") && err.trim_end().ends_with(&format!("({code})")),
        "{err}"
    );
    err
}

/// `username: ...` and `password: ...` from stdout, and nothing else there.
fn credentials(out: &str) -> (String, String) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let username = lines[0]
        .strip_prefix("username: ")
        .unwrap_or_else(|| panic!("{out}"));
    let password = lines[1]
        .strip_prefix("password: ")
        .unwrap_or_else(|| panic!("{out}"));
    (username.to_string(), password.to_string())
}

/// The `clients` table's row of the client `name`.
fn row<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find(|l| l.starts_with(&format!("{name} ")))
}

#[tokio::test]
async fn the_cli_manages_broker_clients_end_to_end() {
    let data = DataDir::new();
    let s = data.serve();
    let (team, pat) = bootstrap(&s).await;
    let api = Api::bearer(&s.base, &pat);
    let run = |args: &[&str]| broker(&s, &pat, &team, args, None);
    let clients_path = format!("/api/v1/teams/{team}/broker/clients");

    // Without a token the command says how to give one, and does not try.
    let o = Command::new(BIN)
        .args(["broker", "clients", "--team", &team, "--url", &s.base])
        .env_remove("REDWALL_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("REDWALL_TOKEN"), "{}", stderr(&o));

    // Create: the username and password on stdout alone, once, and a notice
    // that the password will not be shown again. The rules keep the
    // command line's order across kinds of flag.
    let o = run(&[
        "create",
        "sensor-1",
        "--allow-publish",
        "plant/#",
        "--deny",
        "plant/secret/#",
        "--allow-subscribe",
        "plant/cmd/+",
    ]);
    let notice = stderr(&o);
    let (username, password) = credentials(&ok(o));
    assert!(password.starts_with("rwb_"), "{password}");
    assert!(notice.contains("will not be shown again"), "{notice}");
    assert!(!notice.contains(&password), "{notice}");
    let stored = api.get(&clients_path).await;
    assert_eq!(stored[0]["id"], username.as_str(), "{stored}");
    assert_eq!(
        stored[0]["rules"],
        json!([
            {"effect": "allow", "actions": "publish", "filter": "plant/#"},
            {"effect": "deny", "actions": "both", "filter": "plant/secret/#"},
            {"effect": "allow", "actions": "subscribe", "filter": "plant/cmd/+"},
        ])
    );

    // A client without rules may be made; it is told it can do nothing yet.
    let o = run(&["create", "idle gateway"]);
    let notice = stderr(&o);
    let (idle, _) = credentials(&ok(o));
    assert!(notice.contains("no rules"), "{notice}");

    // The list: name, username, no instance, the rules in order; never a
    // password, in the table or in the JSON.
    let out = ok(run(&["clients"]));
    assert!(out.starts_with("NAME "), "{out}");
    let line = row(&out, "sensor-1").unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&username), "{out}");
    assert!(line.contains(" - "), "no instance: {out}");
    assert!(
        line.ends_with(
            "allow publish plant/#; deny both plant/secret/#; allow subscribe plant/cmd/+"
        ),
        "{out}"
    );
    let line = row(&out, "idle gateway").unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&idle) && line.ends_with("(none)"), "{out}");
    assert!(!out.contains("rwb_") && !out.contains(&password), "{out}");
    let json_out = ok(run(&["clients", "--json"]));
    let listed: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(!json_out.contains("rwb_") && !json_out.contains("password"));

    // Rules replaced, deny first as given; the list shows the new ones.
    let out = ok(run(&[
        "rules",
        &username,
        "--deny",
        "plant/secret/#",
        "--allow",
        "plant/#",
    ]));
    assert!(out.contains("2 rule(s) set on sensor-1"), "{out}");
    let out = ok(run(&["clients"]));
    let line = row(&out, "sensor-1").unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.ends_with("deny both plant/secret/#; allow both plant/#"),
        "{out}"
    );
    // ... or from JSON on standard input.
    let o = broker(
        &s,
        &pat,
        &team,
        &["rules", &username, "--rules-json", "-"],
        Some(r#"[{"effect": "allow", "actions": "subscribe", "filter": "plant/+/status"}]"#),
    );
    ok(o);
    let out = ok(run(&["clients"]));
    let line = row(&out, "sensor-1").unwrap_or_else(|| panic!("{out}"));
    assert!(line.ends_with("allow subscribe plant/+/status"), "{out}");
    // Replacing needs rules, or --clear to say none.
    let o = run(&["rules", &username]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--clear"), "{}", stderr(&o));
    ok(run(&["rules", &idle, "--clear"]));

    // A bad filter: the server's message, exit 2, nothing changed or made.
    let err = refused(
        run(&["rules", &username, "--allow", "a/#/b"]),
        "invalid_filter",
    );
    assert!(err.contains("# may only be the last level"), "{err}");
    let err = refused(
        run(&["create", "bad", "--allow-publish", "a/#/b"]),
        "invalid_filter",
    );
    assert!(err.contains("# may only be the last level"), "{err}");
    let out = ok(run(&["clients"]));
    assert!(row(&out, "bad").is_none(), "{out}");
    assert!(
        row(&out, "sensor-1")
            .unwrap()
            .ends_with("allow subscribe plant/+/status"),
        "{out}"
    );

    // Rotate: a new, different password, printed once.
    let o = run(&["rotate", &username]);
    let notice = stderr(&o);
    let (again, rotated) = credentials(&ok(o));
    assert_eq!(again, username);
    assert!(rotated.starts_with("rwb_"), "{rotated}");
    assert_ne!(rotated, password);
    assert!(notice.contains("will not be shown again"), "{notice}");
    assert!(!ok(run(&["clients"])).contains("rwb_"));

    // Revoke: gone from the list; then every command on it is a clear
    // not-found, as is an id that never was.
    let out = ok(run(&["revoke", &username]));
    assert!(
        out.contains(&format!("revoked broker client {username}")),
        "{out}"
    );
    let out = ok(run(&["clients"]));
    assert!(
        row(&out, "sensor-1").is_none() && !out.contains(&username),
        "{out}"
    );
    assert!(row(&out, "idle gateway").is_some(), "{out}");
    for args in [
        vec!["rotate", username.as_str()],
        vec!["revoke", username.as_str()],
        vec!["rules", username.as_str(), "--allow", "a/#"],
        vec!["rotate", "0123456789abcdef0123456789abcdef"],
        vec!["revoke", "not-an-id"],
    ] {
        let err = refused(run(&args), "not_found");
        assert!(
            err.contains(&format!("team {team} has no broker client {}", args[1])),
            "{err}"
        );
    }
}

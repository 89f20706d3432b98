//! The `redwall` command as an operator uses it: the real binary, a real
//! data directory, a real server process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_redwall");
const PASSWORD: &str = "violet-harbor-copper-9";

fn redwall(data: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--data-dir").arg(data);
    c.env_remove("REDWALL_MASTER_KEY")
        .env_remove("REDWALL_DATABASE_URL");
    c
}

struct Serving {
    child: Child,
    base: String,
    output: Vec<String>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path) -> Serving {
    serve_logging_to(data, Stdio::null(), "info")
}

fn serve_logging_to(data: &Path, logs: Stdio, level: &str) -> Serving {
    let mut child = redwall(data)
        .arg("serve")
        .env("REDWALL_LISTEN", "127.0.0.1:0")
        .env("REDWALL_TLS_MODE", "off")
        .env("REDWALL_LOG_FORMAT", "json")
        .env("REDWALL_LOG_LEVEL", level)
        // These tests run no instances: no npm install behind them.
        .env("REDWALL_INSTALL_AT_START", "false")
        .stdout(Stdio::piped())
        .stderr(logs)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    loop {
        let line = lines.next().expect("server printed its address").unwrap();
        output.push(line.clone());
        if let Some(url) = line.strip_prefix("Redwall is listening on ") {
            return Serving {
                child,
                base: url.trim().to_string(),
                output,
            };
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

async fn login(base: &str, username: &str, password: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

#[test]
fn first_start_prints_a_setup_token_and_the_second_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let first = serve(dir.path());
    let text = first.output.join("\n");
    let token = text
        .split("\"setup_token\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a setup token is printed")
        .to_string();
    assert!(token.starts_with("rws_"));
    let status = block_on(async {
        reqwest::Client::new()
            .post(format!("{}/api/v1/setup", first.base))
            .json(&json!({"setup_token": token, "username": "root", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 201);
    drop(first);
    let second = serve(dir.path());
    assert!(!second.output.join("\n").contains("setup_token"));
    assert_eq!(block_on(login(&second.base, "root", PASSWORD)), 200);
}

/// `redwall admin create-user`, the password typed on standard input.
fn create_user(data: &Path, username: &str, admin: bool, password: &str) -> std::process::Output {
    let mut args = vec![
        "admin",
        "create-user",
        "--username",
        username,
        "--password-stdin",
    ];
    if admin {
        args.push("--admin");
    }
    let mut child = redwall(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn create_user_offline_then_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let out = create_user(dir.path(), "ops", true, PASSWORD);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("created platform admin ops"));

    let out = create_user(dir.path(), "weak", false, "password");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12 characters"));

    let s = serve(dir.path());
    assert!(
        !s.output.join("\n").contains("setup_token"),
        "a user exists: no setup token"
    );
    assert_eq!(block_on(login(&s.base, "ops", PASSWORD)), 200);
}

#[test]
fn node_red_users_keep_their_passwords_and_move_to_argon2() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash_with_result("their-old-nr-password", 8)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoA);
    let settings = dir.path().join("settings.js");
    std::fs::write(
        &settings,
        format!(
            "module.exports = {{\n  adminAuth: {{\n    type: \"credentials\",\n    users: [{{ username: \"nradmin\", password: \"{hash}\", permissions: \"*\" }},\n            {{ username: 'bad name', password: '{hash}' }}]\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let out = redwall(dir.path())
        .args(["admin", "import-node-red-users"])
        .arg(&settings)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("imported nradmin"), "{text}");
    assert!(text.contains("skipped \"bad name\""), "{text}");

    let s = serve(dir.path());
    assert_eq!(
        block_on(login(&s.base, "nradmin", "wrong-password-00")),
        401
    );
    assert_eq!(
        block_on(login(&s.base, "nradmin", "their-old-nr-password")),
        200
    );
    drop(s);
    // The successful login replaced the bcrypt hash with argon2id.
    let stored = block_on(async {
        let url = format!("sqlite://{}", dir.path().join("redwall.db").display());
        let store = redwall_store::Store::connect(&url).await.unwrap();
        let user = store
            .find_user_by_username("nradmin")
            .await
            .unwrap()
            .unwrap();
        store.close().await;
        user.password_hash.unwrap()
    });
    assert!(stored.starts_with("$argon2id$"), "{stored}");
}

#[test]
fn audit_verify_names_a_tampered_entry() {
    let dir = tempfile::tempdir().unwrap();
    assert!(create_user(dir.path(), "ops", false, PASSWORD)
        .status
        .success());
    let s = serve(dir.path());
    for _ in 0..3 {
        block_on(login(&s.base, "ops", "wrong-password-00"));
    }
    drop(s);
    let out = redwall(dir.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("audit chain intact: 4 entries"), "{text}");

    block_on(async {
        let url = format!("sqlite://{}", dir.path().join("redwall.db").display());
        let store = redwall_store::Store::connect(&url).await.unwrap();
        redwall_store::testing::disable_audit_guards(&store)
            .await
            .unwrap();
        redwall_store::testing::execute_raw(
            &store,
            "UPDATE audit_log SET client_ip = '10.9.9.9' WHERE seq = 2",
        )
        .await
        .unwrap();
        store.close().await;
    });
    let out = redwall(dir.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("BROKEN at entry 2"), "{text}");
}

/// Retention as an operator runs it: a prune is refused until an export
/// holds the entries; the export verifies on its own; after the prune,
/// `audit verify` proves the rest from the checkpoint.
#[test]
fn audit_export_then_prune_then_verify() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["ops", "dev", "qa"] {
        assert!(create_user(dir.path(), name, false, PASSWORD)
            .status
            .success());
    }
    let run = |args: &[&str]| {
        let out = redwall(dir.path()).args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = run(&["audit", "prune", "--before", "2999-01-01"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("were not exported"), "{text}");

    let file = dir.path().join("audit-old.jsonl");
    let file_arg = file.to_str().unwrap();
    let (code, text) = run(&[
        "audit",
        "export",
        "--before",
        "2999-01-01",
        "--out",
        file_arg,
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("exported entries 1 to 3 (3 entries)"),
        "{text}"
    );
    let (code, text) = run(&["audit", "verify", "--file", file_arg]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("export intact: 3 entries verified"), "{text}");

    let (code, text) = run(&["audit", "prune", "--before", "2999-01-01"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("pruned entries 1 to 3"), "{text}");
    let (code, text) = run(&["audit", "verify"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("audit chain intact: 2 entries"), "{text}");
    assert!(text.contains("entries 1 to 3 were pruned"), "{text}");

    // An edited exported entry is named.
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replacen("\"dev\"", "\"eve\"", 1);
    std::fs::write(&file, edited).unwrap();
    let (code, text) = run(&["audit", "verify", "--file", file_arg]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("export BROKEN at line 2"), "{text}");
}

#[test]
fn config_check_explains_unsafe_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = redwall(dir.path())
        .args(["config", "check"])
        .env("REDWALL_LISTEN", "0.0.0.0:8080")
        .env("REDWALL_TLS_MODE", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("error: server.listen") && text.contains("TLS is off"),
        "{text}"
    );

    let file = dir.path().join("redwall.toml");
    std::fs::write(
        &file,
        "[tls]\nmode = \"files\"\ncert_file = \"/nope/cert.pem\"\n",
    )
    .unwrap();
    let out = redwall(dir.path())
        .arg("--config")
        .arg(&file)
        .args(["config", "check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tls.cert_file: /nope/cert.pem does not exist"),
        "{text}"
    );
    assert!(text.contains("tls.key_file"), "{text}");

    let out = redwall(dir.path())
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn logs_never_contain_secrets_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let s = serve_logging_to(dir.path(), Stdio::from(log_file), "trace");
    let text = s.output.join("\n");
    let setup = text
        .split("\"setup_token\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let (cookie, token) = block_on(async {
        let http = reqwest::Client::new();
        let base = &s.base;
        http.post(format!("{base}/api/v1/setup"))
            .json(&json!({"setup_token": setup, "username": "root", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        http.post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": "root", "password": "a-wrong-secret-99"}))
            .send()
            .await
            .unwrap();
        let r = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": "root", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let body: serde_json::Value = r.json().await.unwrap();
        let csrf = body["csrf_token"].as_str().unwrap().to_string();
        let t: serde_json::Value = http
            .post(format!("{base}/api/v1/me/tokens"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&json!({"name": "ci", "scope": "full"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = t["token"].as_str().unwrap().to_string();
        http.get(format!("{base}/api/v1/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        (cookie, token)
    });
    drop(s);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.len() > 100, "the server logged something: {logs}");
    let session = cookie.split('=').nth(1).unwrap();
    for secret in [
        PASSWORD,
        "a-wrong-secret-99",
        setup.as_str(),
        session,
        token.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
}

#[test]
fn sso_link_ties_an_existing_user_to_a_providers_subject_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("redwall.toml");
    std::fs::write(
        &config,
        r#"
[[sso.ldap]]
name = "corp"
url = "ldap://127.0.0.1:389"
bind_dn = "cn=svc,dc=example,dc=org"
bind_password = { env = "CORP_LDAP_PASSWORD" }
user_base = "ou=people,dc=example,dc=org"
provision = false
"#,
    )
    .unwrap();
    assert!(create_user(&data, "alice", false, PASSWORD)
        .status
        .success());
    let link = |provider: &str, user: &str| {
        redwall(&data)
            .arg("--config")
            .arg(&config)
            .args([
                "sso",
                "link",
                "--provider",
                provider,
                "--subject",
                "uid=alice,ou=people,dc=example,dc=org",
                "--username",
                user,
            ])
            .output()
            .unwrap()
    };
    let out = link("corp", "alice");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = link("corp", "alice");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already linked"));
    let unknown = link("nope", "alice");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no provider"));
    let nobody = link("corp", "bob");
    assert_eq!(nobody.status.code(), Some(2));
}

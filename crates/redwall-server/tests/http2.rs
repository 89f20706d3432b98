//! The default listener as browsers meet it: HTTPS with the self-signed
//! certificate, spoken over HTTP/2 (ALPN), where a request names its host in
//! `:authority` and carries no `Host` header.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use redwall_server::config::TlsMode;
use serde_json::json;

async fn https_server() -> TestServer {
    TestServer::start_with(Backend::Sqlite, |c| c.tls.mode = TlsMode::SelfSigned)
        .await
        .unwrap()
}

/// A browser-like client: HTTP/2 only, trusting the server's certificate.
fn h2_client(s: &TestServer) -> reqwest::Client {
    let pem = std::fs::read(s.data_dir.path().join("tls/self-signed-cert.pem")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn base(s: &TestServer) -> String {
    format!("https://localhost:{}", s.running.addr.port())
}

fn first_cookie(r: &reqwest::Response) -> String {
    r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn hidden_field(page: &str, name: &str) -> String {
    page.split(&format!(r#"name="{name}" value=""#))
        .nth(1)
        .unwrap_or_else(|| panic!("the page has a {name} field"))
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_form_works_over_http2() {
    let s = https_server().await;
    let http = h2_client(&s);
    let base = base(&s);
    let page = http.get(format!("{base}/setup")).send().await.unwrap();
    assert_eq!(page.version(), reqwest::Version::HTTP_2);
    assert_eq!(page.status(), 200);
    let cookie = first_cookie(&page);
    let text = page.text().await.unwrap();
    let csrf = hidden_field(&text, "csrf");
    let form_id = hidden_field(&text, "form_id");
    let token = s.setup_token.clone().unwrap();
    let fields = [
        ("csrf", csrf.as_str()),
        ("form_id", form_id.as_str()),
        ("setup_token", token.as_str()),
        ("username", ADMIN),
        ("password", ADMIN_PASSWORD),
        ("password_confirm", ADMIN_PASSWORD),
    ];
    // What Chromium sends: our own Origin, and the authority only as :authority.
    let r = http
        .post(format!("{base}/setup"))
        .header("cookie", &cookie)
        .header("origin", &base)
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        r.status(),
        303,
        "setup over HTTP/2: {}",
        r.text().await.unwrap()
    );
    assert_eq!(r.headers()["location"], "/account/mfa?first_run=1");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_writes_over_http2_check_the_origin_against_the_authority() {
    let s = https_server().await;
    s.admin().await;
    let http = h2_client(&s);
    let base = base(&s);
    let login = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = first_cookie(&login);
    assert!(cookie.starts_with("__Host-"), "{cookie}");
    let body: serde_json::Value = login.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap().to_string();
    let create = |origin: String, name: &'static str| {
        http.post(format!("{base}/api/v1/teams"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .header("origin", origin)
            .json(&json!({ "name": name }))
            .send()
    };
    let ours = create(base.clone(), "ops").await.unwrap();
    assert_eq!(ours.version(), reqwest::Version::HTTP_2);
    assert_eq!(ours.status(), 201, "{}", ours.text().await.unwrap());
    let foreign = create("https://evil.example".into(), "evil").await.unwrap();
    assert_eq!(foreign.status(), 403);
    s.stop().await;
}

/// Sends `bytes` of JSON to `path` with curl, the way a user reported it;
/// returns the status curl saw ("000" when the connection was reset) and the body.
fn curl_post_with(s: &TestServer, flags: &[&str], path: &str, bytes: usize) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    let filler = "x".repeat(bytes.saturating_sub(20));
    std::fs::write(&body, format!(r#"{{"username":"{filler}"}}"#)).unwrap();
    let out = std::process::Command::new("curl")
        .args(flags)
        .args([
            "-sk",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/json",
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(format!("{}{path}", base(s)))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_its_413_on_both_protocols() {
    let s = https_server().await;
    let mut seen = Vec::new();
    for protocol in ["--http1.1", "--http2"] {
        for bytes in [70 * 1024, 3 * 1024 * 1024] {
            for _ in 0..5 {
                // Without `Expect: 100-continue` the client sends at once.
                let flags = [protocol, "-H", "expect:"];
                let (status, body) = curl_post_with(&s, &flags, "/api/v1/auth/login", bytes);
                seen.push(format!("{protocol} {bytes}: {status}"));
                if status == "413" {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(v["error"]["code"], "body_too_large", "{body}");
                }
            }
        }
    }
    // A client on a slow link is still sending long after the answer left:
    // closing then would turn its answer into a reset.
    let slow = ["--http1.1", "--limit-rate", "1M", "-H", "expect:"];
    let (status, _) = curl_post_with(&s, &slow, "/api/v1/auth/login", 3 * 1024 * 1024);
    seen.push(format!("--http1.1 slow 3145728: {status}"));
    assert!(
        seen.iter().all(|l| l.ends_with(": 413")),
        "every oversized body answered 413:\n{}",
        seen.join("\n")
    );
    s.stop().await;
}

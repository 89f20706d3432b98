//! TLS by default, no plain HTTP beyond loopback, and forwarded headers
//! honoured only from listed proxies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use redwall_server::config::TlsMode;
use serde_json::json;

async fn tls_server() -> TestServer {
    TestServer::start_with(Backend::Sqlite, |c| c.tls.mode = TlsMode::SelfSigned)
        .await
        .unwrap()
}

fn trusting_client(
    s: &TestServer,
    min: reqwest::tls::Version,
    max: reqwest::tls::Version,
) -> reqwest::Client {
    let pem = std::fs::read(s.data_dir.path().join("tls/self-signed-cert.pem")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .min_tls_version(min)
        .max_tls_version(max)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_is_https_with_a_certificate_for_localhost() {
    let s = tls_server().await;
    assert!(s.running.base_url().starts_with("https://"));
    let url = format!("https://localhost:{}/healthz", s.running.addr.port());
    use reqwest::tls::Version;
    for (min, max) in [
        (Version::TLS_1_2, Version::TLS_1_2),
        (Version::TLS_1_3, Version::TLS_1_3),
    ] {
        let r = trusting_client(&s, min, max)
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age="));
    }
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/healthz",
            s.running.addr.port()
        ))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_protocol_versions_are_refused() {
    let s = tls_server().await;
    let connect = format!("127.0.0.1:{}", s.running.addr.port());
    for flag in ["-tls1", "-tls1_1"] {
        let out = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &connect,
                flag,
                "-cipher",
                "DEFAULT:@SECLEVEL=0",
            ])
            .stdin(std::process::Stdio::null())
            .output();
        let Ok(out) = out else {
            eprintln!("openssl not installed: skipping the {flag} probe");
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() || text.contains("Cipher is (NONE)"),
            "{flag} was accepted: {text}"
        );
    }
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-tls1_2"])
        .stdin(std::process::Stdio::null())
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains("TLSv1.2"), "{text}");
        assert!(
            text.contains("GCM") || text.contains("CHACHA20"),
            "only AEAD suites: {text}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_cookie_is_host_prefixed_and_secure() {
    let s = tls_server().await;
    let admin = s.admin().await;
    let r = s
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD}),
        )
        .await;
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-redwall_session=rwc_"),
        "{cookie}"
    );
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("Path=/"));
    assert!(!cookie.contains("Domain="));
    assert_eq!(admin.get("/api/v1/me").await.status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_beyond_loopback_does_not_start() {
    let db = TestDatabase::sqlite().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = redwall_server::config::Config {
        data_dir: dir.path().to_path_buf(),
        database_url: Some(db.url.clone()),
        ..Default::default()
    };
    config.server.listen = "0.0.0.0:0".parse().unwrap();
    config.tls.mode = TlsMode::Off;
    let result = redwall_server::start(redwall_server::StartOptions {
        config,
        clock: std::sync::Arc::new(redwall_server::clock::SystemClock),
        master_key: None,
        run_instances: false,
    })
    .await;
    let err = result.err().expect("refused to start").to_string();
    assert!(err.contains("TLS is off"), "{err}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    // Without trusted proxies, X-Forwarded-For is ignored.
    let s = TestServer::start_with(Backend::Sqlite, |_| {})
        .await
        .unwrap();
    let admin = s.admin().await;
    let req = admin
        .http
        .post(format!("{}/api/v1/auth/login", admin.base))
        .header("x-forwarded-for", "198.51.100.7")
        .json(&json!({"username": "nobody", "password": "wrong-password-1"}));
    admin.raw(req).await;
    let failed = audit_events(&admin, "auth.login_failed").await;
    assert_eq!(failed[0]["client_ip"], "127.0.0.1");
    s.stop().await;

    // Behind a listed proxy, the client is the right-most untrusted hop.
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await
    .unwrap();
    let admin = s.admin().await;
    let req = admin
        .http
        .post(format!("{}/api/v1/auth/login", admin.base))
        .header("x-forwarded-for", "203.0.113.66, 198.51.100.7")
        .header("x-forwarded-proto", "https")
        .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}));
    let r = admin.raw(req).await;
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("__Host-"),
        "the proxy spoke HTTPS"
    );
    let logins = audit_events(&admin, "auth.login").await;
    assert_eq!(logins[0]["client_ip"], "198.51.100.7");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_and_key_can_come_from_files() {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let (c, k) = (cert.clone(), key.clone());
    let s = TestServer::start_with(Backend::Sqlite, move |config| {
        config.tls.mode = TlsMode::Files;
        config.tls.cert_file = Some(c);
        config.tls.key_file = Some(k);
    })
    .await
    .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(made.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!(
            "https://localhost:{}/healthz",
            s.running.addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;

    // A key that does not match the certificate stops the start with a reason.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&key, other.key_pair.serialize_pem()).unwrap();
    let db = TestDatabase::sqlite().await.unwrap();
    let mut config = redwall_server::config::Config {
        data_dir: dir.path().to_path_buf(),
        database_url: Some(db.url.clone()),
        ..Default::default()
    };
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.tls.mode = TlsMode::Files;
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    let err = redwall_server::start(redwall_server::StartOptions {
        config,
        clock: std::sync::Arc::new(redwall_server::clock::SystemClock),
        master_key: None,
        run_instances: false,
    })
    .await
    .err()
    .expect("a mismatched key is refused")
    .to_string();
    assert!(err.contains("do not match"), "{err}");
    db.cleanup().await;
}

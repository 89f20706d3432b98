//! OpenID Connect login against a real, certified provider: the npm
//! package `oidc-provider`, installed once into a shared cache and started
//! per test on a loopback port (tests/oidc/provider.mjs). The tests play the
//! browser with reqwest: follow the redirects, post the provider's login and
//! consent forms, come back to Redwall's callback.
//!
//! The provider sits behind a small forwarding shim (its issuer URL is the
//! shim's), so a test can change what Redwall's token request gets back:
//! - `Mode::Tamper`: the real answer with the ID token's payload altered
//!   (tampered token -> bad_signature);
//! - `Mode::Replace`: another, validly signed token answer the test got
//!   from the same provider itself: one issued to the client "other" with
//!   Redwall's nonce (wrong_audience), or one issued to "redwall" with
//!   another nonce (nonce_mismatch).
//!
//! Everything else (expiry, replayed state, provider error, unusable
//! username, provider down) comes from the real provider or a dead port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use redwall_server::config::Config;
use serde_json::{json, Value};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

const OIDC_PROVIDER_VERSION: &str = "8.8.1";
const SECRET_ENV: &str = "REDWALL_TEST_OIDC_SECRET";
const SECRET: &str = "redwall-test-secret";

/// Installs `oidc-provider` once for all test processes (a file lock
/// serialises them); answers the path of its entry module.
fn shared_install() -> PathBuf {
    let dir = PathBuf::from("/var/tmp/redwall-test-oidc-provider");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".install.lock"))
        .unwrap();
    // SAFETY: flock on a descriptor we own; released when `lock` closes.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let marker = dir.join(format!(".installed-{OIDC_PROVIDER_VERSION}"));
    if !marker.exists() {
        let status = std::process::Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&dir)
            .arg(format!("oidc-provider@{OIDC_PROVIDER_VERSION}"))
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm install oidc-provider failed");
        std::fs::write(&marker, b"").unwrap();
    }
    dir.join("node_modules/oidc-provider/lib/index.js")
}

#[derive(Clone)]
enum Mode {
    Pass,
    Tamper,
    Replace(Value),
}

/// The real provider behind the shim.
struct Idp {
    issuer: String,
    mode: Arc<Mutex<Mode>>,
    /// Time spent in the provider (including the shim's hop), summed.
    upstream: Arc<Mutex<Duration>>,
    /// Held so the provider stops with the test (kill_on_drop).
    child: tokio::sync::Mutex<tokio::process::Child>,
    /// How the provider was started, to start it again.
    cfg: Value,
}

struct Options {
    alg: &'static str,
    id_token_ttl: u64,
    claims_in_id_token: bool,
}

const RS256: Options = Options {
    alg: "RS256",
    id_token_ttl: 3600,
    claims_in_id_token: false,
};

async fn free_listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Forwards everything to the provider, except that the token endpoint's
/// answer follows `mode`.
async fn shim(
    listener: tokio::net::TcpListener,
    target: u16,
    mode: Arc<Mutex<Mode>>,
    upstream: Arc<Mutex<Duration>>,
) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let http = http.clone();
        let mode = mode.clone();
        let upstream = upstream.clone();
        async move {
            let began = std::time::Instant::now();
            let url = format!(
                "http://127.0.0.1:{target}{}",
                uri.path_and_query().map_or("/", |p| p.as_str())
            );
            let mut req = http.request(method, url).body(body);
            for (k, v) in &headers {
                if k != "content-length" {
                    req = req.header(k, v);
                }
            }
            let r = req.send().await.unwrap();
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
            let mut out = HeaderMap::new();
            for (k, v) in r.headers() {
                if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                    out.append(k, v.clone());
                }
            }
            let body = r.bytes().await.unwrap();
            *upstream.lock().unwrap() += began.elapsed();
            let current = mode.lock().unwrap().clone();
            if uri.path() == "/token" {
                match current {
                    Mode::Pass => {}
                    Mode::Replace(v) => {
                        return (
                            StatusCode::OK,
                            [("content-type", "application/json")],
                            v.to_string(),
                        )
                            .into_response()
                    }
                    Mode::Tamper => {
                        let mut v: Value = serde_json::from_slice(&body).unwrap();
                        let id = v["id_token"].as_str().unwrap().to_string();
                        let parts: Vec<&str> = id.split('.').collect();
                        let payload = base64_decode(parts[1]);
                        let mut claims: Value = serde_json::from_slice(&payload).unwrap();
                        claims["sub"] = json!("admin");
                        let forged = format!(
                            "{}.{}.{}",
                            parts[0],
                            base64_encode(claims.to_string().as_bytes()),
                            parts[2]
                        );
                        v["id_token"] = json!(forged);
                        return (
                            StatusCode::OK,
                            [("content-type", "application/json")],
                            v.to_string(),
                        )
                            .into_response();
                    }
                }
            }
            (status, out, body).into_response()
        }
    };
    let app = axum::Router::new().fallback(handler);
    axum::serve(listener, app).await.unwrap();
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Idp {
    /// Starts the provider for a Redwall at `redwall` (its base URL).
    async fn start(shim_listener: tokio::net::TcpListener, redwall: &str, opts: &Options) -> Idp {
        let module = tokio::task::spawn_blocking(shared_install).await.unwrap();
        let issuer = format!("http://{}", shim_listener.local_addr().unwrap());
        let port = free_listener().await.local_addr().unwrap().port();
        let cfg = json!({
            "module": module,
            "issuer": issuer,
            "port": port,
            "alg": opts.alg,
            "redirect_uris": [format!("{redwall}/api/v1/auth/oidc/corp/callback")],
            "post_logout_redirect_uris": [format!("{redwall}/")],
            "id_token_ttl": opts.id_token_ttl,
            "claims_in_id_token": opts.claims_in_id_token,
        });
        let child = spawn_provider(&cfg).await;
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let upstream = Arc::new(Mutex::new(Duration::ZERO));
        tokio::spawn(shim(shim_listener, port, mode.clone(), upstream.clone()));
        Idp {
            issuer,
            mode,
            upstream,
            child: tokio::sync::Mutex::new(child),
            cfg,
        }
    }

    /// Stops the provider and starts it again on the same port: it comes
    /// back with new signing keys under the same `kid`s (a key rotation that
    /// keeps the key id).
    async fn restart(&self) {
        let mut child = self.child.lock().await;
        child.kill().await.unwrap();
        *child = spawn_provider(&self.cfg).await;
    }

    fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
}

async fn spawn_provider(cfg: &Value) -> tokio::process::Child {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs");
    let started = std::time::Instant::now();
    let mut child = tokio::process::Command::new("node")
        .arg(script)
        .arg(cfg.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    // Everything the provider says, so a provider that never gets ready
    // says why instead of a bare timeout.
    let said = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let heard = said.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut all = heard.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "listening" {
                return true;
            }
            said.lock().unwrap().push_str(&format!("stdout: {line}\n"));
        }
        false
    };
    let ready = tokio::time::timeout(Duration::from_secs(30), ready).await;
    let status = child.try_wait().unwrap();
    assert!(
        matches!(ready, Ok(true)),
        "the provider did not start ({:?} after {:?}; exit status {status:?}); it said:\n{}",
        ready,
        started.elapsed(),
        said.lock().unwrap()
    );
    // Keep draining stdout so the provider never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// The `[[sso.oidc]]` table for a provider at `issuer`.
fn oidc_config(issuer: &str, extra: &str) -> Config {
    let text = format!(
        r#"
        [[oidc]]
        name = "corp"
        label = "Corp SSO"
        issuer = "{issuer}"
        client_id = "redwall"
        client_secret = {{ env = "{SECRET_ENV}" }}
        scopes = ["openid", "profile", "groups"]
        {extra}

        [[mappings]]
        provider = "corp"
        group = "nr-editors"
        team = "ops"
        role = "member"
        "#
    );
    Config {
        sso: toml::from_str(&text).unwrap(),
        ..Config::default()
    }
}

/// A Redwall whose provider "corp" is at the shim bound to `listener`.
async fn redwall(listener: &tokio::net::TcpListener, extra: &str) -> TestServer {
    redwall_on(Backend::Sqlite, listener, extra).await.unwrap()
}

async fn redwall_on(
    backend: Backend,
    listener: &tokio::net::TcpListener,
    extra: &str,
) -> Option<TestServer> {
    // SAFETY (set_var): set before the server or any other thread reads the
    // environment; every test sets the same value.
    std::env::set_var(SECRET_ENV, SECRET);
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let sso = oidc_config(&issuer, extra).sso;
    TestServer::start_with(backend, move |c| c.sso = sso).await
}

/// [`redwall`] with more settings.
async fn redwall_with(
    listener: &tokio::net::TcpListener,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    std::env::set_var(SECRET_ENV, SECRET);
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let sso = oidc_config(&issuer, "").sso;
    TestServer::start_with(Backend::Sqlite, move |c| {
        c.sso = sso;
        tweak(c)
    })
    .await
    .unwrap()
}

/// A browser at the provider: keeps its cookies, follows no redirect by itself.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_string()
    } else {
        format!("{base}{location}")
    }
}

/// Walks the provider's pages as `user` until it sends the browser to
/// `back_to`; answers that URL (the callback with code and state).
async fn authorize(
    idp: &Idp,
    b: &reqwest::Client,
    start: &str,
    user: &str,
    back_to: &str,
) -> String {
    let mut url = start.to_string();
    for _ in 0..20 {
        if url.starts_with(back_to) {
            return url;
        }
        let r = b.get(&url).send().await.unwrap();
        if r.status().is_redirection() {
            url = absolute(&idp.issuer, r.headers()["location"].to_str().unwrap());
            continue;
        }
        let html = r.text().await.unwrap();
        let action = between(&html, "action=\"", "\"").expect("a form");
        let prompt = between(&html, "name=\"prompt\" value=\"", "\"").expect("a prompt");
        let form: Vec<(&str, &str)> = if prompt == "login" {
            vec![("prompt", "login"), ("login", user), ("password", "any")]
        } else {
            vec![("prompt", prompt)]
        };
        let r = b
            .post(absolute(&idp.issuer, action))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection(), "{}", r.text().await.unwrap());
        url = absolute(&idp.issuer, r.headers()["location"].to_str().unwrap());
    }
    panic!("the provider never sent the browser back");
}

/// A login started at Redwall: the provider's URL and our login cookie.
struct Started {
    authorize_url: String,
    cookie: String,
}

async fn start_login(s: &TestServer, next: &str) -> Started {
    let r = s
        .anonymous()
        .get(&format!("/api/v1/auth/oidc/corp/start?next={next}"))
        .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    Started {
        authorize_url: r.headers["location"].to_str().unwrap().to_string(),
        cookie: cookie.split(';').next().unwrap().to_string(),
    }
}

/// Sends the browser back to Redwall's callback with the login cookie.
async fn callback(s: &TestServer, url: &str, cookie: &str) -> Resp {
    let path = url.strip_prefix(&s.url("")).unwrap();
    let mut c = s.anonymous();
    c.cookie = Some(cookie.to_string());
    c.get(path).await
}

/// The full browser flow for `user`; answers Redwall's callback answer.
async fn sso_login(s: &TestServer, idp: &Idp, user: &str) -> Resp {
    let started = start_login(s, "/teams").await;
    let back = authorize(idp, &browser(), &started.authorize_url, user, &s.url("")).await;
    callback(s, &back, &started.cookie).await
}

/// A client with the session a successful callback set.
fn session_of(s: &TestServer, r: &Resp) -> Client {
    let set = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("redwall_session="))
        .expect("a session cookie");
    let mut c = s.anonymous();
    c.cookie = Some(set.split(';').next().unwrap().to_string());
    c
}

async fn sso_failures(admin: &Client) -> Vec<String> {
    audit_events(admin, "auth.sso_failed")
        .await
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn user_count(admin: &Client) -> usize {
    let r = admin.get("/api/v1/users").await;
    r.body["users"].as_array().map_or(0, Vec::len)
}

async fn alice_logs_in_and_gets_her_team_role(backend: Backend) {
    let listener = free_listener().await;
    let Some(s) = redwall_on(backend, &listener, "").await else {
        return;
    };
    let admin = s.admin().await;
    let ops = create_team(&admin, "ops").await;
    let idp = Idp::start(listener, &s.url(""), &RS256).await;

    // The console's login page has the provider's button.
    let page = s.anonymous().get("/login?next=/teams").await;
    assert!(
        page.text
            .contains(r#"href="/api/v1/auth/oidc/corp/start?next=/teams""#),
        "{}",
        page.text
    );

    let r = sso_login(&s, &idp, "alice").await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.headers["location"], "/teams");
    let alice = session_of(&s, &r);
    let me = alice.get("/api/v1/me").await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["username"], "alice");

    // Provisioned once, by the stable subject; nr-editors -> ops Member.
    let provisioned = audit_events(&admin, "user.provisioned").await;
    assert_eq!(provisioned.len(), 1);
    assert_eq!(
        provisioned[0]["details"]["subject"],
        format!("{}#alice", idp.issuer)
    );
    let members = admin.get(&format!("/api/v1/teams/{ops}/members")).await;
    let alice_in_ops = members
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["username"] == "alice")
        .cloned();
    assert_eq!(
        alice_in_ops.map(|m| m["role"].clone()),
        Some(json!("member")),
        "{}",
        members.text
    );
    let logins = audit_events(&admin, "auth.login").await;
    assert!(logins.iter().any(|e| e["details"]["provider"] == "corp"));

    // A second login is the same user; bob (no groups) gets no team.
    let again = sso_login(&s, &idp, "alice").await;
    assert_eq!(again.status, 303, "{}", again.text);
    assert_eq!(audit_events(&admin, "user.provisioned").await.len(), 1);
    let bob = sso_login(&s, &idp, "bob").await;
    assert_eq!(bob.status, 303, "{}", bob.text);
    let bob = session_of(&s, &bob);
    assert_eq!(bob.get(&format!("/api/v1/teams/{ops}")).await.status, 404);
    assert_eq!(user_count(&admin).await, 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_login_provisions_alice_into_ops_sqlite() {
    alice_logs_in_and_gets_her_team_role(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_login_provisions_alice_into_ops_postgres() {
    alice_logs_in_and_gets_her_team_role(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_carrying_the_claims_themselves_log_in() {
    let listener = free_listener().await;
    let s = redwall(&listener, "").await;
    let admin = s.admin().await;
    create_team(&admin, "ops").await;
    let opts = Options {
        alg: "ES256",
        id_token_ttl: 3600,
        claims_in_id_token: true,
    };
    let idp = Idp::start(listener, &s.url(""), &opts).await;
    let r = sso_login(&s, &idp, "alice").await;
    assert_eq!(r.status, 303, "{}", r.text);
    let me = session_of(&s, &r).get("/api/v1/me").await;
    assert_eq!(me.body["username"], "alice");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_is_good_for_one_callback_only() {
    let listener = free_listener().await;
    let s = redwall(&listener, "").await;
    let admin = s.admin().await;
    let idp = Idp::start(listener, &s.url(""), &RS256).await;
    let started = start_login(&s, "/").await;
    let back = authorize(&idp, &browser(), &started.authorize_url, "bob", &s.url("")).await;
    let first = callback(&s, &back, &started.cookie).await;
    assert_eq!(first.status, 303, "{}", first.text);
    let again = callback(&s, &back, &started.cookie).await;
    assert_eq!((again.status, again.code()), (401, "sso_failed"));
    assert!(again
        .headers
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap().starts_with("redwall_session=")));
    // Without the login cookie (another browser): the state means nothing.
    let mut stranger = s.anonymous();
    stranger.cookie = None;
    let r = stranger.get(back.strip_prefix(&s.url("")).unwrap()).await;
    assert_eq!(r.status, 401);
    assert_eq!(sso_failures(&admin).await, ["bad_state", "replayed_state"]);
    s.stop().await;
}

/// Gets a token answer from the provider as `client_id`, with `nonce`,
/// playing a client ourselves (code flow with PKCE).
async fn token_as(idp: &Idp, s: &TestServer, client_id: &str, nonce: &str, user: &str) -> Value {
    let (challenge, verifier) = openidconnect::PkceCodeChallenge::new_random_sha256();
    let redirect = s.url("/api/v1/auth/oidc/corp/callback");
    let mut url = reqwest::Url::parse(&format!("{}/auth", idp.issuer)).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid profile groups")
        .append_pair("redirect_uri", &redirect)
        .append_pair("state", "test-state")
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", "S256");
    let back = authorize(idp, &browser(), url.as_str(), user, &s.url("")).await;
    let code = reqwest::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .to_string();
    let r = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer))
        .basic_auth(client_id, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("code_verifier", verifier.secret()),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    r.json().await.unwrap()
}

fn nonce_of(authorize_url: &str) -> String {
    reqwest::Url::parse(authorize_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "nonce")
        .unwrap()
        .1
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_or_replayed_id_tokens_are_refused() {
    let listener = free_listener().await;
    let s = redwall(&listener, "").await;
    let admin = s.admin().await;
    let idp = Idp::start(listener, &s.url(""), &RS256).await;

    // Tampered payload (sub changed), original signature.
    let started = start_login(&s, "/").await;
    let back = authorize(&idp, &browser(), &started.authorize_url, "bob", &s.url("")).await;
    idp.set_mode(Mode::Tamper);
    let r = callback(&s, &back, &started.cookie).await;
    assert_eq!((r.status, r.code()), (401, "sso_failed"), "{}", r.text);

    // Validly signed, with our nonce, but issued to another client.
    idp.set_mode(Mode::Pass);
    let started = start_login(&s, "/").await;
    let back = authorize(&idp, &browser(), &started.authorize_url, "bob", &s.url("")).await;
    let foreign = token_as(&idp, &s, "other", &nonce_of(&started.authorize_url), "bob").await;
    idp.set_mode(Mode::Replace(foreign));
    let r = callback(&s, &back, &started.cookie).await;
    assert_eq!(r.status, 401, "{}", r.text);

    // Validly signed for us, but from another login (another nonce).
    idp.set_mode(Mode::Pass);
    let started = start_login(&s, "/").await;
    let back = authorize(&idp, &browser(), &started.authorize_url, "bob", &s.url("")).await;
    let other_login = token_as(&idp, &s, "redwall", "some-other-nonce", "bob").await;
    idp.set_mode(Mode::Replace(other_login));
    let r = callback(&s, &back, &started.cookie).await;
    assert_eq!(r.status, 401, "{}", r.text);

    assert_eq!(
        sso_failures(&admin).await,
        ["nonce_mismatch", "wrong_audience", "bad_signature"]
    );
    assert_eq!(user_count(&admin).await, 1, "no user was created");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_id_token_is_refused() {
    let listener = free_listener().await;
    let s = redwall(&listener, "").await;
    let admin = s.admin().await;
    let opts = Options {
        alg: "ES256",
        id_token_ttl: 30,
        claims_in_id_token: true,
    };
    let idp = Idp::start(listener, &s.url(""), &opts).await;
    let started = start_login(&s, "/").await;
    let back = authorize(
        &idp,
        &browser(),
        &started.authorize_url,
        "alice",
        &s.url(""),
    )
    .await;
    // 30 s of validity plus the 60 s leeway have passed for Redwall; the
    // 10-minute login cookie has not expired.
    s.clock.advance_secs(120);
    let r = callback(&s, &back, &started.cookie).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(sso_failures(&admin).await, ["expired"]);
    assert_eq!(user_count(&admin).await, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_and_bad_usernames_are_audited_failures() {
    let listener = free_listener().await;
    let s = redwall(&listener, "").await;
    let admin = s.admin().await;
    let idp = Idp::start(listener, &s.url(""), &RS256).await;

    // The user cancels at the provider: it answers error=access_denied.
    let started = start_login(&s, "/").await;
    let b = browser();
    let r = b.get(&started.authorize_url).send().await.unwrap();
    let interaction = absolute(&idp.issuer, r.headers()["location"].to_str().unwrap());
    let page = b
        .get(&interaction)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let abort = between(&page, "<a href=\"", "\"").expect("a cancel link");
    let back = authorize(&idp, &b, &absolute(&idp.issuer, abort), "alice", &s.url("")).await;
    assert!(back.contains("error=access_denied"), "{back}");
    let r = callback(&s, &back, &started.cookie).await;
    assert_eq!((r.status, r.code()), (401, "sso_failed"));
    let failed = audit_events(&admin, "auth.sso_failed").await;
    assert_eq!(failed[0]["details"]["reason"], "provider_error");
    assert_eq!(failed[0]["details"]["error"], "access_denied");

    // A login name Redwall cannot use.
    let r = sso_login(&s, &idp, "mallory").await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(
        sso_failures(&admin).await,
        ["unusable_username", "provider_error"]
    );
    assert_eq!(user_count(&admin).await, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_callbacks_get_a_clear_400_and_an_audit_entry() {
    let listener = free_listener().await;
    let s = redwall(&listener, "").await;
    let admin = s.admin().await;
    let idp = Idp::start(listener, &s.url(""), &RS256).await;
    let started = start_login(&s, "/").await;
    let mut c = s.anonymous();
    c.cookie = Some(started.cookie.clone());
    let cb = "/api/v1/auth/oidc/corp/callback";
    let huge = "a".repeat(5000);
    for q in [
        format!("?code={huge}&state=x"),
        "?code=a&code=b&state=x".to_string(),
        format!("?state={}", "s".repeat(600)),
        "?code=a%00b&state=x".to_string(),
    ] {
        let r = c.get(&format!("{cb}{q}")).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_oidc_request"),
            "{q}: {}",
            r.text
        );
    }
    // A browser (asking for HTML) goes back to the login page instead, with
    // a fixed message and no detail.
    let mut navigating = c.clone();
    navigating
        .headers
        .push(("accept", "text/html,application/xhtml+xml".into()));
    let r = navigating.get(&format!("{cb}?code=a&code=b&state=x")).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.headers["location"], "/login?error=sso_failed");
    let page = s.anonymous().get("/login?error=sso_failed").await;
    assert!(page.text.contains("Single sign-on did not succeed"));
    for next in [
        "https://evil.example/",
        "//evil.example",
        "/%5Cevil.example",
    ] {
        let r = s
            .anonymous()
            .get(&format!("/api/v1/auth/oidc/corp/start?next={next}"))
            .await;
        assert_eq!(r.status, 400, "{next}");
    }
    assert_eq!(
        s.anonymous()
            .get("/api/v1/auth/oidc/nope/start")
            .await
            .status,
        404
    );
    // A provider that names another issuer (RFC 9207 mix-up defence).
    let back = authorize(&idp, &browser(), &started.authorize_url, "bob", &s.url("")).await;
    let mixed = back.replace("iss=", "iss=http%3A%2F%2Fevil.example&x=");
    let r = callback(&s, &mixed, &started.cookie).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let reasons = sso_failures(&admin).await;
    assert_eq!(reasons.first().map(String::as_str), Some("wrong_issuer"));
    // Eight bad requests from one address within the minute: the first is
    // written, the other seven are counted for the minute's summary.
    assert_eq!(
        reasons.iter().filter(|r| *r == "bad_request").count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(user_count(&admin).await, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_down_or_hangs_is_explained() {
    // Down: nothing listens on the issuer's port.
    let dead = free_listener().await;
    let s = redwall(&dead, "").await;
    drop(dead);
    let admin = s.admin().await;
    let r = s.anonymous().get("/api/v1/auth/oidc/corp/start").await;
    assert_eq!(
        (r.status, r.code()),
        (502, "provider_unavailable"),
        "{}",
        r.text
    );
    assert_eq!(sso_failures(&admin).await, ["discovery_failed"]);
    s.stop().await;

    // Hangs: accepts, never answers; the provider's 1 s timeout applies.
    let hung = free_listener().await;
    let s = redwall(&hung, "timeout_secs = 1").await;
    let admin = s.admin().await;
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = hung.accept().await {
            open.push(sock);
        }
    });
    let t = std::time::Instant::now();
    let r = s.anonymous().get("/api/v1/auth/oidc/corp/start").await;
    assert_eq!((r.status, r.code()), (502, "provider_unavailable"));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(sso_failures(&admin).await, ["timeout"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_and_points_at_the_providers_logout() {
    let listener = free_listener().await;
    let s = redwall(&listener, "").await;
    let idp = Idp::start(listener, &s.url(""), &RS256).await;
    let r = sso_login(&s, &idp, "bob").await;
    assert_eq!(r.status, 303, "{}", r.text);
    let mut bob = session_of(&s, &r);
    let me = bob.get("/api/v1/me").await;
    bob.csrf = me.body["csrf_token"].as_str().map(str::to_string);
    let r = bob.post("/api/v1/auth/oidc/corp/logout", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let url = r.body["logout_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/session/end?", idp.issuer)),
        "{url}"
    );
    assert!(url.contains("client_id=redwall"));
    assert_eq!(bob.get("/api/v1/me").await.status, 401);
    // The provider accepts it (it asks the user to confirm).
    let page = browser().get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// BENCHMARKS.md "SSO": the callback's own time (Redwall's answer minus
/// the time the provider took for the token and UserInfo requests), and
/// the ID token check alone. Run with --ignored --nocapture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_callback_and_verification() {
    for opts in [
        RS256,
        Options {
            alg: "ES256",
            id_token_ttl: 3600,
            claims_in_id_token: true,
        },
    ] {
        let listener = free_listener().await;
        let s = redwall(&listener, "").await;
        let _admin = s.admin().await;
        let idp = Idp::start(listener, &s.url(""), &opts).await;
        let mut own = Vec::new();
        for _ in 0..40 {
            let started = start_login(&s, "/").await;
            let back = authorize(&idp, &browser(), &started.authorize_url, "bob", &s.url("")).await;
            *idp.upstream.lock().unwrap() = Duration::ZERO;
            let t = std::time::Instant::now();
            let r = callback(&s, &back, &started.cookie).await;
            let total = t.elapsed();
            assert_eq!(r.status, 303);
            own.push(total.saturating_sub(*idp.upstream.lock().unwrap()));
        }
        // The ID token check alone, on a real token.
        let token = token_as(&idp, &s, "redwall", "bench-nonce", "bob").await;
        let id_token: openidconnect::core::CoreIdToken =
            serde_json::from_value(token["id_token"].clone()).unwrap();
        let cfg = oidc_config(&idp.issuer, "");
        let p = &cfg.sso.oidc[0];
        let oidc = redwall_server::sso::oidc::OidcState::default();
        let now = redwall_server::clock::Clock::now(&redwall_server::clock::SystemClock);
        let md = oidc.metadata(p, now).await.unwrap();
        let nonce = openidconnect::Nonce::new("bench-nonce".into());
        let mut verify = Vec::new();
        for _ in 0..2000 {
            let t = std::time::Instant::now();
            let ok = redwall_server::sso::oidc::verify_id_token(p, &md, &id_token, &nonce, now);
            verify.push(t.elapsed());
            assert!(ok.is_ok());
        }
        println!(
            "{}: callback without provider time: median {:?} (n=40); verify_id_token: median {:?} (n=2000)",
            opts.alg,
            median(own),
            median(verify)
        );
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_with_redwall_mfa_gets_the_consoles_code_step() {
    use redwall_server::clock::Clock;
    let listener = free_listener().await;
    let s = redwall(&listener, "").await;
    let _admin = s.admin().await;
    let idp = Idp::start(listener, &s.url(""), &RS256).await;
    // The first login provisions alice, who then enrols in Redwall's MFA.
    let first = sso_login(&s, &idp, "alice").await;
    let mut alice = session_of(&s, &first);
    alice.csrf = alice.get("/api/v1/me").await.body["csrf_token"]
        .as_str()
        .map(str::to_string);
    let secret = enrol_mfa(&s, &alice).await;

    // Next time, in a browser: the callback hands over to the console.
    let started = start_login(&s, "/teams").await;
    let back = authorize(
        &idp,
        &browser(),
        &started.authorize_url,
        "alice",
        &s.url(""),
    )
    .await;
    let mut c = s.anonymous();
    c.cookie = Some(started.cookie.clone());
    c.headers.push(("accept", "text/html".into()));
    let r = c.get(back.strip_prefix(&s.url("")).unwrap()).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.headers["location"], "/login/mfa");
    let set: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        !set.iter().any(|c| c.starts_with("redwall_session=")),
        "no session before the code"
    );
    let challenge = set
        .iter()
        .find(|c| c.starts_with("redwall_mfa="))
        .expect("the challenge travels in a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(
        !r.headers["location"].to_str().unwrap().contains("rwm"),
        "never in the URL"
    );

    // The code step keeps the destination and, with a code, lands there.
    let (mut browser_c, _, _) = s.login_page().await;
    let pre = browser_c.cookie.clone().unwrap();
    browser_c.cookie = Some(format!("{pre}; {challenge}"));
    let page = browser_c.get("/login/mfa").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains(r#"name="next" value="/teams""#),
        "{}",
        page.text
    );
    let field = |name: &str| {
        page.text
            .split(&format!(r#"name="{name}" value=""#))
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    s.clock.advance_secs(30);
    let code = secret.code_at((s.clock.now() / 1_000_000) as u64);
    let r = browser_c
        .raw(
            browser_c
                .http
                .post(s.url("/login/mfa"))
                .header("cookie", browser_c.cookie.clone().unwrap())
                .header("origin", s.url(""))
                .form(&[
                    ("csrf", field("csrf").as_str()),
                    ("mfa_token", field("mfa_token").as_str()),
                    ("next", "/teams"),
                    ("code", code.as_str()),
                ]),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.headers["location"], "/teams");
    assert!(r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("redwall_session="));
}

fn state_of(authorize_url: &str) -> String {
    reqwest::Url::parse(authorize_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string()
}

/// Issue 21, item 1: anonymous start + callback(error=access_denied) pairs
/// used to fill a table every login needed (`too_many_pending` for all)
/// and wrote one audit row each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_cancelled_logins_stops_no_one_else_and_is_audited_in_aggregate() {
    let listener = free_listener().await;
    // Behind a proxy, so the attacker and alice have different addresses.
    let s = redwall_with(&listener, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let admin = s.admin().await;
    let idp = Idp::start(listener, &s.url(""), &RS256).await;
    let mut attacker = s.anonymous();
    attacker
        .headers
        .push(("x-forwarded-for", "203.0.113.7".into()));
    let attack = |attacker: &Client| {
        let mut attacker = attacker.clone();
        async move {
            attacker.cookie = None;
            let r = attacker.get("/api/v1/auth/oidc/corp/start?next=/").await;
            if r.status != 303 {
                return r.status;
            }
            let cookie = r.headers["set-cookie"].to_str().unwrap();
            attacker.cookie = Some(cookie.split(';').next().unwrap().to_string());
            let state = state_of(r.headers["location"].to_str().unwrap());
            let r = attacker
                .get(&format!(
                    "/api/v1/auth/oidc/corp/callback?state={state}&error=access_denied"
                ))
                .await;
            r.status
        }
    };
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..300 {
        *answers.entry(attack(&attacker).await).or_default() += 1;
    }
    // 20 free failures, then the address waits (the clock stands still).
    assert_eq!(answers.get(&401), Some(&21), "{answers:?}");
    assert_eq!(answers.get(&429), Some(&279), "{answers:?}");

    // alice, elsewhere, logs in as usual.
    let r = sso_login(&s, &idp, "alice").await;
    assert_eq!(r.status, 303, "{}", r.text);
    let me = session_of(&s, &r).get("/api/v1/me").await;
    assert_eq!(me.body["username"], "alice");

    // One entry per kind of refusal, not one per request.
    let failed = audit_events(&admin, "auth.sso_failed").await;
    let mut reasons: Vec<&str> = failed
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["provider_error", "throttled"], "{failed:?}");
    assert!(
        failed.iter().all(|e| e["client_ip"] == "203.0.113.7"),
        "{failed:?}"
    );

    // Once the minute is over, its other refusals are written as one
    // entry per kind with their count (by the flusher, within seconds).
    s.clock.advance_secs(61);
    assert_eq!(attack(&attacker).await, 401);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let failed = loop {
        let failed = audit_events(&admin, "auth.sso_failed").await;
        if failed.len() >= 5 || std::time::Instant::now() > deadline {
            break failed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut counted: Vec<(String, i64)> = failed
        .iter()
        .filter(|e| e["details"]["aggregated"] == true)
        .filter_map(|e| {
            let d = &e["details"];
            Some((d["reason"].as_str()?.to_string(), d["count"].as_i64()?))
        })
        .collect();
    counted.sort();
    let expected = [
        ("provider_error".to_string(), 20),
        ("throttled".to_string(), 278),
    ];
    assert_eq!(counted, expected, "{failed:?}");
    // The three first refusals of their minute, and the two counts.
    assert_eq!(failed.len(), 5, "{failed:?}");
    s.stop().await;
}

/// Issue 21, item 4: a provider that rotates its key but keeps the `kid`
/// no longer fails every login until the key cache expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_under_the_same_kid_is_fetched_again_at_most_every_30_s() {
    let listener = free_listener().await;
    let s = redwall(&listener, "").await;
    let admin = s.admin().await;
    let idp = Idp::start(listener, &s.url(""), &RS256).await;
    // Redwall reads the keys at the start; then the provider rotates them.
    let started = start_login(&s, "/").await;
    idp.restart().await;
    let back = authorize(
        &idp,
        &browser(),
        &started.authorize_url,
        "alice",
        &s.url(""),
    )
    .await;
    let r = callback(&s, &back, &started.cookie).await;
    assert_eq!(r.status, 303, "{}", r.text);

    // Rotated again at once: the keys are not fetched again so soon.
    idp.restart().await;
    let r = sso_login(&s, &idp, "alice").await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(sso_failures(&admin).await, ["bad_signature"]);
    s.clock.advance_secs(31);
    let r = sso_login(&s, &idp, "alice").await;
    assert_eq!(r.status, 303, "{}", r.text);
    s.stop().await;
}

/// Issue 21, item 3: the README's admin rule (no provider) let an OIDC user
/// whose groups claim spelled the directory's admin group, in any case and
/// spacing, become a platform admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_rule_naming_its_provider_may_grant_admin() {
    use redwall_policy::sso_mapping::MappingRule;
    use redwall_server::config::Severity;
    let listener = free_listener().await;
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let readme_rule: MappingRule =
        toml::from_str("group = \"cn=nr-admins,ou=groups,dc=example,dc=org\"\nadmin = true")
            .unwrap();
    // Refused by `config check` and at start.
    let mut config = oidc_config(&issuer, "");
    config.sso.mappings.push(readme_rule.clone());
    let errors: Vec<String> = config
        .check()
        .into_iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.to_string())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("sso.mappings") && e.contains("provider")),
        "{errors:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    config.data_dir = dir.path().to_path_buf();
    config.database_url = Some(format!("sqlite://{}/r.db", dir.path().display()));
    let clock = std::sync::Arc::new(redwall_server::clock::ManualClock::default());
    assert!(redwall_server::open_state(config.clone(), clock, None)
        .await
        .is_err());
    // A rule that can never match is pointed out.
    config.sso.mappings = vec![MappingRule {
        provider: "corp".into(),
        group: "cn=nr-admins, ou=groups,dc=example,dc=org".into(),
        ..readme_rule.clone()
    }];
    let warnings: Vec<String> = config
        .check()
        .into_iter()
        .filter(|p| p.severity == Severity::Warning && p.setting == "sso.mappings")
        .map(|p| p.message)
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("never match")),
        "{warnings:?}"
    );
}

/// Issue 21, item 3: group names were compared ignoring case and
/// surrounding spaces, so an OIDC user naming her own groups could match
/// the directory admin group's DN in other case and spacing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_compare_exactly_as_dns_or_as_names() {
    use redwall_policy::sso_mapping::MappingRule;
    let listener = free_listener().await;
    let readme_rule: MappingRule =
        toml::from_str("group = \"cn=nr-admins,ou=groups,dc=example,dc=org\"\nadmin = true")
            .unwrap();
    // Even a rule for this very provider matches only the exact group (as
    // a DN: types and naming values without case, spacing exact).
    let s = redwall_with(&listener, |c| {
        c.sso.mappings.push(MappingRule {
            provider: "corp".into(),
            ..readme_rule
        })
    })
    .await;
    let admin = s.admin().await;
    let ops = create_team(&admin, "ops").await;
    let idp = Idp::start(listener, &s.url(""), &RS256).await;
    let r = sso_login(&s, &idp, "eve").await;
    assert_eq!(r.status, 303, "{}", r.text);
    let eve = session_of(&s, &r);
    let me = eve.get("/api/v1/me").await;
    assert_eq!(me.body["username"], "eve");
    assert_eq!(me.body["is_admin"], false, "{}", me.text);
    // "NR-Editors " is not the group "nr-editors".
    assert_eq!(eve.get(&format!("/api/v1/teams/{ops}")).await.status, 404);
    s.stop().await;
}

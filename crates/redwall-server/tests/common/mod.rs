//! The one integration harness: a real Redwall HTTP server on a loopback
//! port, over a fresh database on either backend, with a clock the test moves.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use redwall_crypto::password::Argon2Params;
use redwall_server::clock::ManualClock;
use redwall_server::config::{Config, TlsMode};
use redwall_server::{RunningServer, StartOptions};
pub use redwall_store::testing::TestDatabase;
pub use redwall_store::Backend;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use std::sync::Arc;

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "violet-harbor-copper-9";
pub const USER_PASSWORD: &str = "amber-falcon-meadow-42";

/// Runs each named scenario `async fn name(s: &TestServer)` once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::common::run($crate::common::Backend::Sqlite, |s| Box::pin(super::$name(s))).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::common::run($crate::common::Backend::Postgres, |s| Box::pin(super::$name(s))).await
                }
            }
        )*
    };
}

pub async fn run<F>(backend: Backend, scenario: F)
where
    F: for<'a> FnOnce(
        &'a TestServer,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>,
{
    let Some(server) = TestServer::start_with(backend, |_| {}).await else {
        return;
    };
    scenario(&server).await;
    server.assert_audit_intact().await;
    server.stop().await;
}

pub struct TestServer {
    pub running: RunningServer,
    pub clock: ManualClock,
    pub setup_token: Option<String>,
    pub data_dir: tempfile::TempDir,
    db: TestDatabase,
    chain_broken_on_purpose: std::sync::atomic::AtomicBool,
}

impl TestServer {
    /// `None` when the backend is PostgreSQL and none is reachable outside CI.
    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<TestServer> {
        let db = match backend {
            Backend::Sqlite => TestDatabase::sqlite().await.expect("sqlite test database"),
            Backend::Postgres => TestDatabase::postgres()
                .await
                .expect("PostgreSQL test database")?,
        };
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            data_dir: data_dir.path().to_path_buf(),
            database_url: Some(db.url.clone()),
            ..Config::default()
        };
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.tls.mode = TlsMode::Off;
        // Every test server's broker on ports of its own.
        config.broker.plain_listen = "127.0.0.1:0".parse().unwrap();
        config.broker.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        // No npm install behind every test server; the first-run test asks for it.
        config.instances.install_at_start = false;
        // Cheap hashing keeps the suite fast; the default parameters have their own test.
        config.passwords = Argon2Params {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        tweak(&mut config);
        let clock = ManualClock::default();
        let running = redwall_server::start(StartOptions {
            config,
            clock: Arc::new(clock.clone()),
            master_key: None,
            run_instances: true,
        })
        .await
        .expect("server starts");
        let setup_token = running.setup_token.as_ref().map(|t| t.expose().to_string());
        Some(TestServer {
            running,
            clock,
            setup_token,
            data_dir,
            db,
            chain_broken_on_purpose: Default::default(),
        })
    }

    /// Every scenario ends here, as Kanidm verifies its database after each
    /// test: every change's entry is chained and the chain verifies.
    pub async fn assert_audit_intact(&self) {
        if self
            .chain_broken_on_purpose
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let state = &self.running.state;
        state
            .hub
            .audit
            .flush()
            .await
            .expect("pending audit entries chained");
        assert_eq!(
            state
                .hub
                .store
                .pending_audit_entries()
                .await
                .expect("pending count"),
            0,
            "audit entries left unchained"
        );
        let report = state
            .hub
            .store
            .verify_audit_chain(&state.hub.chain_key())
            .await
            .expect("audit chain verification runs");
        assert!(
            report.is_intact(),
            "audit chain broken: {:?}",
            report.problem
        );
    }

    /// For a scenario that alters the log itself: skip the closing check.
    pub fn chain_broken_on_purpose(&self) {
        self.chain_broken_on_purpose
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub async fn stop(self) {
        self.running.shutdown().await;
        self.db.cleanup().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.running.base_url(), path)
    }

    pub fn anonymous(&self) -> Client {
        Client {
            base: self.running.base_url(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .danger_accept_invalid_certs(true)
                .user_agent("redwall-tests")
                .build()
                .unwrap(),
            cookie: None,
            csrf: None,
            bearer: None,
            headers: Vec::new(),
        }
    }

    /// Creates the first admin with the setup token and logs in.
    pub async fn admin(&self) -> Client {
        let token = self
            .setup_token
            .clone()
            .expect("fresh server has a setup token");
        let r = self
            .anonymous()
            .post(
                "/api/v1/setup",
                json!({"setup_token": token, "username": ADMIN, "password": ADMIN_PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 201, "setup: {}", r.body);
        self.login(ADMIN, ADMIN_PASSWORD).await
    }

    /// Creates a plain user through the admin API; returns its id.
    pub async fn create_user(&self, admin: &Client, username: &str) -> String {
        let r = admin
            .post(
                "/api/v1/users",
                json!({"username": username, "password": USER_PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 201, "create user: {}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    pub async fn login(&self, username: &str, password: &str) -> Client {
        let mut c = self.anonymous();
        let r = c
            .post(
                "/api/v1/auth/login",
                json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(r.status, 200, "login {username}: {}", r.body);
        c.adopt_session(&r);
        c
    }

    /// A browser that opened the console's login page: it holds the
    /// pre-session cookie; returns it with the page and the form's token.
    pub async fn login_page(&self) -> (Client, Resp, String) {
        let mut browser = self.anonymous();
        let page = browser.get("/login").await;
        let cookie = page.headers["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let csrf = page
            .text
            .split(r#"name="csrf" value=""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        browser.cookie = Some(cookie);
        (browser, page, csrf)
    }

    /// A user with a session, created by the admin.
    pub async fn user(&self, admin: &Client, username: &str) -> Client {
        self.create_user(admin, username).await;
        self.login(username, USER_PASSWORD).await
    }

    /// A client that authenticates with a new personal access token of `owner`.
    pub async fn token_client(&self, owner: &Client, scope: &str) -> Client {
        let r = owner
            .post(
                "/api/v1/me/tokens",
                json!({"name": format!("test {scope}"), "scope": scope}),
            )
            .await;
        assert_eq!(r.status, 201, "token: {}", r.body);
        let mut c = self.anonymous();
        c.bearer = Some(r.body["token"].as_str().unwrap().to_string());
        c
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    pub bearer: Option<String>,
    /// Sent with every request (e.g. the admin override header).
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Client {
    /// Takes the session cookie and CSRF token from a login answer.
    pub fn adopt_session(&mut self, r: &Resp) {
        let set_cookie = r
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("login sets a cookie");
        self.cookie = Some(set_cookie.split(';').next().unwrap().to_string());
        self.csrf = r.body["csrf_token"].as_str().map(str::to_string);
    }

    pub fn without_csrf(&self) -> Client {
        let mut c = self.clone();
        c.csrf = None;
        c
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Resp {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(cookie) = &self.cookie {
            req = req.header("cookie", cookie);
        }
        if let Some(csrf) = &self.csrf {
            req = req.header("x-csrf-token", csrf);
        }
        if let Some(token) = &self.bearer {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in &self.headers {
            req = req.header(*name, value);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_resp(req.send().await.expect("request reaches the server")).await
    }

    pub async fn raw(&self, req: reqwest::RequestBuilder) -> Resp {
        into_resp(req.send().await.expect("request reaches the server")).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    pub async fn delete_with(&self, path: &str, body: Value) -> Resp {
        self.send(reqwest::Method::DELETE, path, Some(body)).await
    }
}

async fn into_resp(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        text,
    }
}

pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap()
}

/// The audit entries matching `event`, newest first, as the admin sees them.
pub async fn audit_events(admin: &Client, event: &str) -> Vec<Value> {
    let r = admin
        .get(&format!("/api/v1/audit?event={event}&limit=1000"))
        .await;
    assert_eq!(r.status, 200, "audit: {}", r.body);
    r.body["entries"].as_array().cloned().unwrap_or_default()
}

/// Creates a team owned by `owner`; returns its id.
pub async fn create_team(owner: &Client, name: &str) -> String {
    let r = owner.post("/api/v1/teams", json!({"name": name})).await;
    assert_eq!(r.status, 201, "create team: {}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// Invites `username` into the team with `role` and accepts as `member`.
pub async fn join_team(owner: &Client, member: &Client, team: &str, username: &str, role: &str) {
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            json!({"username": username, "role": role}),
        )
        .await;
    assert_eq!(r.status, 201, "invite: {}", r.body);
    let id = r.body["id"].as_str().unwrap();
    let r = member
        .post(&format!("/api/v1/me/invitations/{id}/accept"), json!({}))
        .await;
    assert_eq!(r.status, 200, "accept: {}", r.body);
}

/// Enrols `c`'s user in TOTP (enrol, then confirm with the current code).
pub async fn enrol_mfa(s: &TestServer, c: &Client) -> redwall_crypto::totp::TotpSecret {
    use redwall_server::clock::Clock;
    let e = c.post("/api/v1/me/mfa/enrol", json!({})).await;
    assert_eq!(e.status, 200, "enrol: {}", e.body);
    let secret =
        redwall_crypto::totp::TotpSecret::from_base32(e.body["secret"].as_str().unwrap()).unwrap();
    let code = secret.code_at((s.clock.now() / 1_000_000) as u64);
    let r = c
        .post("/api/v1/me/mfa/confirm", json!({"code": code}))
        .await;
    assert_eq!(r.status, 200, "confirm: {}", r.body);
    secret
}

/// A browser's session on the instance's own host name
/// (`{name}.localhost`): the console hands it over with a one-time code, as
/// it does for a browser. `None` when the console refuses the handover.
pub async fn try_on_host(s: &TestServer, c: &Client, name: &str) -> Option<Client> {
    let host = format!("{name}.localhost:{}", s.running.addr.port());
    let r = c
        .get(&format!("/api/v1/instance-login?instance={name}"))
        .await;
    if r.status != 303 {
        return None;
    }
    let location = r.headers["location"].to_str().unwrap().to_string();
    let callback = &location[location.find("/_redwall/").expect("a callback path")..];
    let mut b = s.anonymous();
    b.headers.push(("host", host));
    let r = b.get(callback).await;
    assert_eq!(r.status, 303, "handover: {}", r.text);
    let pass = r.headers["set-cookie"].to_str().unwrap();
    b.cookie = Some(pass.split(';').next().unwrap().to_string());
    Some(b)
}

pub async fn on_host(s: &TestServer, c: &Client, name: &str) -> Client {
    try_on_host(s, c, name)
        .await
        .expect("the console hands the session over")
}

/// Posts a console form the way a browser does: urlencoded, with the
/// session cookie, the page's CSRF token, a fresh form id and our own
/// Origin.
pub async fn form(c: &Client, path: &str, fields: &[(&str, &str)]) -> Resp {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let form_id = format!(
        "{:016x}{:08x}{:08x}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let csrf = c.csrf.clone().unwrap_or_default();
    let mut all: Vec<(&str, &str)> = vec![("csrf", &csrf), ("form_id", &form_id)];
    all.extend_from_slice(fields);
    form_raw(c, path, &all, &c.base).await
}

/// Posts exactly these fields with this Origin (a forged or stale form).
pub async fn form_raw(c: &Client, path: &str, fields: &[(&str, &str)], origin: &str) -> Resp {
    let mut req = c
        .http
        .post(format!("{}{}", c.base, path))
        .header("origin", origin)
        .form(fields);
    if let Some(cookie) = &c.cookie {
        req = req.header("cookie", cookie);
    }
    c.raw(req).await
}

/// Where a redirect answer points ("" when none).
pub fn location(r: &Resp) -> String {
    r.headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

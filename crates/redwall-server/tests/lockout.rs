//! Lockout without denial of service (OWASP device cookies): a flood of wrong
//! passwords naming an account, from many addresses, throttles unknown
//! clients for that account but never its owner's known client (one that
//! logged in before and holds a device cookie), on the console and API login
//! and on an instance's `basic` route; and the two do not lock each other out.
//! The clock is the test's: no sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A server behind a trusted proxy on loopback, so each request can name
/// its client address in X-Forwarded-For, as an attacker with many
/// addresses would have.
async fn server_behind_proxy(backend: Backend) -> Option<TestServer> {
    TestServer::start_with(backend, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await
}

/// The Redwall cookies an answer sets other than the session, as a
/// `Cookie` header value (what a browser or a client's cookie jar keeps).
fn kept_cookies(r: &Resp) -> String {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter(|pair| !pair.starts_with("redwall_session=") && !pair.contains("_session="))
        .map(str::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

async fn login_from(
    c: &Client,
    ip: &str,
    jar: Option<&str>,
    username: &str,
    password: &str,
) -> Resp {
    let mut req = c
        .http
        .post(format!("{}/api/v1/auth/login", c.base))
        .header("x-forwarded-for", ip)
        .json(&json!({"username": username, "password": password}));
    if let Some(jar) = jar.filter(|j| !j.is_empty()) {
        req = req.header("cookie", jar);
    }
    c.raw(req).await
}

/// Wrong passwords naming `username`, each from its own address (so no
/// address reaches its own limit); returns the statuses.
async fn flood_logins(c: &Client, username: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let ip = format!("198.51.100.{}", i + 1);
        statuses.push(
            login_from(c, &ip, None, username, "not-the-password-1")
                .await
                .status,
        );
    }
    statuses
}

async fn a_flood_does_not_stop_the_owners_known_client(backend: Backend) {
    let Some(s) = server_behind_proxy(backend).await else {
        return;
    };
    let admin = s.admin().await;
    s.create_user(&admin, "bob").await;
    s.create_user(&admin, "alice").await;
    let anon = s.anonymous();

    // Bob's laptop logged in before; so did Alice's.
    let r = login_from(&anon, "203.0.113.5", None, "bob", USER_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let bobs_jar = kept_cookies(&r);
    let r = login_from(&anon, "203.0.113.6", None, "alice", USER_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let alices_jar = kept_cookies(&r);

    let statuses = flood_logins(&anon, "bob", 40).await;
    assert!(statuses.contains(&401), "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");

    // Bob's own laptop still gets in, from its usual address or another.
    for ip in ["203.0.113.5", "203.0.113.77"] {
        let r = login_from(&anon, ip, Some(&bobs_jar), "bob", USER_PASSWORD).await;
        assert_eq!(r.status, 200, "bob's known client from {ip}: {}", r.body);
        assert_eq!(r.body["user"]["username"], "bob");
    }
    assert!(bobs_jar.contains("redwall_device="), "{bobs_jar}");
    // Unknown clients are still throttled for bob, whatever the spelling
    // and even with the right password.
    for (ip, name) in [
        ("192.0.2.1", "bob"),
        ("192.0.2.2", "BOB"),
        ("192.0.2.3", " bob "),
    ] {
        let r = login_from(&anon, ip, None, name, USER_PASSWORD).await;
        assert_eq!(r.status, 429, "unknown client as {name:?}: {}", r.body);
    }
    // A device cookie of another account, or a forged one, does not help.
    let r = login_from(&anon, "192.0.2.4", Some(&alices_jar), "bob", USER_PASSWORD).await;
    assert_eq!(
        r.status, 429,
        "alice's device is unknown for bob: {}",
        r.body
    );
    let forged = "redwall_device=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let r = login_from(&anon, "192.0.2.5", Some(forged), "bob", USER_PASSWORD).await;
    assert_eq!(r.status, 429, "a forged device cookie: {}", r.body);

    // The known client has its own allowance: its own wrong guesses slow it.
    let mut own = Vec::new();
    for _ in 0..12 {
        own.push(
            login_from(
                &anon,
                "203.0.113.5",
                Some(&bobs_jar),
                "bob",
                "typo-typo-typo",
            )
            .await
            .status,
        );
    }
    assert_eq!(*own.last().unwrap(), 429, "{own:?}");
    // Alice was never named: unaffected.
    let r = login_from(&anon, "192.0.2.9", None, "alice", USER_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_does_not_stop_the_owners_known_client_sqlite() {
    a_flood_does_not_stop_the_owners_known_client(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_does_not_stop_the_owners_known_client_postgres() {
    a_flood_does_not_stop_the_owners_known_client(Backend::Postgres).await;
}

/// The console's login form: the browser that signed in before keeps
/// signing in through a flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consoles_known_browser_signs_in_through_a_flood() {
    let s = server_behind_proxy(Backend::Sqlite).await.unwrap();
    let admin = s.admin().await;
    s.create_user(&admin, "lena").await;
    let submit = |browser: &Client, csrf: &str, jar: &str, password: &str| {
        let cookie = [browser.cookie.clone().unwrap_or_default(), jar.to_string()]
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        browser
            .http
            .post(format!("{}/login", browser.base))
            .header("origin", browser.base.clone())
            .header("x-forwarded-for", "203.0.113.20")
            .header("cookie", cookie)
            .form(&[("csrf", csrf), ("username", "lena"), ("password", password)])
    };
    let (browser, _, csrf) = s.login_page().await;
    let r = browser
        .raw(submit(&browser, &csrf, "", USER_PASSWORD))
        .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let jar = kept_cookies(&r);
    let statuses = flood_logins(&s.anonymous(), "lena", 40).await;
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");

    let (stranger, _, csrf) = s.login_page().await;
    let r = stranger
        .raw(submit(&stranger, &csrf, "", USER_PASSWORD))
        .await;
    assert_eq!(r.status, 429, "an unknown browser waits: {}", r.text);
    let (browser, _, csrf) = s.login_page().await;
    let r = browser
        .raw(submit(&browser, &csrf, &jar, USER_PASSWORD))
        .await;
    assert_eq!(r.status, 303, "lena's own browser signs in: {}", r.text);
    s.stop().await;
}

// ---- an instance's basic route ----

async fn instance_server() -> TestServer {
    let install = redwall_runtime::testing::shared_install().expect("Node-RED installs from npm");
    let base = redwall_runtime::testing::free_port();
    TestServer::start_with(Backend::Sqlite, move |c| {
        c.instances.node_red_path = Some(install.package_dir.clone());
        c.instances.node = install.node.clone();
        c.instances.port_min = base;
        c.instances.port_max = base.saturating_add(9);
        c.instances.uid_base = 100_000 + u32::from(base);
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        // Devices with basic credentials are machines: /i/{name}/.
        c.instances.path_routing = true;
    })
    .await
    .expect("sqlite server")
}

async fn wait_running(c: &Client, team: &str, name: &str) {
    for _ in 0..600 {
        let r = c
            .get(&format!("/api/v1/teams/{team}/instances/{name}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        match r.body["status"]["state"].as_str() {
            Some("running") => return,
            Some("crash_loop") => panic!("instance gave up: {}", r.body),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("instance did not start in 60 s");
}

fn hello_flow() -> Value {
    json!([
        {"id": "t1", "type": "tab", "label": "T"},
        {"id": "h1", "type": "http in", "z": "t1", "url": "/hello", "method": "get", "upload": false, "swaggerDoc": "", "wires": [["f1"]]},
        {"id": "f1", "type": "function", "z": "t1", "func": "msg.payload = { hello: 'world' }; return msg;", "outputs": 1, "wires": [["r1"]]},
        {"id": "r1", "type": "http response", "z": "t1", "statusCode": "", "headers": {}, "wires": []}
    ])
}

#[tokio::test]
async fn a_basic_route_flood_stops_neither_the_known_device_nor_console_login() {
    let s = instance_server().await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let viewer = s.user(&admin, "aviewer").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &viewer, &team, "aviewer", "viewer").await;
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": "plant"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    wait_running(&owner, &team, "plant").await;
    let mut ci = s.token_client(&owner, "full").await;
    ci.headers.push(("node-red-deployment-type", "full".into()));
    let r = ci.post("/i/plant/editor/flows", hello_flow()).await;
    assert!(
        r.status == 200 || r.status == 204,
        "{} {}",
        r.status,
        r.text
    );
    let r = owner
        .put(
            &format!("/api/v1/teams/{team}/instances/plant/routes"),
            json!([{"path_prefix": "/hello", "policy": {"type": "basic", "min_role": "viewer"}}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let anon = s.anonymous();
    // A device with a cookie jar uses the instance's own host name.
    let host = format!("plant.localhost:{}", s.running.addr.port());
    let basic = |ip: &str, jar: Option<&str>, user: &str, password: &str| {
        let mut req = anon
            .http
            .get(s.url("/hello"))
            .header("host", host.clone())
            .header("x-forwarded-for", ip)
            .basic_auth(user, Some(password));
        if let Some(jar) = jar.filter(|j| !j.is_empty()) {
            req = req.header("cookie", jar);
        }
        req
    };
    // The viewer's device polled the endpoint before.
    let r = anon
        .raw(basic("203.0.113.5", None, "aviewer", USER_PASSWORD))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["hello"], "world");
    let device = kept_cookies(&r);

    // 60 wrong passwords naming aviewer, each from its own address.
    let mut statuses = Vec::new();
    for i in 0..60 {
        let ip = format!("198.51.100.{}", i + 1);
        statuses.push(
            anon.raw(basic(&ip, None, "aviewer", "wrong-password-123"))
                .await
                .status,
        );
    }
    assert!(statuses.contains(&401), "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    // The known device is not locked out of the route...
    let r = anon
        .raw(basic(
            "203.0.113.5",
            Some(&device),
            "aviewer",
            USER_PASSWORD,
        ))
        .await;
    assert_eq!(r.status, 200, "known device: {}", r.text);
    assert_eq!(r.body["hello"], "world");
    assert!(device.contains("redwall_endpoint_device="), "{device}");
    for name in ["aviewer", "AViewer", " aviewer"] {
        let r = anon
            .raw(basic("192.0.2.1", None, name, USER_PASSWORD))
            .await;
        assert_eq!(r.status, 429, "unknown client as {name:?}: {}", r.text);
    }

    // ...and the route's flood does not lock the console or API login.
    let r = login_from(&anon, "192.0.2.50", None, "aviewer", USER_PASSWORD).await;
    assert_eq!(
        r.status, 200,
        "console login after a route flood: {}",
        r.body
    );
    // Nor the other way round: a login flood leaves the route to the device.
    let statuses = flood_logins(&anon, "olivia", 40).await;
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    let r = anon
        .raw(basic("192.0.2.60", None, "olivia", USER_PASSWORD))
        .await;
    assert_eq!(r.status, 200, "route after a login flood: {}", r.text);
    s.stop().await;
}

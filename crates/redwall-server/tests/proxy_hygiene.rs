//! What crosses the proxy between a client and a flow, and what a stranger
//! learns from the handover and team-limited tokens (issue 14, items 6 to 8),
//! against the real server and a real Node-RED.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use redwall_server::config::TlsMode;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn instance_server_with(
    backend: Backend,
    tweak: impl FnOnce(&mut redwall_server::config::Config),
) -> Option<TestServer> {
    let install = redwall_runtime::testing::shared_install().expect("Node-RED installs from npm");
    let base = redwall_runtime::testing::free_port();
    TestServer::start_with(backend, move |c| {
        c.instances.node_red_path = Some(install.package_dir.clone());
        c.instances.node = install.node.clone();
        c.instances.port_min = base;
        c.instances.port_max = base.saturating_add(9);
        c.instances.uid_base = 100_000 + u32::from(base);
        // Machines reach /i/{name}/; browsers' sessions use the instance's host.
        c.instances.path_routing = true;
        tweak(c);
    })
    .await
}

async fn create_running(c: &Client, team: &str, name: &str) {
    let r = c
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": name}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    for _ in 0..600 {
        let r = c
            .get(&format!("/api/v1/teams/{team}/instances/{name}"))
            .await;
        match r.body["status"]["state"].as_str() {
            Some("running") => return,
            Some("crash_loop") => panic!("instance gave up: {}", r.body),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("instance did not start in 60 s");
}

/// `/{zone}/echo` answers with the request headers the flow saw, and with
/// the status (`?status=`) and headers (`?h=`, a JSON object) it is asked
/// for; `/{zone}/hang` never answers.
fn hygiene_flow() -> Value {
    json!([
        {"id": "t1", "type": "tab", "label": "T"},
        {"id": "h1", "type": "http in", "z": "t1", "url": "/:zone/echo", "method": "get", "upload": false, "swaggerDoc": "", "wires": [["f1"]]},
        {"id": "f1", "type": "function", "z": "t1", "func": "var q = msg.req.query || {}; msg.statusCode = Number(q.status || 200); msg.headers = q.h ? JSON.parse(q.h) : {}; msg.payload = { headers: msg.req.headers }; return msg;", "outputs": 1, "wires": [["r1"]]},
        {"id": "r1", "type": "http response", "z": "t1", "statusCode": "", "headers": {}, "wires": []},
        {"id": "h2", "type": "http in", "z": "t1", "url": "/:zone/hang", "method": "get", "upload": false, "swaggerDoc": "", "wires": [[]]}
    ])
}

async fn deploy_hygiene_flow(s: &TestServer, owner: &Client, name: &str) {
    let mut ci = s.token_client(owner, "full").await;
    ci.headers.push(("node-red-deployment-type", "full".into()));
    let r = ci
        .post(&format!("/i/{name}/editor/flows"), hygiene_flow())
        .await;
    assert!(
        r.status == 200 || r.status == 204,
        "{} {}",
        r.status,
        r.text
    );
}

async fn set_routes(owner: &Client, team: &str, name: &str, rules: Value) {
    let r = owner
        .put(
            &format!("/api/v1/teams/{team}/instances/{name}/routes"),
            rules,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Asks the echo endpoint, as `c`, with extra request headers and the
/// answer's status and headers the flow should give.
async fn echo(
    s: &TestServer,
    c: &Client,
    path: &str,
    request_headers: &[(&str, &str)],
    answer: Option<(u16, Value)>,
) -> Resp {
    let mut req = c.http.get(s.url(path));
    if let Some(cookie) = &c.cookie {
        req = req.header("cookie", cookie);
    }
    for (k, v) in &c.headers {
        req = req.header(*k, v);
    }
    for (k, v) in request_headers {
        req = req.header(*k, *v);
    }
    if let Some((status, headers)) = answer {
        req = req.query(&[("status", status.to_string()), ("h", headers.to_string())]);
    }
    c.raw(req).await
}

/// Waits until Node-RED serves the deployed endpoint.
async fn wait_for_endpoint(s: &TestServer, path: &str) {
    for _ in 0..200 {
        if echo(s, &s.anonymous(), path, &[], None).await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never answered");
}

fn seen_header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.body["headers"].get(name).and_then(Value::as_str)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn redwall_credentials_forged_headers_and_our_realm_never_cross_the_proxy() {
    let s = instance_server_with(Backend::Sqlite, |_| {}).await.unwrap();
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let viewer = s.user(&admin, "vera").await;
    let team = create_team(&owner, "Hygiene").await;
    join_team(&owner, &viewer, &team, "vera", "viewer").await;
    create_running(&owner, &team, "hyg").await;
    deploy_hygiene_flow(&s, &owner, "hyg").await;
    set_routes(
        &owner,
        &team,
        "hyg",
        json!([
            {"path_prefix": "/pub", "policy": {"type": "public"}},
            {"path_prefix": "/sess", "policy": {"type": "session", "min_role": "viewer"}}
        ]),
    )
    .await;
    wait_for_endpoint(&s, "/i/hyg/pub/echo").await;
    let anon = s.anonymous();
    let personal = s.token_client(&owner, "read").await.bearer.unwrap();

    // A personal token, on a public route, is Redwall's and stays here.
    let r = echo(
        &s,
        &anon,
        "/i/hyg/pub/echo",
        &[("authorization", &format!("Bearer {personal}"))],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(seen_header(&r, "authorization"), None, "{}", r.body);
    for forged in [
        format!("bearer {}", "rwk_".to_string() + &"A".repeat(43)),
        format!("Token {personal}"),
        personal.clone(),
    ] {
        let r = echo(
            &s,
            &anon,
            "/i/hyg/pub/echo",
            &[("authorization", &forged)],
            None,
        )
        .await;
        assert_eq!(seen_header(&r, "authorization"), None, "{forged}");
    }
    // The flow's own credentials are its business.
    let r = echo(
        &s,
        &anon,
        "/i/hyg/pub/echo",
        &[("authorization", "Bearer device-own-token")],
        None,
    )
    .await;
    assert_eq!(
        seen_header(&r, "authorization"),
        Some("Bearer device-own-token")
    );
    let device = basic("device", "device-secret");
    let r = echo(
        &s,
        &anon,
        "/i/hyg/pub/echo",
        &[("authorization", &device)],
        None,
    )
    .await;
    assert_eq!(
        seen_header(&r, "authorization"),
        Some(device.as_str()),
        "an instance without basic rules owns basic auth on its public routes"
    );

    // Forwarding headers say what Redwall saw; our names in any spelling go.
    let r = echo(
        &s,
        &anon,
        "/i/hyg/pub/echo",
        &[
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "6.6.6.6"),
            ("x_redwall_user", "olivia"),
            ("x-redwall_user", "olivia"),
            ("X_REDWALL_ENDPOINT_TOKEN", "v1.forged.forged"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = r.body["headers"].as_object().unwrap();
    assert!(!r.text.contains("6.6.6.6"), "{}", r.body);
    assert!(!r.text.contains("evil.example"), "{}", r.body);
    assert!(!r.text.contains("olivia"), "{}", r.body);
    assert_eq!(seen_header(&r, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen_header(&r, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen_header(&r, "x-forwarded-proto"), Some("http"));
    assert!(
        seen_header(&r, "forwarded").is_some_and(|f| f.contains("for=127.0.0.1")),
        "{}",
        r.body
    );
    assert!(seen.get("x-forwarded-port").is_none(), "{}", r.body);
    for name in seen.keys() {
        let normal = name.to_ascii_lowercase().replace('_', "-");
        assert!(
            !normal.starts_with("x-redwall-") || name == "x-redwall-user",
            "{name} reached the flow"
        );
    }

    // A flow may not answer in Redwall's realm, in any spelling.
    for challenge in [
        "Basic realm=\"redwall\"",
        "Basic realm=\"Redwall\", charset=\"UTF-8\"",
        "Digest realm=\"redwall\", nonce=\"x\"",
    ] {
        let r = echo(
            &s,
            &anon,
            "/i/hyg/pub/echo",
            &[],
            Some((401, json!({ "WWW-Authenticate": challenge }))),
        )
        .await;
        assert_eq!(r.status, 401);
        assert!(
            r.headers.get("www-authenticate").is_none(),
            "{challenge} passed"
        );
    }
    let own = "Basic realm=\"sensors\"";
    let r = echo(
        &s,
        &anon,
        "/i/hyg/pub/echo",
        &[],
        Some((401, json!({ "WWW-Authenticate": own }))),
    )
    .await;
    assert_eq!(
        r.headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some(own),
        "an instance owning its public route's auth may challenge in its own realm"
    );
    // Where Redwall decides (a session rule), the flow does not challenge.
    let viewer_on_host = on_host(&s, &viewer, "hyg").await;
    let r = echo(
        &s,
        &viewer_on_host,
        "/sess/echo",
        &[],
        Some((401, json!({ "WWW-Authenticate": own }))),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.headers.get("www-authenticate").is_none());

    // Once Redwall asks for passwords on this instance's origin, a browser
    // may send one to any of its paths: no basic credential reaches the
    // flows then, and no flow challenges for one.
    set_routes(
        &owner,
        &team,
        "hyg",
        json!([
            {"path_prefix": "/pub", "policy": {"type": "public"}},
            {"path_prefix": "/basic", "policy": {"type": "basic", "min_role": "viewer"}}
        ]),
    )
    .await;
    let password = basic("vera", USER_PASSWORD);
    for credential in [password.as_str(), device.as_str()] {
        let r = echo(
            &s,
            &anon,
            "/i/hyg/pub/echo",
            &[("authorization", credential)],
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(seen_header(&r, "authorization"), None, "{credential}");
    }
    let r = echo(
        &s,
        &anon,
        "/i/hyg/pub/echo",
        &[],
        Some((401, json!({ "WWW-Authenticate": own }))),
    )
    .await;
    assert!(r.headers.get("www-authenticate").is_none());
    let r = echo(
        &s,
        &anon,
        "/i/hyg/basic/echo",
        &[("authorization", &password)],
        Some((
            401,
            json!({ "WWW-Authenticate": "Basic realm=\"redwall\"" }),
        )),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.headers.get("www-authenticate").is_none());
    // Redwall's own challenge is still there when it refuses.
    let r = echo(&s, &anon, "/i/hyg/basic/echo", &[], None).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.get("www-authenticate").is_some());
    s.stop().await;
}

#[tokio::test]
async fn a_flow_cannot_plant_a_cookie_that_could_read_as_ours() {
    let s = instance_server_with(Backend::Sqlite, |_| {}).await.unwrap();
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Cookies").await;
    create_running(&owner, &team, "jar").await;
    deploy_hygiene_flow(&s, &owner, "jar").await;
    set_routes(
        &owner,
        &team,
        "jar",
        json!([{"path_prefix": "/pub", "policy": {"type": "public"}}]),
    )
    .await;
    wait_for_endpoint(&s, "/i/jar/pub/echo").await;
    let planted = [
        "redwall_session=rwc_planted\u{e9}; Path=/",
        "=__Host-redwall_session=rwc_planted; Path=/",
        "=redwall_session=rwc_planted",
        "__HOST-REDWALL_SESSION=rwc_planted; Path=/; Secure",
        "__Secure-redwall_instance=x; Path=/",
        "Redwall_Form=x",
        "caf\u{e9}=1",
        "\"redwall_session\"=rwc_planted",
        "theme=dark; Path=/",
    ];
    let r = echo(
        &s,
        &s.anonymous(),
        "/i/jar/pub/echo",
        &[],
        Some((200, json!({ "Set-Cookie": planted }))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let set: Vec<String> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    assert_eq!(set, ["theme=dark; Path=/"], "only the flow's own cookie");
    s.stop().await;
}

async fn only_host_cookie_over_https(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.tls.mode = TlsMode::SelfSigned).await
    else {
        return;
    };
    let admin = s.admin().await;
    let cookie = admin.cookie.clone().unwrap();
    let value = cookie
        .strip_prefix("__Host-redwall_session=")
        .expect("the HTTPS session cookie is host-prefixed")
        .to_string();
    assert_eq!(admin.get("/api/v1/me").await.status, 200);
    for name in ["redwall_session", "__host-redwall_session"] {
        let mut planted = s.anonymous();
        planted.cookie = Some(format!("{name}={value}"));
        let r = planted.get("/api/v1/me").await;
        assert_eq!(r.status, 401, "{name} accepted over HTTPS: {}", r.text);
    }
    s.stop().await;
}

#[tokio::test]
async fn over_https_only_the_host_prefixed_session_cookie_counts_sqlite() {
    only_host_cookie_over_https(Backend::Sqlite).await;
}

#[tokio::test]
async fn over_https_only_the_host_prefixed_session_cookie_counts_postgres() {
    only_host_cookie_over_https(Backend::Postgres).await;
}

/// A raw request from a loopback address of our choice; the first bytes of
/// the answer, or "" when none came within `wait`.
async fn raw_from(
    from: IpAddr,
    to: SocketAddr,
    request: &str,
    wait: Duration,
) -> (tokio::net::TcpStream, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(wait, stream.read(&mut buf))
        .await
        .map_or(0, |r| r.unwrap_or(0));
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    (stream, text)
}

fn get_request(s: &TestServer, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nOrigin: {}\r\n\r\n",
        s.running.addr,
        s.running.base_url()
    )
}

fn upgrade_request(s: &TestServer, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nOrigin: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        s.running.addr,
        s.running.base_url()
    )
}

/// Established TCP connections to a loopback port, from the connecting side.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[2].ends_with(&remote) && fields[3] == "01"
        })
        .count()
}

/// Keeps sending `path` from `from` until the answer starts with `status`.
async fn until_answered(s: &TestServer, from: IpAddr, path: &str, status: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let (_, answer) = raw_from(
            from,
            s.running.addr,
            &get_request(s, path),
            Duration::from_secs(5),
        )
        .await;
        if answer.starts_with(status) {
            return answer;
        }
        last = answer;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never {status}: {last}");
}

#[tokio::test]
async fn hanging_upgrades_time_out_and_open_upstream_sockets_are_limited() {
    let s = instance_server_with(Backend::Sqlite, |c| {
        c.instances.upgrade_answer_secs = 1;
        c.instances.max_upstream_per_client = 2;
        c.instances.max_upstream_per_instance = 5;
    })
    .await
    .unwrap();
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Sockets").await;
    create_running(&owner, &team, "sock").await;
    deploy_hygiene_flow(&s, &owner, "sock").await;
    set_routes(
        &owner,
        &team,
        "sock",
        json!([{"path_prefix": "/pub", "policy": {"type": "public"}}]),
    )
    .await;
    wait_for_endpoint(&s, "/i/sock/pub/echo").await;
    let ip = |last: u8| IpAddr::from([127, 0, 0, last]);

    // Node-RED never answers an upgrade to a plain endpoint: Redwall does.
    let (_, answer) = raw_from(
        ip(2),
        s.running.addr,
        &upgrade_request(&s, "/i/sock/pub/echo"),
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer:?}");
    assert!(answer.contains("instance_timeout"), "{answer}");
    // ...and closes its socket to the instance: five at once leave none.
    let port = s
        .running
        .state
        .hub
        .store
        .get_instance_by_name("sock")
        .await
        .unwrap()
        .unwrap()
        .port;
    let before = connections_to(port);
    let upgrades = (6..11).map(|last| {
        let request = upgrade_request(&s, "/i/sock/pub/echo");
        let to = s.running.addr;
        async move {
            raw_from(ip(last), to, &request, Duration::from_secs(10))
                .await
                .1
        }
    });
    for answer in futures::future::join_all(upgrades).await {
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer:?}");
    }
    let mut open = connections_to(port);
    for _ in 0..50 {
        if open <= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        open = connections_to(port);
    }
    assert!(
        open <= before,
        "{open} connections to the instance, {before} before"
    );

    // Two requests the flow never answers fill client .2's allowance.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (stream, answer) = raw_from(
            ip(2),
            s.running.addr,
            &get_request(&s, "/i/sock/pub/hang"),
            Duration::from_millis(10),
        )
        .await;
        assert_eq!(answer, "");
        held.push(stream);
    }
    let refused = until_answered(&s, ip(2), "/i/sock/pub/echo", "HTTP/1.1 429").await;
    assert!(refused.contains("too_many_connections"), "{refused}");
    // Another client is not refused for it.
    until_answered(&s, ip(3), "/i/sock/pub/echo", "HTTP/1.1 200").await;
    // Three more held from other clients fill the instance's allowance.
    for last in [3, 3, 4] {
        let (stream, _) = raw_from(
            ip(last),
            s.running.addr,
            &get_request(&s, "/i/sock/pub/hang"),
            Duration::from_millis(10),
        )
        .await;
        held.push(stream);
    }
    let busy = until_answered(&s, ip(5), "/i/sock/pub/echo", "HTTP/1.1 503").await;
    assert!(busy.contains("instance_busy"), "{busy}");
    // Closing held requests gives their sockets back.
    held.drain(..2);
    until_answered(&s, ip(2), "/i/sock/pub/echo", "HTTP/1.1 200").await;
    until_answered(&s, ip(5), "/i/sock/pub/echo", "HTTP/1.1 200").await;
    drop(held);
    s.stop().await;
}

/// Status, body and headers (but the date) of an answer.
fn whole_answer(r: &Resp) -> (u16, String, Vec<(String, String)>) {
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() != "date")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    headers.sort();
    (r.status, r.text.clone(), headers)
}

async fn strangers_learn_nothing(backend: Backend) {
    let Some(s) = instance_server_with(backend, |c| {
        c.instances.domain = "example.test".into();
    })
    .await
    else {
        return;
    };
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let stranger = s.user(&admin, "sam").await;
    let alpha = create_team(&owner, "Alpha").await;
    let beta = create_team(&stranger, "Beta").await;
    let r = owner
        .post(
            &format!("/api/v1/teams/{alpha}/instances"),
            json!({"name": "plant", "start": false}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // The handover: a member gets a code, a stranger the answer for nothing.
    let login = |name: &str| format!("/api/v1/instance-login?instance={name}&next=/editor/");
    assert_eq!(owner.get(&login("plant")).await.status, 303);
    let theirs = stranger.get(&login("plant")).await;
    let missing = stranger.get(&login("nothing")).await;
    assert_eq!(theirs.status, 404, "{}", theirs.text);
    assert_eq!(whole_answer(&theirs), whole_answer(&missing));

    // A token limited to Beta: Alpha's id answers as a missing team does.
    let r = stranger
        .post(
            "/api/v1/me/tokens",
            json!({"name": "beta only", "scope": "full", "team_id": beta}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut limited = s.anonymous();
    limited.bearer = Some(r.body["token"].as_str().unwrap().to_string());
    assert_eq!(
        limited
            .get(&format!("/api/v1/teams/{beta}/instances"))
            .await
            .status,
        200
    );
    let other = limited
        .get(&format!("/api/v1/teams/{alpha}/instances"))
        .await;
    let unknown_id = "0123456789abcdef0123456789abcdef";
    let absent = limited
        .get(&format!("/api/v1/teams/{unknown_id}/instances"))
        .await;
    let malformed = limited.get("/api/v1/teams/no-such-team/instances").await;
    assert_eq!(other.status, 404, "{}", other.text);
    assert_eq!(whole_answer(&other), whole_answer(&absent));
    assert_eq!(whole_answer(&other), whole_answer(&malformed));
    s.stop().await;
}

#[tokio::test]
async fn strangers_learn_nothing_from_handovers_or_team_tokens_sqlite() {
    strangers_learn_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn strangers_learn_nothing_from_handovers_or_team_tokens_postgres() {
    strangers_learn_nothing(Backend::Postgres).await;
}

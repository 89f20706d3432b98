//! Managed instances end to end: a real Node-RED from npm, reached only
//! through Redwall's proxy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A server that runs instances from the shared test install of Node-RED,
/// on a port range of its own.
async fn instance_server() -> TestServer {
    instance_server_with(|_| {}).await
}

async fn instance_server_with(
    tweak: impl FnOnce(&mut redwall_server::config::Config),
) -> TestServer {
    let install = redwall_runtime::testing::shared_install().expect("Node-RED installs from npm");
    let base = redwall_runtime::testing::free_port();
    TestServer::start_with(Backend::Sqlite, move |c| {
        c.instances.node_red_path = Some(install.package_dir.clone());
        c.instances.node = install.node.clone();
        c.instances.port_min = base;
        c.instances.port_max = base.saturating_add(9);
        c.instances.uid_base = 100_000 + u32::from(base);
        // Machines (tokens, keys, basic) reach instances at /i/{name}/ too;
        // browsers' sessions only on the instance's own host name.
        c.instances.path_routing = true;
        tweak(c);
    })
    .await
    .expect("sqlite server")
}

/// Creates an instance that starts at once and waits until it runs;
/// returns the creation answer.
async fn create_running(c: &Client, team: &str, name: &str) -> Value {
    let r = c
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": name}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    wait_running(c, team, name).await;
    r.body
}

async fn wait_running(c: &Client, team: &str, name: &str) -> Value {
    for _ in 0..600 {
        let r = c
            .get(&format!("/api/v1/teams/{team}/instances/{name}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        match r.body["status"]["state"].as_str() {
            Some("running") => return r.body,
            Some("crash_loop") => panic!("instance gave up: {}", r.body),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("instance did not start in 60 s");
}

fn echo_flow(path: &str) -> Value {
    json!([
        {"id": "t1", "type": "tab", "label": "T"},
        {"id": "h1", "type": "http in", "z": "t1", "url": path, "method": "get", "upload": false, "swaggerDoc": "", "wires": [["f1"]]},
        {"id": "f1", "type": "function", "z": "t1", "func": "msg.payload = { headers: msg.req.headers, greeting: env.get('GREETING'), leaked: env.get('REDWALL_EDITOR_SECRET') || null }; msg.cookies = { redwall_session: { value: 'planted' }, theme: { value: 'dark' } }; return msg;", "outputs": 1, "wires": [["r1"]]},
        {"id": "r1", "type": "http response", "z": "t1", "statusCode": "", "headers": {}, "wires": []}
    ])
}

/// Cookie-authenticated writes through the proxy must look same-origin:
/// the instance's own host name.
fn same_origin(c: &Client) -> Client {
    let mut c = c.clone();
    let host = host_of(&c).expect("cookie writes go to an instance's host");
    c.headers.push(("origin", format!("http://{host}")));
    c
}

fn host_of(c: &Client) -> Option<String> {
    c.headers
        .iter()
        .find(|(k, _)| *k == "host")
        .map(|(_, v)| v.clone())
}

/// On an instance's host name its paths are the instance's own; machines
/// use the path route `/i/{name}/` on the console's address.
fn instance_path(c: &Client, name: &str, path: &str) -> String {
    match host_of(c) {
        Some(_) => path.to_string(),
        None => format!("/i/{name}{path}"),
    }
}

async fn deploy(c: &Client, name: &str, flows: Value) -> Resp {
    let mut c = c.clone();
    c.headers.push(("node-red-deployment-type", "full".into()));
    c.post(&instance_path(&c, name, "/editor/flows"), flows)
        .await
}

#[tokio::test]
async fn roles_rules_and_keys_decide_who_reaches_an_instance() {
    let s = instance_server().await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let member = s.user(&admin, "martin").await;
    let viewer = s.user(&admin, "vera").await;
    let dash = s.user(&admin, "dora").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &member, &team, "martin", "member").await;
    join_team(&owner, &viewer, &team, "vera", "viewer").await;
    join_team(&owner, &dash, &team, "dora", "dashboard").await;

    // Created stopped, given its environment (one secret), then started.
    let r = member
        .post(
            &format!("/api/v1/teams/{team}/instances"),
            json!({"name": "plant", "start": false}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let port = s
        .running
        .state
        .hub
        .store
        .get_instance_by_name("plant")
        .await
        .unwrap()
        .unwrap()
        .port;
    let r = member
        .put(
            &format!("/api/v1/teams/{team}/instances/plant/env"),
            json!([{"name": "GREETING", "value": "hello"}, {"name": "DB_PASSWORD", "value": "s3cret-value", "secret": true}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let secret = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "DB_PASSWORD")
        .unwrap();
    assert_eq!(secret["value"], Value::Null, "secret values are write-only");
    assert!(!r.text.contains("s3cret-value"));
    let r = viewer
        .put(
            &format!("/api/v1/teams/{team}/instances/plant/env"),
            json!([]),
        )
        .await;
    assert_eq!(r.status, 403, "a Viewer cannot change the environment");
    let r = member
        .post(
            &format!("/api/v1/teams/{team}/instances/plant/start"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_running(&member, &team, "plant").await;

    // The editor: nobody anonymous, not a Dashboard user; a Viewer reads
    // but cannot deploy; a Member deploys with a personal access token, as
    // a CI pipeline would.
    assert_eq!(s.anonymous().get("/i/plant/editor/").await.status, 401);
    let dash_i = on_host(&s, &dash, "plant").await;
    let viewer_i = on_host(&s, &viewer, "plant").await;
    assert_eq!(dash_i.get("/editor/flows").await.status, 403);
    let r = viewer_i.get("/editor/flows").await;
    assert_eq!(r.status, 200, "viewer reads flows: {}", r.text);
    assert_eq!(
        viewer.get("/i/plant/editor/flows").await.status,
        401,
        "the console's own origin honours no browser session for an instance"
    );
    let r = deploy(&same_origin(&viewer_i), "plant", echo_flow("/hello")).await;
    assert_eq!(
        (r.status, r.code()),
        (403, "editor_read_only"),
        "viewer deploy: {}",
        r.text
    );
    let member_i = on_host(&s, &member, "plant").await;
    let r = deploy(&member_i, "plant", echo_flow("/hello")).await;
    assert_eq!(
        r.status, 403,
        "a cookie write without Origin is refused (CSRF): {}",
        r.text
    );
    let ci = s.token_client(&member, "full").await;
    let r = deploy(&ci, "plant", echo_flow("/hello")).await;
    assert!(
        r.status == 200 || r.status == 204,
        "member deploys: {} {}",
        r.status,
        r.text
    );
    // Palette installs are off until an Owner allows them.
    let r = ci
        .post(
            "/i/plant/editor/nodes",
            json!({"module": "node-red-contrib-anything"}),
        )
        .await;
    assert!(
        (400..500).contains(&r.status),
        "palette install refused: {} {}",
        r.status,
        r.text
    );
    let r = member
        .put(
            &format!("/api/v1/teams/{team}/instances/plant/options"),
            json!({"allow_palette_install": true}),
        )
        .await;
    assert_eq!(
        r.status, 403,
        "only Owners change what an instance may install"
    );
    let r = ci.get("/i/plant/editor/flows").await;
    assert!(r.text.contains("/hello"), "{}", r.text);
    let read_only = s.token_client(&member, "read").await;
    let r = deploy(&read_only, "plant", echo_flow("/hello")).await;
    assert_eq!(
        (r.status, r.code()),
        (403, "editor_read_only"),
        "read token deploy: {}",
        r.text
    );

    // The endpoint: denied until a rule allows it.
    let r = s.anonymous().get("/i/plant/hello").await;
    assert_eq!((r.status, r.code()), (403, "no_matching_rule"));

    // API keys.
    let r = member
        .post(
            &format!("/api/v1/teams/{team}/instances/plant/keys"),
            json!({"name": "line 4"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.body["key"].as_str().unwrap().to_string();
    let key_id = r.body["details"]["id"].as_str().unwrap().to_string();
    let listed = member
        .get(&format!("/api/v1/teams/{team}/instances/plant/keys"))
        .await;
    assert!(!listed.text.contains(&key), "a key is shown once only");
    let r = member
        .put(
            &format!("/api/v1/teams/{team}/instances/plant/routes"),
            json!([{"path_prefix": "/hello", "methods": ["GET"], "policy": {"type": "api_key"}}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut machine = s.anonymous();
    machine.bearer = Some(key.clone());
    let mut forged = machine.clone();
    forged.headers.push(("x-redwall-user", "olivia".into()));
    forged
        .headers
        .push(("x-redwall-endpoint-token", "v1.forged.forged".into()));
    // Node-RED registers a deployed endpoint a moment after the deploy answers.
    let mut r = forged.get("/i/plant/hello").await;
    for _ in 0..100 {
        if r.status != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = forged.get("/i/plant/hello").await;
    }
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.headers["content-security-policy"], "sandbox",
        "what an instance serves on the console's origin runs in an opaque origin"
    );
    let seen = &r.body["headers"];
    let cookies: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("theme=")),
        "{cookies:?}"
    );
    assert!(
        !cookies.iter().any(|c| c.contains("redwall")),
        "a flow cannot plant Redwall cookies: {cookies:?}"
    );
    assert_eq!(
        seen["x-redwall-user"],
        format!("key:{key_id}"),
        "flows learn the caller, not a forged name"
    );
    assert!(
        seen.get("x-redwall-endpoint-token").is_none(),
        "the endpoint token is stripped before the flow"
    );
    assert!(
        seen.get("authorization").is_none(),
        "the API key does not reach the flow"
    );
    assert_eq!(
        r.body["greeting"], "hello",
        "${{GREETING}} reaches Node-RED from the environment"
    );
    assert_eq!(
        r.body["leaked"],
        Value::Null,
        "Redwall's own secrets are not in the flow's env"
    );
    assert_eq!(s.anonymous().get("/i/plant/hello").await.status, 401);
    let mut wrong = s.anonymous();
    wrong.bearer = Some(format!("rwk_{}", "A".repeat(43)));
    assert_eq!(
        wrong.get("/i/plant/hello").await.code(),
        "credential_invalid"
    );
    let r = member
        .delete(&format!(
            "/api/v1/teams/{team}/instances/plant/keys/{key_id}"
        ))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        machine.get("/i/plant/hello").await.status,
        401,
        "a revoked key is refused at once"
    );

    // A session rule for dashboards and forms: a Dashboard member passes,
    // a stranger's session does not, nobody anonymous.
    let r = owner
        .put(
            &format!("/api/v1/teams/{team}/instances/plant/routes"),
            json!([{"path_prefix": "/hello", "policy": {"type": "session", "min_role": "dashboard"}}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = dash_i.get("/hello").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["headers"]["x-redwall-user"], "dora");
    assert!(
        r.body["headers"].get("cookie").is_none(),
        "the Redwall session cookie never reaches a flow"
    );
    assert_eq!(
        dash.get("/i/plant/hello").await.status,
        401,
        "not on the console's origin"
    );
    let stranger = s.user(&admin, "sam").await;
    if let Some(stranger_i) = try_on_host(&s, &stranger, "plant").await {
        assert_eq!(stranger_i.get("/hello").await.status, 403);
    }
    assert_eq!(s.anonymous().get("/i/plant/hello").await.status, 401);

    // Basic auth with Redwall accounts, for devices that can do nothing else.
    let r = owner
        .put(
            &format!("/api/v1/teams/{team}/instances/plant/routes"),
            json!([{"path_prefix": "/hello", "policy": {"type": "basic", "min_role": "viewer"}}]),
        )
        .await;
    assert_eq!(r.status, 200);
    let basic = |u: &str, p: &str| {
        s.anonymous()
            .http
            .get(s.url("/i/plant/hello"))
            .basic_auth(u, Some(p))
    };
    let r = s.anonymous().raw(basic("vera", USER_PASSWORD)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["headers"].get("authorization").is_none());
    let r = s.anonymous().raw(basic("vera", "wrong-password-123")).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.get("www-authenticate").is_some());
    assert_eq!(
        s.anonymous().raw(basic("dora", USER_PASSWORD)).await.status,
        403
    );

    // Address ranges: a rule limited to 10.0.0.0/8 refuses loopback.
    let r = owner
        .put(
            &format!("/api/v1/teams/{team}/instances/plant/routes"),
            json!([{"path_prefix": "/", "policy": {"type": "public"}, "client_ranges": ["10.0.0.0/8"]}]),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        s.anonymous().get("/i/plant/hello").await.code(),
        "address_refused"
    );
    let r = viewer
        .post(
            &format!("/api/v1/teams/{team}/instances/plant/routes/test"),
            json!({"method": "GET", "path": "/hello", "client_ip": "10.1.2.3"}),
        )
        .await;
    assert_eq!(
        (r.body["decision"].as_str(), r.body["matched_rule"].as_u64()),
        (Some("allow"), Some(0)),
        "{}",
        r.body
    );

    // The team's own ranges guard the editor as well.
    let r = owner
        .patch(
            &format!("/api/v1/teams/{team}"),
            json!({"allowed_cidrs": ["10.0.0.0/8"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(viewer_i.get("/editor/flows").await.status, 403);
    let r = owner
        .patch(
            &format!("/api/v1/teams/{team}"),
            json!({"allowed_cidrs": []}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(viewer_i.get("/editor/flows").await.status, 200);

    // The instance's own port: nothing answers without Redwall's tokens.
    let direct = redwall_runtime::instance_address(port, true);
    let direct_url = |path: &str| format!("http://{direct}{path}");
    let direct = reqwest::get(direct_url("/hello")).await.unwrap();
    assert_eq!(direct.status(), 401);
    let direct = reqwest::get(direct_url("/editor/")).await.unwrap();
    assert_eq!(direct.status(), 401);

    // Paths that could be read two ways are refused, not guessed at.
    let raw = raw_request(&s, "GET /i/plant/a/../hello HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    let raw = raw_request(&s, "POST /i/plant/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\nhello").await;
    assert!(
        raw.starts_with("HTTP/1.1 400"),
        "duplicate Content-Length: {raw}"
    );
    assert_eq!(
        s.anonymous().get("/healthz").await.status,
        200,
        "Redwall is unharmed"
    );

    // The instance's Node-RED audit events arrive in the team log with the
    // Redwall user who deployed.
    let log = owner
        .get(&format!(
            "/api/v1/teams/{team}/audit?event=instance.*&limit=1000"
        ))
        .await;
    let events: Vec<&Value> = log.body["entries"].as_array().unwrap().iter().collect();
    let has = |name: &str| events.iter().any(|e| e["event"] == name);
    for name in [
        "instance.created",
        "instance.started",
        "instance.env_changed",
        "instance.key_created",
        "instance.key_revoked",
        "instance.key_rejected",
        "instance.routes_changed",
        "instance.editor_denied",
        "instance.basic_rejected",
    ] {
        assert!(has(name), "{name} missing from {}", log.text);
    }
    let mut deployed = false;
    for _ in 0..50 {
        let log = owner
            .get(&format!(
                "/api/v1/teams/{team}/audit?event=instance.node_red&limit=100"
            ))
            .await;
        deployed =
            log.body["entries"].as_array().unwrap().iter().any(|e| {
                e["details"]["node_red_event"] == "flows.set" && e["actor_name"] == "martin"
            });
        if deployed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !deployed {
        let log = owner
            .get(&format!(
                "/api/v1/teams/{team}/audit?event=instance.node_red&limit=100"
            ))
            .await;
        panic!(
            "the deploy is not in the team log under martin: {}",
            log.text
        );
    }
    let env_audit = events
        .iter()
        .find(|e| e["event"] == "instance.env_changed")
        .unwrap();
    assert!(
        !env_audit.to_string().contains("s3cret-value"),
        "names only in the log"
    );

    // A team with instances cannot be deleted; the instance goes first, by name.
    let r = owner
        .delete_with(
            &format!("/api/v1/teams/{team}"),
            json!({"confirm_name": "Plant"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "team_has_instances"));
    assert_eq!(
        member
            .delete_with(
                &format!("/api/v1/teams/{team}/instances/plant"),
                json!({"confirm_name": "plant"})
            )
            .await
            .status,
        403,
        "only Owners delete"
    );
    assert_eq!(
        owner
            .delete_with(
                &format!("/api/v1/teams/{team}/instances/plant"),
                json!({"confirm_name": "Plant"})
            )
            .await
            .status,
        422
    );
    assert_eq!(
        owner
            .delete_with(
                &format!("/api/v1/teams/{team}/instances/plant"),
                json!({"confirm_name": "plant"})
            )
            .await
            .status,
        204
    );
    assert_eq!(s.anonymous().get("/i/plant/hello").await.status, 404);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "its Node-RED is gone"
    );
    s.stop().await;
}

/// Sends bytes as they are (reqwest would refuse to send malformed
/// requests); blocking I/O runs off the test's runtime, which also serves.
async fn raw_request(s: &TestServer, request: &str) -> String {
    let addr = s.running.addr;
    let request = request.to_string();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn websockets_close_when_the_session_or_membership_ends() {
    let s = instance_server().await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Ops").await;
    create_running(&owner, &team, "ops").await;

    let owner_i = on_host(&s, &owner, "ops").await;
    let host = host_of(&owner_i).unwrap();
    let url = format!("ws://{}/editor/comms", s.running.addr);
    let mut anonymous = url.clone().into_client_request().unwrap();
    anonymous.headers_mut().insert("host", header_value(&host));
    let refused = tokio_tungstenite::connect_async(anonymous).await;
    assert!(refused.is_err(), "no websocket without a session");

    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("host", header_value(&host));
    request
        .headers_mut()
        .insert("cookie", header_value(owner_i.cookie.as_ref().unwrap()));
    let mut foreign = request.clone();
    foreign
        .headers_mut()
        .insert("origin", header_value("https://evil.example"));
    assert!(
        tokio_tungstenite::connect_async(foreign).await.is_err(),
        "another site's page cannot open the editor socket"
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("editor websocket opens");
    assert_eq!(response.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"subscribe":"notification/#"}"#,
    ))
    .await
    .unwrap();
    // It stays open across several access re-checks.
    let early = tokio::time::timeout(Duration::from_millis(2500), async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if !m.is_close() => continue,
                other => return other.is_some(),
            }
        }
    })
    .await;
    assert!(
        early.is_err(),
        "the socket stays open while the session lives"
    );

    // A websocket-in endpoint of the flows, behind a session rule: a
    // Dashboard member talks to it until removed from the team.
    let admin_ci = s.token_client(&owner, "full").await;
    let mut ci = admin_ci.clone();
    ci.headers.push(("node-red-deployment-type", "full".into()));
    let flows = json!([
        {"id": "t1", "type": "tab", "label": "T"},
        {"id": "wl", "type": "websocket-listener", "path": "/ws/echo", "wholemsg": "false"},
        {"id": "wi", "type": "websocket in", "z": "t1", "server": "wl", "client": "", "wires": [["wo"]]},
        {"id": "wo", "type": "websocket out", "z": "t1", "server": "wl", "client": "", "wires": []}
    ]);
    let r = ci.post("/i/ops/editor/flows", flows).await;
    assert!(
        r.status == 200 || r.status == 204,
        "{} {}",
        r.status,
        r.text
    );
    let r = owner
        .put(
            &format!("/api/v1/teams/{team}/instances/ops/routes"),
            json!([{"path_prefix": "/ws", "policy": {"type": "session", "min_role": "dashboard"}}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let dash = s.user(&admin, "dora").await;
    join_team(&owner, &dash, &team, "dora", "dashboard").await;
    let dash_i = on_host(&s, &dash, "ops").await;
    let echo_url = format!("ws://{}/ws/echo", s.running.addr);
    let mut anonymous = echo_url.clone().into_client_request().unwrap();
    anonymous.headers_mut().insert("host", header_value(&host));
    assert!(
        tokio_tungstenite::connect_async(anonymous).await.is_err(),
        "no session, no socket"
    );
    let mut request = echo_url.into_client_request().unwrap();
    request.headers_mut().insert("host", header_value(&host));
    request
        .headers_mut()
        .insert("cookie", header_value(dash_i.cookie.as_ref().unwrap()));
    let mut echo = None;
    for _ in 0..50 {
        // The listener appears a moment after the deploy answers.
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(request.clone()).await {
            echo = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut echo = echo.expect("a Dashboard member reaches the websocket-in endpoint");
    echo.send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), echo.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer.into_text().unwrap().as_str(), "ping");
    let members = owner.get(&format!("/api/v1/teams/{team}/members")).await;
    let dora = members
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["username"] == "dora")
        .unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        owner
            .delete(&format!("/api/v1/teams/{team}/members/{dora}"))
            .await
            .status,
        204
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match echo.next().await {
                Some(Ok(m)) if !m.is_close() => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "removal from the team closes the endpoint socket"
    );

    let r = owner.post("/api/v1/auth/logout", json!({})).await;
    assert_eq!(r.status, 204);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if !m.is_close() => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the socket closes within seconds of logout");
    s.stop().await;
}

#[tokio::test]
async fn instance_host_names_take_over_the_console_session() {
    let listen = redwall_runtime::testing::free_port();
    let s = instance_server_with(move |c| {
        c.instances.domain = "example.test".into();
        c.server.listen = format!("127.0.0.1:{listen}").parse().unwrap();
        c.server.public_url = Some(format!("http://127.0.0.1:{listen}"));
    })
    .await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Field").await;
    let r = create_running(&owner, &team, "plant").await;
    assert_eq!(
        r["editor_url"],
        format!("http://plant.example.test:{listen}/editor/")
    );

    let host = format!("plant.example.test:{listen}");
    let on_instance = |path: &str, cookie: Option<&str>| {
        let mut req = s
            .anonymous()
            .http
            .get(s.url(path))
            .header("host", host.clone())
            .header("accept", "text/html");
        if let Some(c) = cookie {
            req = req.header("cookie", c.to_string());
        }
        req
    };

    // A browser without a session is sent to the console to log in.
    let r = s.anonymous().raw(on_instance("/editor/", None)).await;
    assert!(
        r.status == 303 || r.status == 302 || r.status == 307,
        "{} {}",
        r.status,
        r.text
    );
    let to_console = r.headers["location"].to_str().unwrap().to_string();
    assert!(
        to_console.starts_with(&format!(
            "http://127.0.0.1:{listen}/api/v1/instance-login?instance=plant"
        )),
        "{to_console}"
    );

    // The console hands its session over with a one-time code.
    let path = to_console.trim_start_matches(&format!("http://127.0.0.1:{listen}"));
    let r = owner.get(path).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let to_instance = r.headers["location"].to_str().unwrap().to_string();
    let callback = to_instance.trim_start_matches(&format!("http://{host}"));
    assert!(
        callback.starts_with("/_redwall/callback?code="),
        "{to_instance}"
    );
    let r = s.anonymous().raw(on_instance(callback, None)).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.headers["location"], "/editor/");
    let pass = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(pass.starts_with("redwall_instance="), "{pass}");
    let replay = s.anonymous().raw(on_instance(callback, None)).await;
    assert_eq!(replay.status, 401, "a code works once");

    let r = s
        .anonymous()
        .raw(on_instance("/editor/flows", Some(&pass)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The console's API is not on instance hosts: its cookies stay apart.
    let r = s
        .anonymous()
        .raw(on_instance("/api/v1/me", Some(&pass)))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);

    // Logging out of the console ends the instance session too.
    assert_eq!(
        owner.post("/api/v1/auth/logout", json!({})).await.status,
        204
    );
    let r = s
        .anonymous()
        .raw(on_instance("/editor/flows", Some(&pass)))
        .await;
    assert!(
        r.status == 401 || r.status == 303,
        "{} {}",
        r.status,
        r.text
    );
    s.stop().await;
}

#[tokio::test]
async fn a_missing_or_unfit_node_red_is_explained_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let old_node = dir.path().join("node");
    std::fs::write(&old_node, "#!/bin/sh\necho v16.20.2\n").unwrap();
    std::fs::set_permissions(
        &old_node,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let install = redwall_runtime::testing::shared_install().unwrap();
    for (case, path, node) in [
        (
            "missing",
            dir.path().join("no-node-red"),
            install.node.clone(),
        ),
        ("old node", install.package_dir.clone(), old_node.clone()),
    ] {
        let s = TestServer::start_with(Backend::Sqlite, |c| {
            c.instances.node_red_path = Some(path.clone());
            c.instances.node = node.clone();
        })
        .await
        .unwrap();
        let admin = s.admin().await;
        let team = create_team(&admin, "T").await;
        let r = admin
            .post(
                &format!("/api/v1/teams/{team}/instances"),
                json!({"name": "plant"}),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (503, "runtime_unavailable"),
            "{case}: {}",
            r.body
        );
        let message = r.body["error"]["message"].as_str().unwrap();
        match case {
            "missing" => assert!(message.contains("no-node-red"), "{message}"),
            _ => assert!(
                message.contains("16.20.2") && message.contains("Node"),
                "{message}"
            ),
        }
        let list = admin.get(&format!("/api/v1/teams/{team}/instances")).await;
        assert_eq!(list.body, json!([]), "{case}: nothing half-made is stored");
        s.stop().await;
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let s = instance_server().await;
    let admin = s.admin().await;
    let team = create_team(&admin, "T").await;
    let base = format!("/api/v1/teams/{team}/instances");
    for (body, code) in [
        (json!({"name": "A"}), "invalid_name"),
        (json!({"name": "x"}), "invalid_name"),
        (json!({"name": "ends-"}), "invalid_name"),
        (json!({"name": 7}), "invalid_body"),
    ] {
        let r = admin.post(&base, body.clone()).await;
        assert_eq!((r.status, r.code()), (422, code), "{body}: {}", r.body);
    }
    let r = admin
        .post(&base, json!({"name": "plant", "start": false}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = admin
        .post(&base, json!({"name": "plant", "start": false}))
        .await;
    assert_eq!((r.status, r.code()), (409, "name_taken"));
    assert_eq!(admin.get(&format!("{base}/nope")).await.status, 404);
    assert_eq!(s.anonymous().get("/i/nope/editor/").await.status, 404);
    for (env, code) in [
        (
            json!([{"name": "REDWALL_EDITOR_SECRET", "value": "x"}]),
            "reserved_env_name",
        ),
        (
            json!([{"name": "NODE_OPTIONS", "value": "--inspect"}]),
            "reserved_env_name",
        ),
        (json!([{"name": "1A", "value": "x"}]), "invalid_env_name"),
        (json!([{"name": "NEW"}]), "missing_value"),
        (
            json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
            "duplicate_name",
        ),
    ] {
        let r = admin.put(&format!("{base}/plant/env"), env.clone()).await;
        assert_eq!((r.status, r.code()), (422, code), "{env}: {}", r.body);
    }
    for (rules, code) in [
        (
            json!([{"path_prefix": "/a/../b", "policy": {"type": "public"}}]),
            "invalid_rules",
        ),
        (
            json!([{"path_prefix": "/a", "policy": {"type": "open"}}]),
            "invalid_rules",
        ),
        (
            json!([{"path_prefix": "/a", "methods": ["FETCH"], "policy": {"type": "public"}}]),
            "invalid_rules",
        ),
        (
            json!([{"path_prefix": "/a", "policy": {"type": "session", "min_role": "boss"}}]),
            "invalid_rules",
        ),
        (
            json!([{"path_prefix": "/a", "policy": {"type": "public"}, "client_ranges": ["not-a-net"]}]),
            "invalid_rules",
        ),
    ] {
        let r = admin
            .put(&format!("{base}/plant/routes"), rules.clone())
            .await;
        assert_eq!((r.status, r.code()), (422, code), "{rules}: {}", r.body);
    }
    // Stopping what never ran is not an error.
    let r = admin.post(&format!("{base}/plant/stop"), json!({})).await;
    assert_eq!(
        (r.status, r.body["status"]["state"].as_str()),
        (200, Some("stopped")),
        "{}",
        r.body
    );
    // The port it was given is taken by someone else: a clear conflict.
    let port = s
        .running
        .state
        .hub
        .store
        .get_instance_by_name("plant")
        .await
        .unwrap()
        .unwrap()
        .port;
    // An isolated instance binds its port in its own network namespace, so
    // the conflict is another live namespace for that port.
    let ns = format!("redwall-{port}");
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap()
    };
    assert!(ip(&["netns", "add", &ns]).success());
    let mut squatter = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "sleep", "60"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = admin.post(&format!("{base}/plant/start"), json!({})).await;
    squatter.kill().unwrap();
    squatter.wait().unwrap();
    ip(&["netns", "del", &ns]);
    assert_eq!((r.status, r.code()), (409, "port_in_use"), "{}", r.body);
    // Bodies above the instances' limit are refused before they are read
    // (and bodies for paths no rule allows are not read at all).
    let r = admin
        .put(
            &format!("{base}/plant/routes"),
            json!([{"path_prefix": "/upload", "policy": {"type": "public"}}]),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .anonymous()
        .raw(
            s.anonymous()
                .http
                .post(s.url("/i/plant/upload"))
                .body(vec![b'x'; 6 * 1024 * 1024]),
        )
        .await;
    assert_eq!((r.status, r.code()), (413, "body_too_large"));
    s.stop().await;
}

#[tokio::test]
async fn a_crashing_instance_is_restarted_then_given_up_with_its_reason() {
    let s = instance_server_with(|c| c.instances.max_backoff_secs = 1).await;
    let admin = s.admin().await;
    let team = create_team(&admin, "T").await;
    create_running(&admin, &team, "fragile").await;
    let ci = s.token_client(&admin, "full").await;
    // Malformed flows are Node-RED's to refuse; Redwall passes the answer on.
    let mut raw = ci.clone();
    raw.headers
        .push(("node-red-deployment-type", "full".into()));
    let r = raw
        .post("/i/fragile/editor/flows", json!({"not": "flows"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // A flow that ends the process shortly after every start.
    let flows = json!([
        {"id": "t1", "type": "tab", "label": "T"},
        {"id": "i1", "type": "inject", "z": "t1", "once": true, "onceDelay": 0.1, "repeat": "", "topic": "", "payload": "", "payloadType": "date", "wires": [["f1"]]},
        {"id": "f1", "type": "function", "z": "t1", "func": "Buffer.constructor('return process')().exit(3);", "outputs": 1, "wires": [[]]}
    ]);
    let r = raw.post("/i/fragile/editor/flows", flows).await;
    assert!(
        r.status == 200 || r.status == 204,
        "{} {}",
        r.status,
        r.text
    );
    let mut last = Value::Null;
    for _ in 0..400 {
        last = admin
            .get(&format!("/api/v1/teams/{team}/instances/fragile"))
            .await
            .body;
        if last["status"]["state"] == "crash_loop" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["status"]["state"], "crash_loop", "{last}");
    assert!(
        last["status"]["reason"].as_str().unwrap().contains('3'),
        "the exit code is the reason: {last}"
    );
    let crashed = admin
        .get(&format!(
            "/api/v1/teams/{team}/audit?event=instance.crashed"
        ))
        .await;
    assert!(
        crashed.body["entries"].as_array().unwrap().len() >= 2,
        "{}",
        crashed.text
    );
    let logs = admin
        .get(&format!(
            "/api/v1/teams/{team}/instances/fragile/logs?lines=1000"
        ))
        .await;
    assert_eq!(logs.status, 200);
    assert!(
        logs.text.contains("Started flows") || logs.text.contains("Starting flows"),
        "{}",
        logs.text
    );
    // Redwall itself is fine and the instance can be stopped cleanly.
    let r = admin
        .post(
            &format!("/api/v1/teams/{team}/instances/fragile/stop"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"]["state"], "stopped");
    s.stop().await;
}

#[tokio::test]
async fn rotating_the_instance_secret_key_keeps_every_value() {
    let s = instance_server().await;
    let admin = s.admin().await;
    let team = create_team(&admin, "T").await;
    let base = format!("/api/v1/teams/{team}/instances");
    assert_eq!(
        admin
            .post(&base, json!({"name": "plant", "start": false}))
            .await
            .status,
        201
    );
    let r = admin
        .put(
            &format!("{base}/plant/env"),
            json!([{"name": "GREETING", "value": "hello"}, {"name": "TOKEN", "value": "t0p-secret", "secret": true}]),
        )
        .await;
    assert_eq!(r.status, 200);
    let state = &s.running.state;
    let cli = redwall_hub::Origin::local("redwall-cli");
    let who = redwall_hub::Who {
        actor: None,
        origin: &cli,
    };
    let report = state.hub.rotate_instance_secrets(who).await.unwrap();
    assert_eq!(
        (report.from_version, report.to_version, report.resealed),
        (1, 2, 3)
    );
    let stored = state
        .hub
        .store
        .get_instance_by_name("plant")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.secrets.starts_with("v2."), "{}", stored.secrets);
    let env = state.hub.store.list_instance_env(&stored.id).await.unwrap();
    assert!(env
        .iter()
        .all(|e| e.value.starts_with("v2.") && !e.value.contains("t0p-secret")));
    let r = admin.get(&format!("{base}/plant/env")).await;
    assert_eq!(r.body[0]["value"], "hello", "{}", r.body);
    // New values are sealed under the new version; the instance still starts.
    let r = admin
        .put(
            &format!("{base}/plant/env"),
            json!([{"name": "GREETING", "value": "hi"}, {"name": "TOKEN", "secret": true}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let env = state.hub.store.list_instance_env(&stored.id).await.unwrap();
    assert!(env.iter().all(|e| e.value.starts_with("v2.")));
    assert_eq!(
        admin
            .post(&format!("{base}/plant/start"), json!({}))
            .await
            .status,
        200
    );
    wait_running(&admin, &team, "plant").await;
    assert_eq!(audit_events(&admin, "keys.rotated").await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    let s = instance_server().await;
    let addr = s.running.addr;
    let started = std::time::Instant::now();
    let cut = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /i/plant/hello HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        for i in 0..60 {
            std::thread::sleep(Duration::from_millis(500));
            if stream
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .is_err()
            {
                return true;
            }
            stream.set_nonblocking(true).unwrap();
            let mut b = [0u8; 512];
            let closed = matches!(stream.read(&mut b), Ok(0))
                || matches!(stream.read(&mut b), Ok(n) if n > 0);
            stream.set_nonblocking(false).unwrap();
            if closed {
                return true;
            }
        }
        false
    });
    // Meanwhile everyone else is served.
    assert_eq!(s.anonymous().get("/healthz").await.status, 200);
    assert!(cut.await.unwrap(), "the slow client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    s.stop().await;
}

/// The security pass's finding: with path routing on by default, a flow's
/// page at `/i/{name}/` shared the console's origin, read its CSRF token
/// with the visitor's cookie and acted as the visitor. By default every
/// instance now has its own origin, `{name}.localhost`, and `/i/` is nothing.
#[tokio::test]
async fn instance_content_never_shares_the_consoles_origin() {
    let s = instance_server_with(|c| c.instances.path_routing = false).await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Field").await;
    let port = s.running.addr.port();
    let r = create_running(&owner, &team, "plant").await;
    assert_eq!(
        r["editor_url"],
        format!("http://plant.localhost:{port}/editor/")
    );
    let mut ci = s.token_client(&owner, "full").await;
    ci.headers.push(("host", format!("plant.localhost:{port}")));
    let r = deploy(&ci, "plant", echo_flow("/hello")).await;
    assert!(
        r.status == 200 || r.status == 204,
        "{} {}",
        r.status,
        r.text
    );
    let r = owner
        .put(
            &format!("/api/v1/teams/{team}/instances/plant/routes"),
            json!([{"path_prefix": "/hello", "policy": {"type": "public"}}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // On the console's origin there is no instance at all.
    for path in [
        "/i/plant/hello",
        "/i/plant/editor/",
        "/i/plant/editor/flows",
    ] {
        let r = owner.get(path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
        assert!(!r.text.contains("hello"), "{path}: {}", r.text);
    }
    // On its own host name it answers.
    let mut visitor = s.anonymous();
    visitor
        .headers
        .push(("host", format!("plant.localhost:{port}")));
    let mut r = visitor.get("/hello").await;
    for _ in 0..100 {
        if r.status != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = visitor.get("/hello").await;
    }
    assert_eq!(r.status, 200, "{}", r.text);
    s.stop().await;
}

/// The proxy's own body limit, over HTTP/2 as browsers speak it: the 413
/// arrives, not a reset (the stream used to be reset before the answer).
#[tokio::test]
async fn the_proxys_body_limit_answers_413_over_http2() {
    let s = instance_server_with(|c| {
        c.tls.mode = redwall_server::config::TlsMode::SelfSigned;
        c.instances.max_body_bytes = 64 * 1024;
    })
    .await;
    let admin = s.admin().await;
    let team = create_team(&admin, "T").await;
    create_running(&admin, &team, "plant").await;
    let r = admin
        .put(
            &format!("/api/v1/teams/{team}/instances/plant/routes"),
            json!([{"path_prefix": "/upload", "policy": {"type": "public"}}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b'x'; 3 * 1024 * 1024]).unwrap();
    let url = s.url("/i/plant/upload");
    let mut seen = Vec::new();
    for protocol in ["--http2", "--http1.1"] {
        for _ in 0..3 {
            // curl blocks: off the runtime thread the server runs on.
            let (body, url) = (body.clone(), url.clone());
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("curl")
                    .args(["-sk", protocol, "-H", "expect:", "-o", "/dev/null"])
                    .args(["-w", "%{http_code}", "--max-time", "60", "--data-binary"])
                    .arg(format!("@{}", body.display()))
                    .arg(&url)
                    .output()
                    .expect("curl runs")
            })
            .await
            .unwrap();
            seen.push(format!(
                "{protocol}: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    assert!(
        seen.iter().all(|l| l.ends_with(": 413")),
        "{}",
        seen.join("\n")
    );
    s.stop().await;
}

/// Waits (up to `limit`) until the instance runs, returning every status
/// seen on the way.
async fn statuses_until_running(c: &Client, team: &str, name: &str, limit: Duration) -> Vec<Value> {
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < limit {
        let r = c
            .get(&format!("/api/v1/teams/{team}/instances/{name}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let status = r.body["status"].clone();
        seen.push(status.clone());
        match status["state"].as_str() {
            Some("running") => return seen,
            Some("crash_loop") | Some("failed") => panic!("{name} gave up: {status}"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    panic!(
        "{name} did not run within {limit:?}; last: {:?}",
        seen.last()
    );
}

/// Issue 14 item 9 and item 10: the first instance on a new machine, where
/// npm installs Node-RED into the data directory with a cold cache. This is
/// the suite's one cold install (it takes minutes; the time is printed).
#[tokio::test]
async fn the_first_instances_answer_at_once_while_npm_installs_node_red() {
    let tools = tempfile::tempdir().unwrap();
    let cache = tools.path().join("npm-cache");
    std::fs::create_dir(&cache).unwrap();
    // npm as users run it, with a cache of its own that starts empty.
    let npm = tools.path().join("npm");
    std::fs::write(
        &npm,
        format!(
            "#!/bin/sh\nnpm_config_cache='{}' exec npm \"$@\"\n",
            cache.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&npm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = redwall_runtime::testing::free_port();
    let boot = std::time::Instant::now();
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.instances.install_at_start = true; // as `serve` does by default
        c.instances.npm = npm.clone();
        c.instances.port_min = base;
        c.instances.port_max = base.saturating_add(9);
        c.instances.uid_base = 100_000 + u32::from(base);
    })
    .await
    .expect("sqlite server");
    let admin = s.admin().await;
    let team = create_team(&admin, "Plant").await;
    let path = format!("/api/v1/teams/{team}/instances");

    // Three creates at once during the install (one name twice): each is
    // answered at once, none waits for npm, and none fails on the server.
    let asked = std::time::Instant::now();
    let (a, b, again) = tokio::join!(
        admin.post(&path, json!({"name": "first"})),
        admin.post(&path, json!({"name": "second"})),
        admin.post(&path, json!({"name": "first"})),
    );
    let answered = asked.elapsed();
    let mut created = 0;
    for r in [&a, &b, &again] {
        match r.status {
            201 => {
                created += 1;
                assert_eq!(r.body["status"]["state"], "installing", "{}", r.body);
                assert_eq!(r.body["desired_state"], "running", "{}", r.body);
            }
            409 => assert_eq!(r.code(), "name_taken", "{}", r.body),
            _ => panic!("create: {} {}", r.status, r.body),
        }
    }
    assert_eq!(created, 2, "{} {} {}", a.body, b.body, again.body);

    // The console shows it too (it reads the same API).
    let id = b.body["id"].as_str().unwrap().to_string();
    let page = admin.get(&format!("/teams/{team}/instances/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains("status-installing")
            && page.text.contains("Progress")
            && page.text.contains("[install]"),
        "{}",
        page.text
    );

    // npm's output is the progress, in the status and in the logs.
    let first = statuses_until_running(&admin, &team, "first", Duration::from_secs(900)).await;
    let installed = boot.elapsed();
    let progress: Vec<&str> = first
        .iter()
        .filter(|s| s["state"] == "installing")
        .filter_map(|s| s["reason"].as_str())
        .collect();
    assert!(
        progress.iter().any(|p| p.contains("npm http fetch")),
        "no npm progress in the status: {progress:?}"
    );
    let second = statuses_until_running(&admin, &team, "second", Duration::from_secs(120)).await;
    assert!(!second.is_empty());
    let logs = admin.get(&format!("{path}/first/logs?lines=1000")).await;
    assert_eq!(logs.status, 200, "{}", logs.body);

    // One npm install served both, and the cache it filled was the cold one.
    let runtime = s.data_dir.path().join("runtime");
    let entries: Vec<String> = std::fs::read_dir(&runtime)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries,
        vec![format!(
            "node-red-{}",
            redwall_runtime::DEFAULT_NODE_RED_VERSION
        )],
        "{entries:?}"
    );
    assert!(
        std::fs::read_dir(&cache).unwrap().next().is_some(),
        "npm used the cold cache"
    );

    // Both serve through the proxy.
    for name in ["first", "second"] {
        let r = on_host(&s, &admin, name).await.get("/editor/").await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
    eprintln!(
        "cold first run: creates answered in {answered:?}; Node-RED installed and the first instance running {installed:?} after the server started"
    );
    s.stop().await;
}

/// Issue 14 item 9: the data directory under a directory only root may pass
/// (here the test's 0700 temp dir, like `./data` started from /root): the
/// instances' own uids cannot reach their files. Redwall says so, in the
/// answer, the instance's status and `config check`, instead of leaving
/// the instance starting or crashing with Node's own words.
#[tokio::test]
async fn a_data_dir_the_instances_cannot_reach_is_explained() {
    if !redwall_server::instances::runner::running_as_root() {
        eprintln!("skipped: instances run as their own uids only when Redwall is root");
        return;
    }
    let s = instance_server_with(|c| {
        // A private directory, as `mktemp -d` makes one.
        std::fs::set_permissions(&c.data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        c.data_dir = c.data_dir.join("data");
    })
    .await;
    let private = s.data_dir.path().to_path_buf();
    let check = s.running.state.config.check();
    assert!(
        check
            .iter()
            .any(|p| p.message.contains("instances cannot start")
                && p.message.contains(&*private.to_string_lossy())),
        "{check:?}"
    );

    let admin = s.admin().await;
    let team = create_team(&admin, "T").await;
    let path = format!("/api/v1/teams/{team}/instances");
    let r = admin
        .post(&path, json!({"name": "kept", "start": false}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = admin.post(&format!("{path}/kept/start"), json!({})).await;
    assert_eq!(
        (r.status, r.code()),
        (503, "instances_unreachable"),
        "{}",
        r.body
    );
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&*private.to_string_lossy())
            && message.contains("0700")
            && message.contains("chmod o+x"),
        "{message}"
    );
    let r = admin.get(&format!("{path}/kept")).await;
    assert_eq!(r.body["status"]["state"], "failed", "{}", r.body);
    assert_eq!(r.body["status"]["reason"], message, "{}", r.body);

    // A new instance is refused the same way, and nothing is stored.
    let r = admin.post(&path, json!({"name": "plant"})).await;
    assert_eq!(
        (r.status, r.code()),
        (503, "instances_unreachable"),
        "{}",
        r.body
    );
    let list = admin.get(&path).await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(1), "{}", list.body);

    // Once the way is open, the same instance starts.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).unwrap();
    let r = admin.post(&format!("{path}/kept/start"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_running(&admin, &team, "kept").await;
    s.stop().await;
}

/// A flow that tries the host's PostgreSQL, the metadata address and the
/// outside world, and answers what it reached.
fn reach_flow(outside: &str) -> Value {
    let func = r#"
const p = Buffer.constructor('return process')();
const net = p.getBuiltinModule ? p.getBuiltinModule('net') : p.mainModule.require('net');
function greet(opts) {
    return new Promise(res => {
        let done = false, data = '';
        const s = net.connect(opts);
        const finish = r => { if (!done) { done = true; clearTimeout(t); s.destroy(); res(r); } };
        const t = setTimeout(() => finish('timeout'), 3000);
        s.once('connect', () => { if (opts.port === 5432) finish('connected'); });
        s.on('data', d => { data += d; if (data.includes('\n')) finish(data.trim()); });
        s.once('error', e => finish(e.code || String(e)));
    });
}
(async () => {
    msg.payload = {
        postgres: await greet({ host: '127.0.0.1', port: 5432 }),
        postgresSocket: await greet({ path: '/var/run/postgresql/.s.PGSQL.5432', port: 5432 }),
        metadata: await greet({ host: '169.254.169.254', port: 80 }),
        outside: await greet({ host: '__OUTSIDE__', port: 80 }),
    };
    node.send(msg);
})();
return null;
"#
    .replace("__OUTSIDE__", outside);
    json!([
        {"id": "t1", "type": "tab", "label": "T"},
        {"id": "h1", "type": "http in", "z": "t1", "url": "/reach", "method": "get", "upload": false, "swaggerDoc": "", "wires": [["f1"]]},
        {"id": "f1", "type": "function", "z": "t1", "func": func, "outputs": 1, "wires": [["r1"]]},
        {"id": "r1", "type": "http response", "z": "t1", "statusCode": "", "headers": {}, "wires": []}
    ])
}

/// By default a flow reaches the outside network and nothing of the hub's
/// host; an Owner (only) opens an exception, audited, and it applies to the
/// running instance at once.
#[tokio::test]
async fn only_an_owner_opens_the_network_and_only_what_the_rule_names() {
    let outside = redwall_runtime::testing::OutsideWorld::new().unwrap();
    let s = instance_server().await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let member = s.user(&admin, "martin").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &member, &team, "martin", "member").await;
    create_running(&member, &team, "net").await;
    let r = deploy(
        &s.token_client(&member, "full").await,
        "net",
        reach_flow(&outside.address.to_string()),
    )
    .await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text);
    let r = member
        .put(
            &format!("/api/v1/teams/{team}/instances/net/routes"),
            json!([{"path_prefix": "/reach", "policy": {"type": "public"}}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reach = || async {
        let mut r = member.get("/i/net/reach").await;
        for _ in 0..100 {
            if r.status != 404 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            r = member.get("/i/net/reach").await;
        }
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    };
    let greeting = redwall_runtime::testing::OUTSIDE_GREETING;
    let out = reach().await;
    assert_eq!(out["outside"], greeting, "{out}");
    for refused in ["postgres", "postgresSocket", "metadata"] {
        assert_ne!(out[refused], "connected", "{refused}: {out}");
        assert_ne!(out[refused], greeting, "{refused}: {out}");
    }

    let egress = format!("/api/v1/teams/{team}/instances/net/egress");
    let rule = json!([{"cidr": "169.254.169.254", "ports": "80"}]);
    let r = member.put(&egress, rule.clone()).await;
    assert_eq!(
        r.status, 403,
        "a Member cannot open the network: {}",
        r.body
    );
    for bad in [
        json!([{"cidr": "0.0.0.0/0"}]),
        json!([{"cidr": "::/0"}]),
        json!([{"cidr": "any"}]),
        json!([{"cidr": "169.254.169.254/16"}]),
        json!([{"cidr": "127.0.0.1", "ports": "5432"}]),
        json!([{"cidr": "10.0.0.0/8", "ports": "0"}]),
        json!([{"cidr": "10.0.0.0/8", "protocol": "icmp"}]),
        json!([{"cidr": "10.0.0.0/8", "allow": "all"}]),
    ] {
        let r = owner.put(&egress, bad.clone()).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
    }
    assert_eq!(owner.get(&egress).await.body, json!([]));
    assert_eq!(reach().await["metadata"], out["metadata"]);

    let r = owner.put(&egress, rule).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!([{"cidr": "169.254.169.254/32", "protocol": "tcp", "ports": "80"}])
    );
    assert_eq!(
        member.get(&egress).await.body,
        r.body,
        "members may read it"
    );
    let out = reach().await;
    assert_eq!(out["metadata"], greeting, "{out}");
    assert_ne!(out["postgres"], "connected", "{out}");

    let log = owner
        .get(&format!(
            "/api/v1/teams/{team}/audit?event=instance.egress_changed"
        ))
        .await;
    let entries = log.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", log.body);
    assert!(
        entries[0].to_string().contains("169.254.169.254/32"),
        "{}",
        entries[0]
    );

    // Withdrawn, it closes again at once.
    let r = owner.put(&egress, json!([])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(reach().await["metadata"], greeting);
}

/// A flow that talks to the team broker with the standard mqtt nodes and
/// the credentials Redwall gives each instance (`${REDWALL_MQTT_*}`; the
/// client id left for Node-RED to make up):
/// publishes `payload` to `plant/ping` every 200 ms (when given), keeps the
/// last message it received on `subscribe`, and serves it at `/last`.
fn mqtt_flow(payload: Option<&str>, subscribe: &str) -> Value {
    let mut flow = vec![
        json!({"id": "t1", "type": "tab", "label": "T"}),
        json!({"id": "b1", "type": "mqtt-broker", "name": "team",
               "broker": "${REDWALL_MQTT_URL}", "port": "", "clientid": "",
               "autoConnect": true, "usetls": false, "protocolVersion": "4", "keepalive": "60",
               "cleansession": true, "autoUnsubscribe": true,
               "credentials": {"user": "${REDWALL_MQTT_USERNAME}", "password": "${REDWALL_MQTT_PASSWORD}"}}),
        json!({"id": "in1", "type": "mqtt in", "z": "t1", "topic": subscribe, "qos": "1", "datatype": "utf8",
               "broker": "b1", "nl": false, "rap": true, "inputs": 0, "wires": [["keep"]]}),
        json!({"id": "keep", "type": "function", "z": "t1",
               "func": "flow.set('last', msg.topic + '=' + msg.payload); return null;", "outputs": 1, "wires": [[]]}),
        json!({"id": "h1", "type": "http in", "z": "t1", "url": "/last", "method": "get", "upload": false, "swaggerDoc": "", "wires": [["f1"]]}),
        json!({"id": "f1", "type": "function", "z": "t1",
               "func": "msg.payload = { last: flow.get('last') || null, leaked: env.get('REDWALL_EDITOR_SECRET') || null }; return msg;",
               "outputs": 1, "wires": [["r1"]]}),
        json!({"id": "r1", "type": "http response", "z": "t1", "statusCode": "", "headers": {}, "wires": []}),
    ];
    if let Some(payload) = payload {
        flow.push(json!({"id": "i1", "type": "inject", "z": "t1", "repeat": "0.2", "once": true, "onceDelay": "0.5",
                         "topic": "", "payload": payload, "payloadType": "str", "wires": [["out1"]]}));
        flow.push(
            json!({"id": "out1", "type": "mqtt out", "z": "t1", "topic": "plant/ping", "qos": "1",
                         "retain": "false", "broker": "b1", "wires": []}),
        );
    }
    Value::Array(flow)
}

/// Two instances of a team exchange messages through the embedded broker
/// with the standard mqtt nodes and `${REDWALL_MQTT_*}` credentials; an
/// instance of another team subscribed to `#` sees only its own team's.
#[tokio::test]
async fn instances_talk_through_the_team_broker_and_never_across_teams() {
    let s = instance_server().await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let stranger = s.user(&admin, "sam").await;
    let team = create_team(&owner, "Plant").await;
    let other = create_team(&stranger, "Other").await;
    create_running(&owner, &team, "sender").await;
    create_running(&owner, &team, "receiver").await;
    create_running(&stranger, &other, "spy").await;
    let owner_ci = s.token_client(&owner, "full").await;
    let stranger_ci = s.token_client(&stranger, "full").await;
    for (ci, name, flow) in [
        (
            &owner_ci,
            "sender",
            mqtt_flow(Some("from-sender"), "unused/none"),
        ),
        (&owner_ci, "receiver", mqtt_flow(None, "plant/#")),
        (&stranger_ci, "spy", mqtt_flow(Some("from-spy"), "#")),
    ] {
        let r = deploy(ci, name, flow).await;
        assert!(r.status == 200 || r.status == 204, "{name}: {}", r.text);
    }
    for (c, team, name) in [(&owner, &team, "receiver"), (&stranger, &other, "spy")] {
        let r = c
            .put(
                &format!("/api/v1/teams/{team}/instances/{name}/routes"),
                json!([{"path_prefix": "/last", "policy": {"type": "public"}}]),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let last = |c: &Client, name: &'static str| {
        let c = c.clone();
        async move {
            for _ in 0..600 {
                let r = c.get(&format!("/i/{name}/last")).await;
                if r.status == 200 && !r.body["last"].is_null() {
                    return r.body;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{name} received nothing in 60 s");
        }
    };
    let got = tokio::time::timeout(Duration::from_secs(30), last(&owner, "receiver")).await;
    let Ok(got) = got else {
        let logs = owner
            .get(&format!("/api/v1/teams/{team}/instances/sender/logs"))
            .await;
        let refused = admin.get("/api/v1/audit?event=broker.*").await;
        panic!(
            "nothing arrived; sender's log: {}\nbroker audit: {}",
            logs.text, refused.text
        );
    };
    assert_eq!(got["last"], "plant/ping=from-sender", "{got}");
    assert_eq!(got["leaked"], Value::Null);
    // The spy hears its own team's messages only, however long it listens.
    let spied = last(&stranger, "spy").await;
    assert_eq!(spied["last"], "plant/ping=from-spy", "{spied}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(last(&stranger, "spy").await["last"], "plant/ping=from-spy");
    assert_eq!(
        last(&owner, "receiver").await["last"],
        "plant/ping=from-sender"
    );
    s.stop().await;
}

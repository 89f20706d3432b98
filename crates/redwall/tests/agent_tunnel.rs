//! An instance whose Node-RED runs at a site that only dials out, reached
//! through the hub as users reach any instance: the real `redwall serve` on
//! its defaults (HTTPS, self-signed), the real `redwall-agent` with its own
//! Node-RED from npm, and requests to `https://{instance}.localhost` that
//! the hub's proxy judges (the editor by team role, the endpoints by the
//! instance's route rules) and carries through the agent's one connection.
//! The site's Node-RED then takes only the hub's tokens; when the agent's
//! link drops its sockets close and requests get a clear 502, and when it
//! comes back everything works again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod agent_host;
mod serve_kit;

use agent_host::*;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use serve_kit::*;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

/// `/hello` answers what reached Node-RED (its headers); `/ws/echo` echoes.
fn site_flows() -> Value {
    json!([
        {"id": "t1", "type": "tab", "label": "Site"},
        {"id": "h1", "type": "http in", "z": "t1", "url": "/hello", "method": "get",
         "upload": false, "swaggerDoc": "", "wires": [["f1"]]},
        {"id": "f1", "type": "function", "z": "t1", "name": "greet",
         "func": "msg.payload = { greeting: 'hello from the site', headers: msg.req.headers };\nreturn msg;",
         "outputs": 1, "wires": [["r1"]]},
        {"id": "r1", "type": "http response", "z": "t1", "statusCode": "", "headers": {},
         "wires": []},
        {"id": "wl", "type": "websocket-listener", "path": "/ws/echo", "wholemsg": "false"},
        {"id": "wi", "type": "websocket in", "z": "t1", "server": "wl", "client": "", "wires": [["wo"]]},
        {"id": "wo", "type": "websocket out", "z": "t1", "server": "wl", "client": "", "wires": []}
    ])
}

/// A client for `https://{name}.localhost:{port}` (the hub's self-signed
/// certificate; HTTP/1.1, so a WebSocket can be upgraded on it).
fn on_host(name: &str, port: u16) -> (reqwest::Client, String) {
    let host = format!("{name}.localhost");
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .resolve(&host, ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    (client, format!("https://{host}:{port}"))
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut req = client.get(url).header("accept", "application/json");
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Waits until GET `url` answers `want` (the agent restarts Node-RED as the
/// hub's instance, then runs the snapshot).
async fn wait_status(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    want: u16,
    host: &AgentHost,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = get(client, url, bearer, &[]).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} answered {status} {body}, not {want}; the agent's log:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A WebSocket to `path` on the instance's host, through the hub.
async fn open_socket(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    bearer: &str,
) -> Result<tokio_tungstenite::WebSocketStream<reqwest::Upgraded>, String> {
    let resp = client
        .get(format!("{base}{path}"))
        .header("authorization", format!("Bearer {bearer}"))
        .header("origin", base)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != 101 {
        let status = resp.status();
        return Err(format!(
            "{status}: {}",
            resp.text().await.unwrap_or_default()
        ));
    }
    let upgraded = resp.upgrade().await.map_err(|e| e.to_string())?;
    Ok(tokio_tungstenite::WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await)
}

async fn echo(ws: &mut tokio_tungstenite::WebSocketStream<reqwest::Upgraded>, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an echo within 10 s")
        .expect("the socket is open")
        .unwrap();
    assert_eq!(answer.into_text().unwrap().as_str(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sites_editor_and_endpoints_are_reached_through_the_hub_only() {
    let port = redwall_runtime::testing::free_port();
    let dir = DataDir::for_agents(&format!("127.0.0.1:{port}"), None, 1);
    let s = dir.serve();
    let (admin, team, pat) = bootstrap(&s).await;

    let bundle = provision(&s, &team, &pat, &[]);
    let host = AgentHost::new(None);
    let node_red_port = host.enrol_with_node_red(&bundle, "site-1");
    let mut agent = host.run();
    wait_online(&admin, &team, "site-1", true, Duration::from_secs(30)).await;

    // The site's Node-RED becomes the hub's instance `plant-a`.
    let out = DataDir::without_instances()
        .command()
        .args(["instance", "create", "plant-a", "--agent", "site-1"])
        .args(["--insecure-skip-verify", "--url", &s.base, "--team", &team])
        .env("REDWALL_TOKEN", &pat)
        .output()
        .unwrap();
    let text = ok(out);
    assert!(text.contains("agent") && text.contains("site-1"), "{text}");
    // A second instance on the same agent, and starting one, are refused.
    let (status, v) = admin
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/teams/{team}/agents/site-1/instance"),
            Some(json!({"name": "plant-b"})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("agent_runs_instance")),
        "{v}"
    );
    let (status, v) = admin
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/teams/{team}/instances/plant-a/stop"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("instance_on_agent")),
        "{v}"
    );

    let (client, base) = on_host("plant-a", port);
    // The editor through the tunnel, by team role; its admin API too.
    let editor = wait_status(&client, &format!("{base}/editor/"), Some(&pat), 200, &host).await;
    assert!(editor.contains("Node-RED"), "{editor}");
    let (status, _) = get(&client, &format!("{base}/editor/flows"), None, &[]).await;
    assert_eq!(status, 401, "no credential, no editor");

    // Flows deployed through the editor's own API, through the hub.
    let resp = client
        .post(format!("{base}/editor/flows"))
        .header("authorization", format!("Bearer {pat}"))
        .header("origin", &base)
        .header("node-red-deployment-type", "full")
        .json(&site_flows())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert!(
        status == 200 || status == 204,
        "{status} {}",
        resp.text().await.unwrap()
    );

    // Endpoints: closed until a route rule opens them, then the request
    // reaches the site without the caller's credentials.
    let (status, _) = get(&client, &format!("{base}/hello"), None, &[]).await;
    assert_eq!(status, 403, "no rule: the hub refuses before the tunnel");
    let r = admin
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/teams/{team}/instances/plant-a/routes"),
            Some(
                json!([{"path_prefix": "/hello", "policy": {"type": "public"}},
                        {"path_prefix": "/ws", "policy": {"type": "api_key"}}]),
            ),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let body = wait_status(&client, &format!("{base}/hello"), None, 200, &host).await;
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["greeting"], "hello from the site");
    let (_, body) = get(
        &client,
        &format!("{base}/hello"),
        Some(&pat),
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("cookie", "__Host-redwall_session=stolen"),
        ],
    )
    .await;
    let seen: Value = serde_json::from_str(&body).unwrap();
    let headers = &seen["headers"];
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert!(
        !headers["cookie"].as_str().unwrap_or("").contains("redwall"),
        "{headers}"
    );
    assert!(
        headers.get("x-redwall-endpoint-token").is_none(),
        "settings.js strips the hub's token: {headers}"
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{headers}");

    // The site's Node-RED no longer takes tokens made with the agent's own
    // keys: only the hub's, for this instance.
    let own = redwall_agent::node_red::NodeRedSecrets::load_or_create(&host.state_dir()).unwrap();
    let token = redwall_runtime::mint_endpoint_token(
        &redwall_crypto::Secret::new(own.endpoint.clone()),
        redwall_agent::node_red::INSTANCE_ID,
        Some("test"),
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
            + 600,
    );
    let direct = redwall_runtime::request(
        ([127, 0, 0, 1], node_red_port).into(),
        "GET",
        "/hello",
        &[(redwall_runtime::ENDPOINT_TOKEN_HEADER, token.as_str())],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_ne!(
        direct.status, 200,
        "the agent's own keys still open the site"
    );

    // A WebSocket of the flows, through the hub and the tunnel, for a
    // machine holding the instance's API key (the hub checks it).
    let key = admin
        .post(
            &format!("/api/v1/teams/{team}/instances/plant-a/keys"),
            json!({"name": "line 4"}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        open_socket(&client, &base, "/ws/echo", &pat).await.is_err(),
        "a personal token is not the instance's key"
    );
    let mut ws = None;
    let mut why = String::new();
    for _ in 0..50 {
        match open_socket(&client, &base, "/ws/echo", &key).await {
            Ok(socket) => {
                ws = Some(socket);
                break;
            }
            Err(e) => {
                why = e;
                tokio::time::sleep(Duration::from_millis(200)).await
            }
        }
    }
    let mut ws = ws.unwrap_or_else(|| panic!("no socket through the tunnel: {why}"));
    echo(&mut ws, "ping").await;

    // The link drops: the socket closes, requests get a clear answer.
    let _ = agent.kill();
    let _ = agent.wait();
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the socket stays open after its tunnel dropped"
    );
    let body = wait_status(&client, &format!("{base}/hello"), None, 502, &host).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "agent_offline", "{v}");
    let (status, v) = admin
        .get(&format!("/api/v1/teams/{team}/instances/plant-a"))
        .await;
    assert_eq!(status, 200);
    wait_online(&admin, &team, "site-1", false, Duration::from_secs(30)).await;
    let (_, v2) = admin
        .get(&format!("/api/v1/teams/{team}/instances/plant-a"))
        .await;
    assert_eq!(v2["status"]["state"], "offline", "{v} {v2}");

    // It comes back: the same instance answers again, sockets open again.
    let mut agent = host.run_appending();
    let body = wait_status(&client, &format!("{base}/hello"), None, 200, &host).await;
    assert!(body.contains("hello from the site"), "{body}");
    let mut ws = open_socket(&client, &base, "/ws/echo", &key)
        .await
        .expect("a socket after the agent came back");
    echo(&mut ws, "again").await;
    assert!(
        host.log()
            .matches("Node-RED is now the hub's instance")
            .count()
            == 1,
        "the agent restarted Node-RED again for the same instance:\n{}",
        host.log()
    );

    // Deleting the instance gives the site back its own keys; the agent
    // can then be deleted too (not before).
    let (status, v) = admin
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/teams/{team}/agents/site-1"),
            None,
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("agent_runs_instance")),
        "{v}"
    );
    let (status, v) = admin
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/teams/{team}/instances/plant-a"),
            Some(json!({"confirm_name": "plant-a"})),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {v}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !host.log().contains("Node-RED is no hub instance any more") {
        assert!(Instant::now() < deadline, "{}", host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Two `redwall serve` replicas on one PostgreSQL: the agent is connected
/// to the first, and its instance is reached through the second, which
/// relays to the first (pinned to its certificate, with a relay token only
/// replicas can make). A forged relay request is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_an_agent_is_reached_through_the_other_replica() {
    let Some(db) = redwall_store::testing::TestDatabase::postgres()
        .await
        .unwrap()
    else {
        return;
    };
    let first_port = redwall_runtime::testing::free_port();
    let first_dir = DataDir::for_agents(&format!("127.0.0.1:{first_port}"), Some(&db.url), 1);
    let first = first_dir.serve();
    let (_admin, team, pat) = bootstrap(&first).await;
    let second_port = redwall_runtime::testing::free_port();
    let second_dir = DataDir::for_agents(&format!("127.0.0.1:{second_port}"), Some(&db.url), 1);
    std::fs::copy(
        first_dir.path().join("master.key"),
        second_dir.path().join("master.key"),
    )
    .unwrap();
    let second = second_dir.serve();
    let via_second = Api::bearer(&second.base, &pat);

    let bundle = provision(&first, &team, &pat, &[]);
    let host = AgentHost::new(None);
    host.enrol_with_node_red(&bundle, "site-1");
    let mut agent = host.run();
    wait_online(&via_second, &team, "site-1", true, Duration::from_secs(30)).await;

    // Made through the second replica: the first, holding the connection,
    // hears of it through PostgreSQL and tells the agent.
    let v = via_second
        .post(
            &format!("/api/v1/teams/{team}/agents/site-1/instance"),
            json!({"name": "plant-r"}),
        )
        .await;
    assert_eq!(v["agent"], "site-1", "{v}");
    let (client, base) = on_host("plant-r", second_port);
    let editor = wait_status(&client, &format!("{base}/editor/"), Some(&pat), 200, &host).await;
    assert!(editor.contains("Node-RED"), "{editor}");
    let resp = client
        .post(format!("{base}/editor/flows"))
        .header("authorization", format!("Bearer {pat}"))
        .header("origin", &base)
        .header("node-red-deployment-type", "full")
        .json(&site_flows())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert!(status == 200 || status == 204, "{status}");
    let (status, body) = via_second
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/teams/{team}/instances/plant-r/routes"),
            Some(json!([{"path_prefix": "/hello", "policy": {"type": "public"}}])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let body = wait_status(&client, &format!("{base}/hello"), None, 200, &host).await;
    assert!(body.contains("hello from the site"), "{body}");
    // And through the first, which holds the tunnel itself.
    let (client_1, base_1) = on_host("plant-r", first_port);
    let body = wait_status(&client_1, &format!("{base_1}/hello"), None, 200, &host).await;
    assert!(body.contains("hello from the site"), "{body}");

    // Nobody else opens a stream of the tunnel: a forged or replayed-looking
    // relay request gets the answer for a path that does not exist.
    let agent_id = agent_state(&via_second, &team, "site-1").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for token in [
        format!("x.{now}.{}", "00".repeat(32)),
        "garbage".to_string(),
        String::new(),
    ] {
        let resp = client_1
            .get(format!("{}/api/v1/agent/relay/{agent_id}", first.base))
            .header("connection", "upgrade")
            .header("upgrade", "redwall-relay")
            .header("x-redwall-relay", token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

/// The flows' endpoints served on the site's own network by the agent
/// (`local-endpoints.toml`), under the instance's route rules and API keys
/// as the hub sent them; still while the hub is down, and after the agent
/// restarted without it. The editor is never served there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sites_endpoints_are_served_at_the_site_also_without_the_hub() {
    let port = redwall_runtime::testing::free_port();
    let dir = DataDir::for_agents(&format!("127.0.0.1:{port}"), None, 1);
    let s = dir.serve();
    let (admin, team, pat) = bootstrap(&s).await;
    let bundle = provision(&s, &team, &pat, &[]);
    let host = AgentHost::new(None);
    host.enrol_with_node_red(&bundle, "site-1");
    let local_port = redwall_runtime::testing::free_port();
    std::fs::write(
        host.state_dir().join("local-endpoints.toml"),
        format!("listen = \"127.0.0.1:{local_port}\"\n"),
    )
    .unwrap();
    let mut agent = host.run();
    wait_online(&admin, &team, "site-1", true, Duration::from_secs(30)).await;
    let local = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let at_site = format!("https://127.0.0.1:{local_port}");
    // Not an instance of the hub yet: the site serves nothing.
    let (status, _) = get(&local, &format!("{at_site}/hello"), None, &[]).await;
    assert_eq!(status, 503);

    admin
        .post(
            &format!("/api/v1/teams/{team}/agents/site-1/instance"),
            json!({"name": "plant-l"}),
        )
        .await;
    let (client, base) = on_host("plant-l", port);
    wait_status(&client, &format!("{base}/editor/"), Some(&pat), 200, &host).await;
    let resp = client
        .post(format!("{base}/editor/flows"))
        .header("authorization", format!("Bearer {pat}"))
        .header("origin", &base)
        .header("node-red-deployment-type", "full")
        .json(&site_flows())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let key = admin
        .post(
            &format!("/api/v1/teams/{team}/instances/plant-l/keys"),
            json!({"name": "plc"}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = admin
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/teams/{team}/instances/plant-l/routes"),
            Some(json!([{"path_prefix": "/hello", "policy": {"type": "api_key"}}])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The rules reach the site at once: a key is needed there too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = get(&local, &format!("{at_site}/hello"), None, &[]).await;
        if status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "{status}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = get(&local, &format!("{at_site}/hello"), Some(&key), &[]).await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert!(seen["headers"].get("authorization").is_none(), "{body}");
    let (status, _) = get(&local, &format!("{at_site}/hello"), Some("rwk_wrong"), &[]).await;
    assert_eq!(status, 401);
    let (status, _) = get(&local, &format!("{at_site}/editor/"), Some(&pat), &[]).await;
    assert_eq!(status, 404, "the editor is only reached through the hub");

    // The hub goes away; the plant floor keeps its endpoint, also after
    // the agent restarts without the hub.
    drop(s);
    let (status, _) = get(&local, &format!("{at_site}/hello"), Some(&key), &[]).await;
    assert_eq!(status, 200);
    let _ = agent.kill();
    let _ = agent.wait();
    let mut agent = host.run_appending();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = match local
            .get(format!("{at_site}/hello"))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{status}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

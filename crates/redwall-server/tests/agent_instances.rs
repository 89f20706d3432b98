//! Instances whose Node-RED runs on a remote agent, with a
//! protocol-speaking agent in the test that answers its tunnel's streams
//! with a small HTTP server (the real agent and Node-RED are tested end to
//! end in the `redwall` crate's `agent_tunnel.rs`): who may make one, what
//! the hub refuses to do to it, the keys the agent gets (sealed for it
//! alone), and that a request reaches the site only after the hub's checks,
//! with the hub's token for that instance and without the caller's
//! credentials.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_kit;
mod common;

use agent_kit::*;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::*;
use futures::{SinkExt as _, StreamExt as _};
use redwall_crypto::signing::AgentKey;
use redwall_policy::agent_protocol::HostedKeys;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

on_both_backends!(instances_on_agents);

/// An enrolled agent of the test: (id, key).
async fn enrolled(s: &TestServer, owner: &Client, team: &str, name: &str) -> (String, AgentKey) {
    let token = token(owner, team).await;
    let key = AgentKey::generate();
    let r = enrol(s, &token, name, &key).await;
    assert_eq!(r.status, 201, "{}", r.body);
    (r.body["agent_id"].as_str().unwrap().to_string(), key)
}

/// A site: answers every tunnelled request with what reached it (method,
/// path, headers) as JSON, and hands the test the hub's text messages.
struct Site {
    messages: mpsc::UnboundedReceiver<Value>,
    link: tokio::task::JoinHandle<()>,
}

fn answer_with_what_arrived(stream: redwall_tunnel::TunnelStream) {
    tokio::spawn(async move {
        let service =
            hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let headers: serde_json::Map<String, Value> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
                    .collect();
                let body = json!({
                    "method": req.method().as_str(),
                    "path": req.uri().to_string(),
                    "headers": headers,
                });
                Ok::<_, std::convert::Infallible>(
                    hyper::Response::builder()
                        .header("content-type", "application/json")
                        .header("set-cookie", "__Host-redwall_session=planted; Path=/")
                        .body(http_body_util::Full::new(bytes::Bytes::from(
                            body.to_string(),
                        )))
                        .unwrap(),
                )
            });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    });
}

/// Carries the connection: binary frames to and from the tunnel, text
/// messages to the test.
fn run_site(ws: Ws) -> Site {
    let (tx, messages) = mpsc::unbounded_channel();
    let link = tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let mut tunnel = redwall_tunnel::agent_end(answer_with_what_arrived);
        loop {
            tokio::select! {
                frame = tunnel.next_frame() => match frame {
                    Some(f) => { if sink.send(Message::Binary(f.into())).await.is_err() { return } }
                    None => return,
                },
                frame = stream.next() => match frame {
                    Some(Ok(Message::Binary(b))) => { if tunnel.deliver(&b).await.is_err() { return } }
                    Some(Ok(Message::Text(t))) => { let _ = tx.send(serde_json::from_str(&t).unwrap()); }
                    Some(Ok(_)) => {}
                    _ => return,
                },
            }
        }
    });
    Site { messages, link }
}

impl Site {
    async fn next(&mut self, kind: &str) -> Value {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.messages.recv())
                .await
                .unwrap_or_else(|_| panic!("no {kind} message within 10 s"))
                .expect("the connection is open");
            if m["type"] == kind {
                return m;
            }
        }
    }
}

/// Checks a token the way the site's settings.js does: the HMAC under
/// `key`; its claims.
fn claims(token: &str, key: &str) -> Value {
    let (signed, mac) = token.rsplit_once('.').unwrap();
    let expected = redwall_crypto::mac::hmac_sha256(key.as_bytes(), &[signed.as_bytes()]);
    assert_eq!(
        URL_SAFE_NO_PAD.decode(mac).unwrap(),
        expected,
        "the token's MAC"
    );
    let payload = signed.strip_prefix("v1.").unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn instances_on_agents(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olga").await;
    let member = s.user(&admin, "mona").await;
    let viewer = s.user(&admin, "vic").await;
    let stranger = s.user(&admin, "sam").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &member, &team, "mona", "member").await;
    join_team(&owner, &viewer, &team, "vic", "viewer").await;
    let other_team = create_team(&stranger, "Other").await;
    let (agent_id, key) = enrolled(s, &owner, &team, "site-1").await;
    let _ = enrolled(s, &stranger, &other_team, "theirs").await;
    let instances = format!("/api/v1/teams/{team}/instances");
    let on = |agent: &str| format!("/api/v1/teams/{team}/agents/{agent}/instance");

    // Only an Owner opens a site's Node-RED to the team; what is wrong is
    // refused before anything is stored.
    let r = member.post(&on("site-1"), json!({"name": "plant-a"})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    for (agent, body, status, code) in [
        ("theirs", json!({"name": "plant-a"}), 404, "not_found"),
        ("nobody", json!({"name": "plant-a"}), 404, "not_found"),
        (
            "site-1",
            json!({"name": "plant-a", "start": true}),
            422,
            "invalid_body",
        ),
        ("site-1", json!({"name": "A!"}), 422, "invalid_name"),
    ] {
        let r = owner.post(&on(agent), body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{agent} {body}: {}",
            r.body
        );
    }
    let r = owner.post(&on("site-1"), json!({"name": "plant-a"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["agent"], "site-1");
    assert_eq!(r.body["status"]["state"], "offline");
    let listed = owner.get(&instances).await;
    assert_eq!(listed.body[0]["agent"], "site-1", "{}", listed.body);
    let instance_id = r.body["id"].as_str().unwrap().to_string();
    let r = owner.post(&on("site-1"), json!({"name": "plant-b"})).await;
    assert_eq!(
        (r.status, r.code()),
        (409, "agent_runs_instance"),
        "{}",
        r.body
    );
    let events = audit_events(&admin, "instance.created").await;
    assert!(
        events
            .iter()
            .any(|e| e["details"]["agent"] == "site-1" && e["details"]["name"] == "plant-a"),
        "{events:?}"
    );

    // What only an instance of this hub can do is refused, saying why.
    let one = format!("{instances}/plant-a");
    for (path, body) in [
        (format!("{one}/start"), json!({})),
        (format!("{one}/restart"), json!({})),
        (format!("{one}/snapshots"), json!({"note": "x"})),
    ] {
        let r = owner.post(&path, body).await;
        assert_eq!(
            (r.status, r.code()),
            (409, "instance_on_agent"),
            "{path}: {}",
            r.body
        );
    }
    let r = owner.put(&format!("{one}/env"), json!([])).await;
    assert_eq!(
        (r.status, r.code()),
        (409, "instance_on_agent"),
        "{}",
        r.body
    );
    let r = owner.put(&format!("{one}/egress"), json!([])).await;
    assert_eq!(
        (r.status, r.code()),
        (409, "instance_on_agent"),
        "{}",
        r.body
    );
    // Deleting the agent that runs it is refused.
    let r = owner
        .delete(&format!("/api/v1/teams/{team}/agents/site-1"))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, "agent_runs_instance"),
        "{}",
        r.body
    );

    // Before the agent connects, its instance answers 502 with the reason.
    let owner_i = on_host(s, &owner, "plant-a").await;
    let r = owner_i.get("/editor/").await;
    assert_eq!((r.status, r.code()), (502, "agent_offline"), "{}", r.text);

    // It connects: the hub tells it which instance it is, with keys only
    // its own key opens, naming that instance.
    let ws = connect(s, &agent_id, &key).await;
    let mut site = run_site(ws);
    let host = site.next("host").await;
    assert_eq!(host["instance"]["id"], instance_id.as_str(), "{host}");
    assert_eq!(host["instance"]["name"], "plant-a");
    let sealed = STANDARD
        .decode(host["instance"]["keys"].as_str().unwrap())
        .unwrap();
    let opened = box_key(&key).open(&sealed).expect("sealed for this agent");
    let keys: HostedKeys = serde_json::from_slice(&opened).unwrap();
    assert_eq!(keys.instance_id, instance_id);
    assert!(
        redwall_crypto::agent_box::AgentBoxKey::generate()
            .open(&sealed)
            .is_err(),
        "another key opens the instance's keys"
    );

    // The editor: by team role, through the tunnel, with the hub's token
    // for this instance and this user; the session cookie never arrives.
    let r = owner_i.get("/editor/settings").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen: Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(seen["path"], "/editor/settings");
    let headers = &seen["headers"];
    let c = claims(
        headers["x-redwall-editor-token"].as_str().unwrap(),
        &keys.editor,
    );
    assert_eq!(
        (c["aud"].as_str(), c["sub"].as_str(), c["perm"].as_str()),
        (Some(instance_id.as_str()), Some("olga"), Some("*")),
        "{c}"
    );
    assert!(
        !headers.to_string().contains("redwall_session"),
        "{headers}"
    );
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert!(
        r.headers.get("set-cookie").is_none(),
        "the site may not set the hub's cookie: {:?}",
        r.headers
    );
    let mut viewer_i = on_host(s, &viewer, "plant-a").await;
    viewer_i.headers.push((
        "origin",
        format!("http://plant-a.localhost:{}", s.running.addr.port()),
    ));
    let r = viewer_i.get("/editor/flows").await;
    let seen: Value = serde_json::from_str(&r.text).unwrap();
    let c = claims(
        seen["headers"]["x-redwall-editor-token"].as_str().unwrap(),
        &keys.editor,
    );
    assert_eq!(c["perm"], "read", "{c}");
    let r = viewer_i.post("/editor/flows", json!([])).await;
    assert_eq!(
        (r.status, r.code()),
        (403, "editor_read_only"),
        "{}",
        r.text
    );
    assert!(try_on_host(s, &stranger, "plant-a").await.is_none());

    // Endpoints: the instance's route rules decide before the tunnel.
    let mut anonymous = s.anonymous();
    anonymous.headers.push((
        "host",
        format!("plant-a.localhost:{}", s.running.addr.port()),
    ));
    let r = anonymous.get("/hello").await;
    assert_eq!(r.status, 403, "no rule, no entry: {}", r.text);
    let r = owner
        .put(
            &format!("{one}/routes"),
            json!([{"path_prefix": "/hello", "policy": {"type": "public"}}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = anonymous.get("/hello?x=1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen: Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(seen["path"], "/hello?x=1");
    let c = claims(
        seen["headers"]["x-redwall-endpoint-token"]
            .as_str()
            .unwrap(),
        &keys.endpoint,
    );
    assert_eq!(c["aud"], instance_id.as_str(), "{c}");

    // The link drops: requests get the clear 502 again, at once.
    site.link.abort();
    let _ = site.link.await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = anonymous.get("/hello").await;
        if r.status == 502 {
            assert_eq!(r.code(), "agent_offline", "{}", r.text);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} {}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Deleting the instance tells a connected agent it runs none.
    let ws = connect(s, &agent_id, &key).await;
    let mut site = run_site(ws);
    assert_eq!(
        site.next("host").await["instance"]["id"],
        instance_id.as_str()
    );
    let r = owner
        .delete_with(&one, json!({"confirm_name": "plant-a"}))
        .await;
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.body);
    assert!(site.next("host").await["instance"].is_null());
    let r = owner
        .delete(&format!("/api/v1/teams/{team}/agents/site-1"))
        .await;
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.body);
    site.link.abort();
}

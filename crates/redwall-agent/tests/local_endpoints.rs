#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The agent's local endpoints, end to end: a plant-floor client (reqwest,
//! over TLS with the agent's self-signed certificate) reaches a stand-in
//! for Node-RED that, like the generated settings.js, answers nothing
//! without a valid endpoint token, and echoes what it received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use redwall_agent::local_endpoints::{LocalEndpoints, LocalEndpointsConfig, SiteAccess};
use redwall_crypto::mac::hmac_sha256;
use redwall_crypto::Secret;
use redwall_policy::agent_protocol::HostedApiKey;
use redwall_policy::permission::TeamRole;
use redwall_policy::route_policy::{RoutePolicy, RouteRule};
use redwall_runtime::ENDPOINT_TOKEN_HEADER;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

const INSTANCE: &str = "inst-plant-1";
const MAX_BODY: u64 = 64 * 1024;

fn endpoint_key() -> String {
    "endpoint-key-of-the-instance-0123456789abcdef".to_owned()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn key(c: char) -> String {
    format!("rwk_{}", c.to_string().repeat(43))
}

fn hosted_key(id: &str, k: &str, prefix: Option<&str>, expires_at: Option<i64>) -> HostedApiKey {
    HostedApiKey {
        id: id.into(),
        sha256: hex::encode(Sha256::digest(k.as_bytes())),
        path_prefix: prefix.map(Into::into),
        expires_at,
    }
}

fn rule(prefix: &str, methods: &[&str], policy: RoutePolicy) -> RouteRule {
    RouteRule {
        path_prefix: prefix.into(),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        policy,
        client_ranges: vec![],
    }
}

fn access(rules: Vec<RouteRule>) -> Arc<SiteAccess> {
    Arc::new(
        SiteAccess::new(
            INSTANCE.into(),
            rules,
            vec![
                hosted_key("k1", &key('a'), None, None),
                hosted_key("k2", &key('b'), Some("/api/line1"), None),
                hosted_key("k3", &key('c'), None, Some(now() - 10)),
            ],
            Secret::new(endpoint_key()),
        )
        .unwrap(),
    )
}

fn plant_rules() -> Vec<RouteRule> {
    vec![
        rule("/sensors", &["GET"], RoutePolicy::Public),
        rule("/upload", &["POST"], RoutePolicy::Public),
        rule("/ws", &[], RoutePolicy::Public),
        rule("/api", &[], RoutePolicy::ApiKey),
        rule(
            "/dash",
            &[],
            RoutePolicy::Session {
                min_role: TeamRole::Viewer,
            },
        ),
    ]
}

// ---- the stand-in for Node-RED -------------------------------------------

/// The endpoint token's claims, when its HMAC is right for the key, it is
/// for this instance, an endpoint token, and not expired (as settings.js
/// checks it).
fn verify_token(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (Some("v1"), Some(payload), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let expected = hmac_sha256(
        endpoint_key().as_bytes(),
        &[format!("v1.{payload}").as_bytes()],
    );
    if URL_SAFE_NO_PAD.decode(mac).ok()? != expected {
        return None;
    }
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let exp = claims["exp"].as_i64()?;
    (claims["k"] == "endpoint" && claims["aud"] == INSTANCE && exp > now() && exp <= now() + 301)
        .then_some(claims)
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

async fn node_red(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let claims = req
        .headers()
        .get(ENDPOINT_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(verify_token);
    let Some(claims) = claims else {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"stand_in": "no valid token"}),
        );
    };
    if req.uri().path() == "/ws" {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        let mut r = reply(StatusCode::SWITCHING_PROTOCOLS, json!(null));
        *r.body_mut() = Full::new(Bytes::new());
        r.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        return r;
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let method = req.method().to_string();
    let path_and_query = req.uri().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut r = reply(
        StatusCode::OK,
        json!({
            "method": method,
            "uri": path_and_query,
            "sub": claims["sub"],
            "headers": headers,
            "body_len": body.len(),
        }),
    );
    for c in [
        "redwall_session=planted; Path=/",
        "__Host-redwall_pass=planted; Secure; Path=/",
        "theme=dark; Path=/",
    ] {
        r.headers_mut().append("set-cookie", c.parse().unwrap());
    }
    r
}

async fn start_node_red() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(tcp),
                        hyper::service::service_fn(|r| async {
                            Ok::<_, std::convert::Infallible>(node_red(r).await)
                        }),
                    )
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

// ---- the site ------------------------------------------------------------

struct Site {
    base: String,
    addr: SocketAddr,
    cert_sha256: Option<String>,
    access: watch::Sender<Option<Arc<SiteAccess>>>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Site {
    async fn start(initial: Option<Arc<SiteAccess>>) -> Site {
        let node_red = start_node_red().await;
        Self::start_with(initial, node_red, false).await
    }

    async fn start_with(
        initial: Option<Arc<SiteAccess>>,
        node_red: SocketAddr,
        plain_http: bool,
    ) -> Site {
        redwall_agent::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = watch::channel(initial);
        let mut config = LocalEndpointsConfig::new("127.0.0.1:0".parse().unwrap());
        config.max_body_bytes = MAX_BODY;
        config.plain_http = plain_http;
        let endpoints = LocalEndpoints::bind(&config, dir.path(), node_red, rx)
            .await
            .unwrap();
        let addr = endpoints.local_addr().unwrap();
        let cert_sha256 = endpoints.cert_sha256().map(str::to_owned);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(endpoints.run(async {
            let _ = stopped.await;
        }));
        let scheme = if plain_http { "http" } else { "https" };
        Site {
            base: format!("{scheme}://127.0.0.1:{}", addr.port()),
            addr,
            cert_sha256,
            access: tx,
            client: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .http1_only()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            _dir: dir,
            _stop: stop,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }
}

/// The status and, for our own answers, the JSON error's code.
async fn status_and_code(r: reqwest::RequestBuilder) -> (u16, String) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, code)
}

fn header<'v>(echo: &'v Value, name: &str) -> Vec<&'v str> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

// ---- the stories -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_public_endpoint_passes_with_a_token_and_the_agents_own_forwarding_headers() {
    let site = Site::start(Some(access(plant_rules()))).await;
    let r = site
        .get("/sensors/line1?unit=c")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-redwall-user", "admin")
        .header("X_Redwall_User", "admin")
        .header(ENDPOINT_TOKEN_HEADER, "v1.forged.forged")
        .header("cookie", "redwall_session=rwc_x; theme=light")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies, ["theme=dark; Path=/"], "no cookie named like ours");
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["uri"], "/sensors/line1?unit=c");
    assert_eq!(echo["sub"], Value::Null, "anonymous on a public rule");
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header(&echo, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(header(&echo, "x-forwarded-proto"), ["https"]);
    let forwarded = header(&echo, "forwarded");
    assert_eq!(forwarded.len(), 1);
    assert!(
        forwarded[0].starts_with("for=127.0.0.1;proto=https"),
        "{forwarded:?}"
    );
    assert!(header(&echo, "x-redwall-user").is_empty());
    assert!(header(&echo, "x_redwall_user").is_empty());
    assert_eq!(header(&echo, ENDPOINT_TOKEN_HEADER).len(), 1);
    assert_eq!(header(&echo, "cookie"), ["theme=light"]);
    assert!(!echo.to_string().contains("6.6.6.6"));
}

#[tokio::test(flavor = "multi_thread")]
async fn what_no_rule_allows_the_editor_and_sign_in_rules_are_refused() {
    let site = Site::start(Some(access(plant_rules()))).await;
    assert_eq!(
        status_and_code(site.get("/unknown")).await,
        (403, "no_matching_rule".into())
    );
    assert_eq!(
        status_and_code(site.post("/sensors")).await,
        (403, "no_matching_rule".into())
    );
    for editor in ["/editor", "/editor/flows", "/EDITOR/"] {
        assert_eq!(
            status_and_code(site.get(editor)).await,
            (404, "not_found".into()),
            "{editor}"
        );
    }
    assert_eq!(
        status_and_code(site.get("/sensors%2f..%2feditor")).await,
        (400, "bad_path".into())
    );
    assert_eq!(
        status_and_code(site.get("/dash")).await,
        (403, "needs_hub".into())
    );
    let r = site.get("/dash").send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("use the hub's address"));
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_rules_take_right_keys_and_never_pass_them_on() {
    let site = Site::start(Some(access(plant_rules()))).await;
    for (name, value) in [
        ("x-api-key", key('a')),
        ("authorization", format!("Bearer {}", key('a'))),
    ] {
        let r = site
            .post("/api/line2/reading")
            .header(name, &value)
            .body("42")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let echo: Value = r.json().await.unwrap();
        assert_eq!(echo["sub"], "key:k1");
        assert_eq!(echo["body_len"], 2);
        assert!(header(&echo, "x-api-key").is_empty());
        assert!(header(&echo, "authorization").is_empty());
        assert!(
            !echo.to_string().contains(&key('a')),
            "the key is not forwarded"
        );
    }
    let with = |k: String| site.get("/api/line1/temp").header("x-api-key", k);
    assert_eq!(
        status_and_code(with(key('b'))).await.0,
        200,
        "within its prefix"
    );
    assert_eq!(
        status_and_code(with(key('z'))).await,
        (401, "credential_invalid".into()),
        "unknown key"
    );
    assert_eq!(
        status_and_code(with(key('c'))).await,
        (401, "credential_invalid".into()),
        "expired key"
    );
    assert_eq!(
        status_and_code(with("rwk_short".into())).await,
        (401, "credential_invalid".into())
    );
    assert_eq!(
        status_and_code(site.get("/api/line2/temp").header("x-api-key", key('b'))).await,
        (403, "forbidden".into()),
        "outside its prefix: the hub's answer"
    );
    assert_eq!(
        status_and_code(site.get("/api/line1/temp")).await,
        (401, "credential_required".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_before_the_hub_spoke_and_new_rules_apply_at_once() {
    let site = Site::start(None).await;
    assert_eq!(
        status_and_code(site.get("/sensors")).await,
        (503, "not_hosted".into())
    );
    site.access.send_replace(Some(access(plant_rules())));
    assert_eq!(status_and_code(site.get("/sensors")).await.0, 200);
    // The Owner puts the sensors behind a key.
    site.access.send_replace(Some(access(vec![rule(
        "/sensors",
        &[],
        RoutePolicy::ApiKey,
    )])));
    assert_eq!(
        status_and_code(site.get("/sensors")).await,
        (401, "credential_required".into())
    );
    assert_eq!(
        status_and_code(site.get("/sensors").header("x-api-key", key('a')))
            .await
            .0,
        200
    );
    site.access.send_replace(None);
    assert_eq!(
        status_and_code(site.get("/sensors")).await,
        (503, "not_hosted".into())
    );
}

async fn open_socket(site: &Site) -> reqwest::Upgraded {
    let r = site
        .get("/ws")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 101);
    assert_eq!(r.headers()["upgrade"], "websocket");
    r.upgrade().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_is_joined_byte_for_byte_and_closed_when_its_rule_goes() {
    let site = Site::start(Some(access(plant_rules()))).await;
    let mut socket = open_socket(&site).await;
    for message in [&b"hello"[..], b"\x81\x05bytes\x00\xff"] {
        socket.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, message);
    }
    // The rule goes: within the next re-check the socket is closed.
    site.access.send_replace(Some(access(vec![rule(
        "/sensors",
        &[],
        RoutePolicy::Public,
    )])));
    let mut buf = [0u8; 16];
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the socket stayed open after its rule went");
    // And a new one is refused.
    assert_eq!(
        status_and_code(
            site.get("/ws")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
        )
        .await,
        (403, "no_matching_rule".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_refused_on_the_tls_listener() {
    let site = Site::start(Some(access(plant_rules()))).await;
    let plain = site.base.replacen("https://", "http://", 1);
    let r = site.client.get(format!("{plain}/sensors")).send().await;
    assert!(r.is_err(), "plain HTTP answered: {r:?}");
    // The same listener still serves TLS.
    assert_eq!(status_and_code(site.get("/sensors")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_only_on_loopback_and_then_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_tx, rx) = watch::channel(None);
    let mut config = LocalEndpointsConfig::new("0.0.0.0:0".parse().unwrap());
    config.plain_http = true;
    let refused = LocalEndpoints::bind(&config, dir.path(), "127.0.0.1:1".parse().unwrap(), rx)
        .await
        .err()
        .expect("plain HTTP off loopback must be refused");
    assert!(
        refused
            .to_string()
            .contains("only allowed on a loopback address"),
        "{refused}"
    );
    let node_red = start_node_red().await;
    let site = Site::start_with(Some(access(plant_rules())), node_red, true).await;
    let echo: Value = site
        .get("/sensors")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header(&echo, "x-forwarded-proto"), ["http"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_get_413_and_a_silent_node_red_502() {
    let site = Site::start(Some(access(plant_rules()))).await;
    let small = site.post("/upload").body(vec![b'x'; 1000]);
    let echo: Value = small.send().await.unwrap().json().await.unwrap();
    assert_eq!(echo["body_len"], 1000);
    let big = vec![b'x'; MAX_BODY as usize + 1];
    assert_eq!(
        status_and_code(site.post("/upload").body(big.clone())).await,
        (413, "body_too_large".into())
    );
    // Without a length: counted as it streams.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    assert_eq!(
        status_and_code(site.post("/upload").body(streamed)).await,
        (413, "body_too_large".into())
    );
    // Node-RED is not there.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = closed.local_addr().unwrap();
    drop(closed);
    let site = Site::start_with(Some(access(plant_rules())), nowhere, false).await;
    assert_eq!(
        status_and_code(site.get("/sensors")).await,
        (502, "instance_unreachable".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_are_served_too_with_the_certificate_pinned() {
    let site = Site::start(Some(access(plant_rules()))).await;
    let pin = site.cert_sha256.clone().unwrap();
    let mut tls =
        redwall_agent::tls::client_config(&redwall_agent::tls::HubTrust::Pinned(pin)).unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(site.addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let authority = format!("localhost:{}", site.addr.port());
    let ask = |path: &str| {
        Request::get(format!("https://{authority}{path}"))
            .header("x-forwarded-for", "6.6.6.6")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap()
    };
    let r = sender.send_request(ask("/sensors/h2")).await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["uri"], "/sensors/h2");
    assert_eq!(header(&echo, "host"), [authority.as_str()]);
    assert_eq!(header(&echo, "x-forwarded-host"), [authority.as_str()]);
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    let r = sender.send_request(ask("/editor/")).await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_are_closed_and_shutdown_stops_listening() {
    redwall_agent::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let node_red = start_node_red().await;
    let (_tx, rx) = watch::channel(Some(access(plant_rules())));
    let mut config = LocalEndpointsConfig::new("127.0.0.1:0".parse().unwrap());
    config.max_connections = 1;
    let endpoints = LocalEndpoints::bind(&config, dir.path(), node_red, rx)
        .await
        .unwrap();
    let addr = endpoints.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(endpoints.run(async {
        let _ = stopped.await;
    }));
    let client = || {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let url = format!("https://127.0.0.1:{}/sensors", addr.port());
    // One idle connection holds the only slot (its handshake has 10 s).
    let held = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(client().get(&url).send().await.is_err());
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    // Shutdown: run returns and the port no longer answers.
    drop(stop);
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .unwrap()
        .unwrap();
    assert!(client().get(&url).send().await.is_err());
}

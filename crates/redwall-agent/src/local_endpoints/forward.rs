//! Passing an admitted request on to Node-RED on loopback, and its answer
//! back, as the hub's proxy does (`redwall-server/src/proxy/forward.rs`).
//!
//! The request is rebuilt by hyper, so framing tricks the client sent were
//! already refused by the server side and cannot reach Node-RED. Each
//! request gets its own HTTP/1.1 connection to `127.0.0.1:PORT` (local
//! traffic of one site; a connect on loopback costs little). WebSocket
//! upgrades are joined byte for byte and judged again every second.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use redwall_runtime::{mint_endpoint_token, ENDPOINT_TOKEN_HEADER};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::info;

use super::decision::{self, Admitted, Refusal};
use super::hygiene;
use super::server::Shared;
use super::{AccessWatch, SiteAccess, TOKEN_SECS};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every answer the local endpoints give.
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// How often an open WebSocket's access is judged again.
pub(crate) const RECHECK_EVERY: Duration = Duration::from_secs(1);
const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// How long a refused request's body is still read, so the client gets
/// the answer instead of a reset.
const DRAIN_FOR: Duration = Duration::from_secs(10);

pub(crate) const BODY_TOO_LARGE: Refusal = Refusal::new(
    StatusCode::PAYLOAD_TOO_LARGE,
    "body_too_large",
    "the request body is larger than this agent accepts",
);
const UNREACHABLE: Refusal = Refusal::new(
    StatusCode::BAD_GATEWAY,
    "instance_unreachable",
    "the instance is not answering; it may be stopped or starting",
);
const UPGRADE_TIMEOUT: Refusal = Refusal::new(
    StatusCode::GATEWAY_TIMEOUT,
    "instance_timeout",
    "the instance did not answer the upgrade request in time",
);

/// Unix seconds, from the real clock: Node-RED checks the tokens against it.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Our own answer: `{"error":{"code","message"}}` with the refusal's status.
pub(crate) fn error_response(refusal: Refusal) -> Response<Body> {
    let json = serde_json::json!({
        "error": { "code": refusal.code, "message": refusal.message }
    })
    .to_string();
    let mut r = Response::new(Full::new(Bytes::from(json)).map_err(|n| match n {}).boxed());
    *r.status_mut() = refusal.status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// One line per refusal: method, path, peer and reason; never a header.
pub(crate) fn log_refusal(method: &Method, path: &str, peer: SocketAddr, reason: &str) {
    let path: String = path.chars().take(256).collect();
    info!(
        method = %method,
        path = %path.escape_debug(),
        peer = %peer,
        reason,
        "local endpoint request refused"
    );
}

/// Reads what a refused request still sends, bounded, on a task of its
/// own while the answer goes out (see the hub's `net/drain.rs`).
pub(crate) fn drain(body: Incoming, limit: u64) {
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let mut body = body;
        let mut read: u64 = 0;
        let until = tokio::time::Instant::now() + DRAIN_FOR;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(until, body.frame()).await {
            if let Some(data) = frame.data_ref() {
                read = read.saturating_add(data.len() as u64);
                if read > limit {
                    break;
                }
            }
        }
    });
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// What an open WebSocket is judged by again: the request's head as it
/// arrived, against whatever access holds now.
struct Recheck {
    method: Method,
    path: String,
    headers: HeaderMap,
    peer: IpAddr,
    access: AccessWatch,
}

impl Recheck {
    fn still_allowed(&self) -> bool {
        let access = self.access.borrow().clone();
        decision::judge(
            access.as_deref(),
            self.method.as_str(),
            &self.path,
            &self.headers,
            self.peer,
            unix_now(),
        )
        .is_ok()
    }
}

/// Forwards an admitted request to Node-RED and brings its answer back.
pub(crate) async fn forward(
    shared: &Shared,
    access: Arc<SiteAccess>,
    admitted: Admitted,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if content_length(request.headers()).is_some_and(|n| n > shared.max_body) {
        log_refusal(&method, &path, peer, BODY_TOO_LARGE.code);
        drain(request.into_body(), shared.max_body);
        return error_response(BODY_TOO_LARGE);
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_owned());
    let Ok(uri) = path_and_query.parse::<Uri>() else {
        log_refusal(&method, &path, peer, "bad_path");
        return error_response(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "the request path is not valid",
        ));
    };
    // HTTP/2's `:authority`, else `Host`.
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    let websocket = is_websocket(request.headers());
    let recheck = websocket.then(|| Recheck {
        method: method.clone(),
        path: path.clone(),
        headers: request.headers().clone(),
        peer: peer.ip(),
        access: shared.access.clone(),
    });
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let upgrade = if websocket {
        parts.headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    hygiene::strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = upgrade {
        parts.headers.insert(header::UPGRADE, upgrade);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    hygiene::prepare_request(
        &mut parts.headers,
        peer.ip(),
        shared.https,
        authority.as_deref(),
        admitted.authorization,
    );
    let token = mint_endpoint_token(
        &access.endpoint_key,
        &access.instance_id,
        admitted.username.as_deref(),
        unix_now() + TOKEN_SECS,
    );
    match HeaderValue::from_str(&token) {
        Ok(v) => {
            parts.headers.insert(ENDPOINT_TOKEN_HEADER, v);
        }
        Err(_) => return error_response(UNREACHABLE),
    }
    if !parts.headers.contains_key(header::HOST) {
        let host = authority.unwrap_or_else(|| shared.node_red.to_string());
        if let Ok(v) = HeaderValue::from_str(&host) {
            parts.headers.insert(header::HOST, v);
        }
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let too_large = Arc::new(AtomicBool::new(false));
    let flag = too_large.clone();
    let limit = usize::try_from(shared.max_body).unwrap_or(usize::MAX);
    let body: Body = Limited::new(body, limit)
        .map_err(move |e: BoxError| {
            if e.is::<LengthLimitError>() {
                flag.store(true, Ordering::Relaxed);
            }
            e
        })
        .boxed();
    let upstream = Request::from_parts(parts, body);

    let answer = async {
        let stream = tokio::time::timeout(CONNECT_WITHIN, TcpStream::connect(shared.node_red))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            // Ends with the answer (or the upgraded socket).
            let _ = connection.with_upgrades().await;
        });
        sender
            .send_request(upstream)
            .await
            .map_err(|e| crate::error_chain(&e))
    };
    let answer = if websocket {
        // Node-RED leaves an upgrade to a path without a listener
        // unanswered; the socket would stay open for ever.
        match tokio::time::timeout(shared.upgrade_within, answer).await {
            Ok(a) => a,
            Err(_) => {
                log_refusal(&method, &path, peer, UPGRADE_TIMEOUT.code);
                return error_response(UPGRADE_TIMEOUT);
            }
        }
    } else {
        answer.await
    };
    let mut response = match answer {
        Ok(r) => r,
        Err(why) => {
            if too_large.load(Ordering::Relaxed) {
                log_refusal(&method, &path, peer, BODY_TOO_LARGE.code);
                return error_response(BODY_TOO_LARGE);
            }
            info!(peer = %peer, node_red = %shared.node_red, "local endpoints: Node-RED did not answer: {why}");
            return error_response(UNREACHABLE);
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let (Some(client), Some(recheck)) = (client_upgrade, recheck) {
            let instance = hyper::upgrade::on(&mut response);
            tokio::spawn(join(client, instance, recheck, shared.closing.clone()));
        }
        let (mut parts, _) = response.into_parts();
        hygiene::drop_our_cookies(&mut parts.headers);
        hygiene::filter_challenges(&mut parts.headers, admitted.instance_may_challenge);
        return Response::from_parts(parts, Empty::new().map_err(|n| match n {}).boxed());
    }
    let (mut parts, body) = response.into_parts();
    hygiene::strip_hop_by_hop(&mut parts.headers);
    hygiene::drop_our_cookies(&mut parts.headers);
    hygiene::filter_challenges(&mut parts.headers, admitted.instance_may_challenge);
    Response::from_parts(parts, body.map_err(BoxError::from).boxed())
}

/// Joins the client's upgraded connection to Node-RED's, until either
/// closes, the access no longer admits the request (judged every second),
/// or the endpoints shut down.
async fn join(
    client: hyper::upgrade::OnUpgrade,
    instance: hyper::upgrade::OnUpgrade,
    recheck: Recheck,
    mut closing: watch::Receiver<bool>,
) {
    let (Ok(client), Ok(instance)) = (client.await, instance.await) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut instance = TokioIo::new(instance);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut instance);
    tokio::pin!(copy);
    let mut tick = tokio::time::interval(RECHECK_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut copy => return,
            () = super::server::closed(&mut closing) => return,
            _ = tick.tick() => {
                if !recheck.still_allowed() {
                    // Dropping both ends closes both connections.
                    info!(
                        method = %recheck.method,
                        path = %recheck.path.escape_debug(),
                        peer = %recheck.peer,
                        reason = "access_changed",
                        "local endpoint websocket closed"
                    );
                    return;
                }
            }
        }
    }
}

//! Passing a request on to an instance on loopback, and its answer back.
//!
//! The request is rebuilt by hyper, so framing tricks the client sent
//! (duplicate Content-Length, odd Transfer-Encoding) were already refused by
//! the server side and cannot reach Node-RED. WebSocket upgrades are joined
//! byte for byte and re-checked every second: when the session ends, expires
//! or the role changes, the socket is closed.

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use std::time::Duration;

use super::hygiene;
use super::limits::Permit;
use super::upstream::{Upstream, Via};
use hyper::body::Body as _;

/// Answers up to this size are buffered and sent in one write.
const BUFFER_UP_TO: u64 = 64 * 1024;

/// How often an open WebSocket's access is checked again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

use redwall_headers::strip_hop_by_hop;

pub fn is_websocket(request: &Request) -> bool {
    is_websocket_headers(request.headers())
}

pub fn is_websocket_parts(parts: &axum::http::request::Parts) -> bool {
    is_websocket_headers(&parts.headers)
}

fn is_websocket_headers(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Re-checks a WebSocket's access; false closes it.
pub type Recheck = Box<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// Borrowed from the request's `Located` and its instance, which outlive
/// the forwarding: no path or id is copied for it.
pub struct Forward<'a> {
    /// Where the instance is reached.
    pub via: super::upstream::Via,
    /// Path and query as the instance sees them.
    pub path_and_query: &'a str,
    /// Prefix to put back on Location headers (`/i/{name}` in path routing).
    pub location_prefix: Option<&'a str>,
    pub max_body: u64,
    /// Who holds the connection, for the open-connection limits.
    pub sockets: super::limits::Claim<'a>,
    /// How long the instance may take to answer an upgrade.
    pub upgrade_within: Duration,
    /// The instance owns authentication here: its challenges may pass.
    pub instance_may_challenge: bool,
}

/// An answer of the proxy, and whether the security headers treat it as
/// the instance's (they leave its page policy alone) or as Redwall's own.
/// A flag, not a marker in the response's extensions: that costs a map
/// and its table on every request.
pub struct Served {
    pub response: Response,
    pub from_instance: bool,
}

impl Served {
    pub fn ours(response: Response) -> Served {
        Served {
            response,
            from_instance: false,
        }
    }

    fn instance(response: Response) -> Served {
        Served {
            response,
            from_instance: true,
        }
    }
}

/// An instance whose agent's connection this process does not hold.
fn agent_offline() -> Served {
    Served::instance(
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_offline",
            "the agent that runs this instance is not connected",
        )
        .into_response(),
    )
}

fn bad_gateway() -> Served {
    Served::instance(
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "instance_unreachable",
            "the instance is not answering; it may be stopped or starting",
        )
        .into_response(),
    )
}

pub async fn forward(
    upstream: &Upstream,
    f: Forward<'_>,
    mut request: Request,
    recheck: Option<Recheck>,
) -> Served {
    if matches!(f.via, Via::Agent(None)) {
        return agent_offline();
    }
    let websocket = is_websocket(&request);
    if let Some(len) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > f.max_body {
            return Served::ours(
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is larger than this instance accepts",
                )
                .into_response(),
            );
        }
    }
    let Ok(uri) = Uri::try_from(f.path_and_query) else {
        return Served::ours(
            ApiError::bad_request("invalid_path", "the request path is not valid").into_response(),
        );
    };
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let upgrade_headers = websocket.then(|| {
        (
            parts.headers.get(header::UPGRADE).cloned(),
            HeaderValue::from_static("upgrade"),
        )
    });
    strip_hop_by_hop(&mut parts.headers);
    if let Some((Some(upgrade), connection)) = upgrade_headers {
        parts.headers.insert(header::UPGRADE, upgrade);
        parts.headers.insert(header::CONNECTION, connection);
    }
    parts.uri = uri;
    parts.version = axum::http::Version::HTTP_11;
    if !parts.headers.contains_key(header::HOST) {
        let host = match f.via {
            Via::Port(port) => format!("127.0.0.1:{port}"),
            Via::Agent(_) | Via::Relay { .. } => "127.0.0.1".to_owned(),
        };
        if let Ok(v) = HeaderValue::from_str(&host) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let body = Body::new(Limited::new(body, f.max_body as usize).map_err(axum::Error::new));
    let upstream_request = Request::from_parts(parts, body);
    let permit = match upstream.open.acquire(&f.sockets) {
        Ok(p) => p,
        Err(refused) => return Served::ours(refused.into_response()),
    };
    let sent = upstream.send(&f.via, upstream_request);
    let answer = if websocket {
        // Node-RED leaves an upgrade to a path without a WebSocket listener
        // unanswered; the socket would stay open for ever.
        match tokio::time::timeout(f.upgrade_within, sent).await {
            Ok(answer) => answer,
            Err(_) => return Served::ours(upgrade_timeout()),
        }
    } else {
        sent.await
    };
    let Ok((mut response, lease)) = answer else {
        return match f.via {
            // The tunnel broke (the agent's link is going).
            Via::Agent(_) | Via::Relay { .. } => agent_offline(),
            Via::Port(_) => bad_gateway(),
        };
    };
    if websocket && response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let instance_upgrade = hyper::upgrade::on(&mut response);
        if let Some(client_upgrade) = client_upgrade {
            tokio::spawn(join_websockets(
                client_upgrade,
                instance_upgrade,
                recheck,
                permit,
            ));
        }
        let (mut parts, _) = response.into_parts();
        hygiene::drop_our_cookies(&mut parts.headers);
        hygiene::filter_challenges(&mut parts.headers, f.instance_may_challenge);
        return Served::instance(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    hygiene::drop_our_cookies(&mut parts.headers);
    hygiene::filter_challenges(&mut parts.headers, f.instance_may_challenge);
    if let Some(prefix) = f.location_prefix {
        rewrite_location(&mut parts.headers, prefix);
    }
    // A small answer of known length is read whole and sent in one write,
    // as nginx does: headers and body then leave in one segment instead of
    // two wake-ups of the client. Anything else (streams, SSE) streams.
    let Some(body) = super::upstream::relay_body(body, lease, BUFFER_UP_TO).await else {
        return bad_gateway();
    };
    // An answer read whole gives its connection back now; a stream when
    // the client has read it (or went away).
    let body = if body.size_hint().exact().is_some_and(|n| n <= BUFFER_UP_TO) {
        drop(permit);
        body
    } else {
        Body::new(Holding {
            body,
            _permit: permit,
        })
    };
    Served::instance(Response::from_parts(parts, body))
}

/// A streamed answer's body, holding its connection's permit to its end.
struct Holding {
    body: Body,
    _permit: Permit,
}

impl hyper::body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn upgrade_timeout() -> Response {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "instance_timeout",
        "the instance did not answer the upgrade request in time",
    )
    .into_response()
}

/// Node-RED redirects to absolute paths of its own ("/editor/"); under
/// path routing they must keep the `/i/{name}` prefix.
fn rewrite_location(headers: &mut HeaderMap, prefix: &str) {
    let Some(loc) = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|l| l.starts_with('/') && !l.starts_with("//"))
        .map(|l| format!("{prefix}{l}"))
    else {
        return;
    };
    if let Ok(v) = HeaderValue::from_str(&loc) {
        headers.insert(header::LOCATION, v);
    }
}

async fn join_websockets(
    client: hyper::upgrade::OnUpgrade,
    instance: hyper::upgrade::OnUpgrade,
    recheck: Option<Recheck>,
    _permit: Permit,
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
            _ = tick.tick() => {
                if let Some(check) = &recheck {
                    if !check().await {
                        // Dropping both ends closes the TCP connections; the
                        // editor sees its socket close and shows it.
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderName;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-private", "1"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("content-type", "text/plain"),
        ] {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                h.append(k, v);
            }
        }
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type"]);
    }
}

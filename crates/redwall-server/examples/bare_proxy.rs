//! The floor under Redwall's proxy, for `scripts/bench-instances` (target
//! `bare`): the same server (axum-server, hyper, the slow-client timer,
//! TCP_NODELAY) and the same upstream pool, with none of Redwall's
//! decisions: no rules, keys, tokens or header stripping. What Redwall costs
//! beyond this is its own logic; what this costs beyond nginx is the stack.
//!
//!   cargo run --release --example bare_proxy -- LISTEN_PORT UPSTREAM_PORT
//!
//! Listens on 127.0.0.1 only, and forwards every request as it came.
//! `BARE_RUNTIME=current` runs it on one thread instead of Redwall's
//! multi-threaded runtime; `BARE_SLOW_CLIENT_TIMER=0` drops the per-request
//! timer against slow clients. Both are there to measure what they cost.

use axum::body::Body;
use axum_server::accept::NoDelayAcceptor;
use hyper::body::Incoming;
use redwall_server::proxy::upstream::{relay_body, Upstream};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

type Answer = axum::http::Response<Body>;

async fn pass_on(upstream: Arc<Upstream>, port: u16, request: hyper::Request<Incoming>) -> Answer {
    let Ok((answer, lease)) = upstream.send(port, request.map(Body::new)).await else {
        return bad_gateway();
    };
    let (parts, body) = answer.into_parts();
    match relay_body(body, lease, 64 * 1024).await {
        Some(body) => Answer::from_parts(parts, body),
        None => bad_gateway(),
    }
}

fn bad_gateway() -> Answer {
    let mut answer = Answer::new(Body::empty());
    *answer.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
    answer
}

fn main() -> anyhow::Result<()> {
    let mut runtime = if std::env::var("BARE_RUNTIME").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    runtime.enable_all().build()?.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u16>());
    let (Some(Ok(listen)), Some(Ok(port))) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bare_proxy LISTEN_PORT UPSTREAM_PORT");
    };
    let upstream = Arc::new(Upstream::default());
    let service = tower::service_fn(move |request: hyper::Request<Incoming>| {
        let upstream = upstream.clone();
        async move { Ok::<_, Infallible>(pass_on(upstream, port, request).await) }
    });
    let listener = std::net::TcpListener::bind(("127.0.0.1", listen))?;
    listener.set_nonblocking(true)?;
    let mut server = axum_server::from_tcp(listener).acceptor(NoDelayAcceptor::new());
    if std::env::var("BARE_SLOW_CLIENT_TIMER").as_deref() != Ok("0") {
        server
            .http_builder()
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
    }
    server
        .serve(tower::make::Shared::new(service))
        .await
        .map_err(Into::into)
}

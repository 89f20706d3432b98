//! The floor under Redwall's proxy, for `scripts/bench-instances` (target
//! `bare`): the same server (axum-server, hyper, the slow-client timer,
//! TCP_NODELAY), the same upstream pool, the same number of Tokio workers
//! and the same security headers on the answers, in front of the same
//! managed Node-RED, with none of Redwall's decisions: no rules, keys,
//! minted tokens or header stripping. What Redwall costs beyond this is its
//! own logic; what this costs beyond nginx is the stack.
//!
//!   BARE_ENDPOINT_TOKEN=TOKEN cargo run --release --example bare_proxy -- LISTEN_PORT UPSTREAM_PORT
//!
//! Listens on 127.0.0.1 only, and forwards every request as it came, plus
//! the endpoint token a managed instance requires: `BARE_ENDPOINT_TOKEN`,
//! one token minted once (Redwall mints one per request), sent in the same
//! header Redwall uses. Without it, requests go as they came (a plain
//! Node-RED). `BARE_NETWORK_ISOLATION=1` dials the instance as Redwall does
//! with `instances.network_isolation` (its default): on the link address of
//! the instance's own network namespace, derived from its port; otherwise
//! 127.0.0.1.
//!
//! Workers: as `redwall serve` sizes its runtime (crates/redwall/src/main.rs,
//! which a binary crate cannot share): `REDWALL_WORKER_THREADS`, else half
//! the cores, at least one. `BARE_RUNTIME=current` runs it on one thread
//! instead; `BARE_SLOW_CLIENT_TIMER=0` drops the per-request timer against
//! slow clients. Both are there to measure what they cost.

use axum::body::Body;
use axum::http::HeaderValue;
use axum_server::accept::NoDelayAcceptor;
use hyper::body::Incoming;
use redwall_runtime::ENDPOINT_TOKEN_HEADER;
use redwall_server::net::headers::HeaderPolicy;
use redwall_server::proxy::upstream::{relay_body, Upstream, Via};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

type Answer = axum::http::Response<Body>;

struct Bare {
    upstream: Upstream,
    port: u16,
    token: Option<HeaderValue>,
    /// Redwall's own security-headers policy, as its front door applies it
    /// to every answer from an instance (no HSTS: the benchmark is plain
    /// HTTP, as is Redwall there).
    headers: HeaderPolicy,
}

async fn pass_on(bare: Arc<Bare>, request: hyper::Request<Incoming>) -> Answer {
    let mut request = request.map(Body::new);
    if let Some(token) = &bare.token {
        request
            .headers_mut()
            .insert(ENDPOINT_TOKEN_HEADER, token.clone());
    }
    let mut answer = forward(&bare, request).await;
    // An instance's answer, as Redwall's proxy says of it, so only the
    // headers added to instance answers are added.
    bare.headers.apply(&mut answer, true);
    answer
}

async fn forward(bare: &Bare, request: axum::http::Request<Body>) -> Answer {
    let Ok((answer, lease)) = bare.upstream.send(&Via::Port(bare.port), request).await else {
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

/// Redwall's worker count (crates/redwall/src/main.rs): it shares its
/// machine with the instances it runs.
fn workers() -> usize {
    std::env::var("REDWALL_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get() / 2)
                .max(1)
        })
}

fn main() -> anyhow::Result<()> {
    let mut runtime = if std::env::var("BARE_RUNTIME").as_deref() == Ok("current") {
        eprintln!("bare_proxy: current-thread runtime");
        tokio::runtime::Builder::new_current_thread()
    } else {
        let workers = workers();
        eprintln!("bare_proxy: {workers} Tokio worker thread(s)");
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    runtime.enable_all().build()?.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u16>());
    let (Some(Ok(listen)), Some(Ok(port))) = (args.next(), args.next()) else {
        anyhow::bail!("usage: [BARE_ENDPOINT_TOKEN=TOKEN] bare_proxy LISTEN_PORT UPSTREAM_PORT");
    };
    let token = match std::env::var("BARE_ENDPOINT_TOKEN") {
        Ok(t) if !t.is_empty() => Some(HeaderValue::from_str(&t)?),
        _ => None,
    };
    let isolated = std::env::var("BARE_NETWORK_ISOLATION").as_deref() == Ok("1");
    eprintln!(
        "bare_proxy: upstream {}",
        redwall_runtime::instance_address(port, isolated)
    );
    let bare = Arc::new(Bare {
        upstream: Upstream::new(isolated),
        port,
        token,
        headers: HeaderPolicy { hsts: false },
    });
    let service = tower::service_fn(move |request: hyper::Request<Incoming>| {
        let bare = bare.clone();
        async move { Ok::<_, Infallible>(pass_on(bare, request).await) }
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

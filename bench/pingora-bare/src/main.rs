//! A bare Pingora proxy, for `scripts/bench-instances` (target `pingora`):
//! a benchmark diagnostic for issue 19, not product code. It does the job of
//! `crates/redwall-server/examples/bare_proxy.rs` (target `bare`) on
//! Cloudflare's Pingora instead of hyper, so the CPU per request of the two
//! stacks, and of nginx, can be compared in one run: none of Redwall's
//! decisions, the endpoint token injected, Redwall's security headers added.
//!
//!   BARE_ENDPOINT_TOKEN=TOKEN pingora-bare LISTEN_PORT UPSTREAM_PORT
//!
//! As bare: listens on 127.0.0.1 only (TCP_NODELAY, Pingora's default on
//! both sides); forwards every request as it came (Pingora's "preserve"
//! header policy: no hop-by-hop stripping), plus `BARE_ENDPOINT_TOKEN` in
//! Redwall's endpoint-token header when set; `BARE_NETWORK_ISOLATION=1`
//! dials the instance's link address (10.254.0.0 + 2 * port + 1, as
//! `redwall_runtime::instance_address`), else 127.0.0.1; keep-alive upstream
//! connections, unused after 4 s idle, 5 s to connect; worker threads as
//! `redwall serve` (`REDWALL_WORKER_THREADS`, else half the cores, at least
//! one) on a work-stealing runtime, as bare's multi-thread one. Pingora has
//! no header-read timer like bare's hyper one: its own read timeouts (60 s)
//! stand in. Answers are streamed (Pingora's way), not buffered up to 64 KiB.
//!
//! The process also runs Pingora's timer thread and its idle main thread;
//! their CPU counts with the worker's, as bare's whole process counts.
//!
//! Built apart from the workspace (see its Cargo.toml); pingora-core's
//! zlib-ng (a non-optional feature) needs cmake to build.

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora_core::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// redwall_runtime::ENDPOINT_TOKEN_HEADER.
const ENDPOINT_TOKEN_HEADER: &str = "x-redwall-endpoint-token";

struct Bare {
    peer: HttpPeer,
    token: Option<http::HeaderValue>,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    /// No modules (Pingora adds a disabled compression one by default).
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if let Some(token) = &self.token {
            request.insert_header(ENDPOINT_TOKEN_HEADER, token.clone())?;
        }
        Ok(())
    }

    /// Redwall's HeaderPolicy::apply(answer, from_instance = true), no HSTS.
    async fn response_filter(
        &self,
        _session: &mut Session,
        answer: &mut ResponseHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if !answer
            .headers
            .contains_key(http::header::X_CONTENT_TYPE_OPTIONS)
        {
            answer.insert_header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")?;
        }
        if !answer.headers.contains_key(http::header::REFERRER_POLICY) {
            answer.insert_header(http::header::REFERRER_POLICY, "same-origin")?;
        }
        Ok(())
    }
}

/// Redwall's worker count (crates/redwall/src/main.rs).
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

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u16>());
    let (Some(Ok(listen)), Some(Ok(port))) = (args.next(), args.next()) else {
        eprintln!("usage: [BARE_ENDPOINT_TOKEN=TOKEN] pingora-bare LISTEN_PORT UPSTREAM_PORT");
        std::process::exit(2);
    };
    let token = match std::env::var("BARE_ENDPOINT_TOKEN") {
        Ok(t) if !t.is_empty() => Some(http::HeaderValue::from_str(&t).expect("a header value")),
        _ => None,
    };
    let host = if std::env::var("BARE_NETWORK_ISOLATION").as_deref() == Ok("1") {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 254, 0, 0)) + 2 * u32::from(port) + 1)
    } else {
        Ipv4Addr::LOCALHOST
    };
    let upstream = SocketAddr::from((host, port));
    let mut peer = HttpPeer::new(upstream, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(5));
    peer.options.idle_timeout = Some(Duration::from_secs(4));
    peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::preserve();

    let workers = workers();
    eprintln!("pingora_bare: {workers} worker thread(s)");
    eprintln!("pingora_bare: upstream {upstream}");
    let conf = ServerConf {
        threads: workers,
        work_stealing: true,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bare { peer, token });
    proxy.add_tcp(&format!("127.0.0.1:{listen}"));
    server.add_service(proxy);
    server.run_forever();
}

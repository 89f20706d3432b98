//! The first service every request meets.
//!
//! Instance traffic is the hot path: every http-in call of every flow passes
//! here. It is recognised before the API router and its middleware stack,
//! and goes straight to the proxy with the same client address, security
//! headers, request count and panic guard the API's layers give the rest.
//! Everything else goes to the API router unchanged.

use crate::error::ApiError;
use crate::net::client::ClientResolver;
use crate::net::drain::DrainOnDrop;
use crate::net::headers::HeaderPolicy;
use crate::proxy::Served;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::future::{BoxFuture, FutureExt};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};
use tower::{Service, ServiceExt};

/// One per accepted connection: it knows the peer's socket address.
#[derive(Clone)]
pub struct FrontDoor {
    state: AppState,
    api: Router,
    resolver: ClientResolver,
    headers: HeaderPolicy,
    peer: SocketAddr,
}

/// Makes a [`FrontDoor`] for each connection the server accepts.
#[derive(Clone)]
pub struct FrontDoors {
    state: AppState,
    api: Router,
    resolver: ClientResolver,
    headers: HeaderPolicy,
}

impl FrontDoors {
    pub fn new(state: AppState, api: Router) -> Self {
        FrontDoors {
            resolver: ClientResolver::for_state(&state),
            headers: HeaderPolicy { hsts: state.tls },
            state,
            api,
        }
    }
}

impl Service<SocketAddr> for FrontDoors {
    type Response = FrontDoor;
    type Error = Infallible;
    type Future = std::future::Ready<Result<FrontDoor, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, peer: SocketAddr) -> Self::Future {
        std::future::ready(Ok(FrontDoor {
            state: self.state.clone(),
            api: self.api.clone(),
            resolver: self.resolver.clone(),
            headers: self.headers,
            peer,
        }))
    }
}

impl<B> Service<axum::http::Request<B>> for FrontDoor
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        // Refused requests still read what the client sends, so it gets our answer.
        let mut request: Request = request.map(|b| Body::new(DrainOnDrop::new(b)));
        crate::net::authority::canonicalize(&mut request);
        let Some(located) = crate::proxy::locate(&self.state, &request) else {
            // The API's own layers resolve the client from this.
            request.extensions_mut().insert(ConnectInfo(self.peer));
            return self.api.clone().oneshot(request).boxed();
        };
        let client = self.resolver.resolve(self.peer.ip(), request.headers());
        // As the API's request counter logs (the path only: never the query
        // or headers, where credentials could be).
        let debug = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            let (method, path) = (request.method().clone(), request.uri().path().to_string());
            (method, path, client.ip, std::time::Instant::now())
        });
        // The client goes to the proxy as an argument, not as a request
        // extension (a map and two boxes on every request); the proxy adds
        // it where a reader of extensions needs it (the editor's guard).
        let state = self.state.clone();
        let headers = self.headers;
        async move {
            let served = match located {
                Err(redirect) => Served::ours(redirect),
                Ok(located) => {
                    AssertUnwindSafe(crate::proxy::serve(&state, located, client, request))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            Served::ours(
                                ApiError::internal("the proxy panicked on a request")
                                    .into_response(),
                            )
                        })
                }
            };
            let Served {
                response: mut answer,
                from_instance,
            } = served;
            let status = answer.status().as_u16();
            state.hub.metrics.request_done(status);
            if let Some((method, path, client, started)) = debug {
                let micros = started.elapsed().as_micros() as u64;
                tracing::debug!(%method, path, status, micros, %client, "request");
            }
            headers.apply(&mut answer, from_instance);
            Ok(answer)
        }
        .boxed()
    }
}

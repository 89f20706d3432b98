//! The other replicas' way to an agent's tunnel held by this process (see
//! `redwall_hub::relay`): an HTTP/1.1 upgrade to [`RELAY_PROTOCOL`] with a
//! relay token only replicas can make. Once switched, the connection's
//! bytes are joined to a new stream of the agent's tunnel, and the asking
//! replica speaks HTTP/1.1 to the agent's Node-RED over it, exactly as if
//! it held the tunnel itself. It has already judged the request and added
//! the instance's token; this side only checks that a replica asks.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use crate::error::ApiError;
use crate::net::client::ClientInfo;
use crate::state::AppState;

pub use crate::proxy::relay::{RELAY_HEADER, RELAY_PATH, RELAY_PROTOCOL};

pub async fn relay(
    State(state): State<AppState>,
    client: ClientInfo,
    Path(agent): Path<String>,
    mut request: Request,
) -> Response {
    let wants_relay = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(RELAY_PROTOCOL));
    let token = request
        .headers()
        .get(RELAY_HEADER)
        .and_then(|v| v.to_str().ok());
    let Some(token) = token.filter(|_| wants_relay) else {
        return ApiError::not_found().into_response();
    };
    if !state.hub.check_relay_token(&agent, token) {
        tracing::warn!(ip = %client.ip, "a relay request without a valid replica token was refused");
        // The same answer as for a path that does not exist.
        return ApiError::not_found().into_response();
    }
    let Some(tunnel) = state.tunnels.get(&agent) else {
        return ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_offline",
            "the agent is not connected to this replica",
        )
        .into_response();
    };
    let Ok(stream) = tunnel.open().await else {
        return ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_offline",
            "the agent's tunnel closed",
        )
        .into_response();
    };
    let switched = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = switched.await else {
            return;
        };
        let mut upgraded = TokioIo::new(upgraded);
        let mut stream = stream;
        // Ends when either side closes, or the agent's connection ends.
        let _ = tokio::io::copy_bidirectional(&mut upgraded, &mut stream).await;
    });
    let mut answer = StatusCode::SWITCHING_PROTOCOLS.into_response();
    answer
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(RELAY_PROTOCOL));
    answer
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    answer
}

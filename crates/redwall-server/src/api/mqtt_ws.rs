//! MQTT over WebSocket at `/mqtt`, on the hub's own HTTPS port, for
//! browsers and dashboards: the request is upgraded here and its binary
//! messages carried to the team broker as one MQTT stream. The route is
//! public because MQTT logs in by itself: the broker refuses a CONNECT
//! without a broker client's credentials, as on every other listener.

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::ApiError;
use crate::net::client::ClientInfo;
use crate::state::AppState;

pub async fn upgrade(
    State(state): State<AppState>,
    client: ClientInfo,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Some(broker) = state.broker.get() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "the team MQTT broker is not running here",
        )
        .into_response();
    };
    let Ok(ws) = ws else {
        return ApiError::bad_request(
            "websocket_required",
            "MQTT over WebSocket: open a WebSocket here, with the subprotocol \"mqtt\"",
        )
        .into_response();
    };
    let front = broker.front_door().clone();
    let max = state.config.broker.max_packet_bytes as usize;
    let peer = SocketAddr::new(client.ip, 0);
    ws.protocols(["mqtt"])
        .max_message_size(max.saturating_add(16))
        .on_upgrade(move |socket| carry(front, socket, peer))
}

/// The first bytes, once they show an MQTT CONNECT (within the broker's
/// handshake timeout); `None` for anything else.
async fn first_bytes(
    from_client: &mut futures::stream::SplitStream<WebSocket>,
) -> Option<bytes::BytesMut> {
    let mut buf = bytes::BytesMut::new();
    loop {
        match redwall_broker::front::connect_begins(&mut buf) {
            Some(true) => return Some(buf),
            None => return None,
            Some(false) if buf.len() >= 4096 => return None,
            Some(false) => {}
        }
        match from_client.next().await {
            Some(Ok(Message::Binary(bytes))) => buf.extend_from_slice(&bytes),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return None,
        }
    }
}

/// Binary messages to the broker, the broker's bytes back as binary
/// messages, until either side closes.
async fn carry(front: redwall_broker::front::Front, socket: WebSocket, peer: SocketAddr) {
    let (mut to_client, mut from_client) = socket.split();
    let first =
        tokio::time::timeout(front.handshake_timeout(), first_bytes(&mut from_client)).await;
    let Ok(Some(first)) = first else {
        let _ = to_client.close().await;
        return;
    };
    let Ok(mut engine) = front.open(peer).await else {
        return;
    };
    if engine.write_all(&first).await.is_err() {
        return;
    }
    let (mut from_engine, mut to_engine) = engine.into_split();
    let up = async {
        while let Some(Ok(message)) = from_client.next().await {
            match message {
                Message::Binary(bytes) => {
                    if to_engine.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                // MQTT travels in binary messages only (MQTT 5, 6.0).
                Message::Text(_) => break,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
        let _ = to_engine.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from_engine.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let bytes = bytes::Bytes::copy_from_slice(&buf[..n]);
                    if to_client.send(Message::Binary(bytes)).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_client.close().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

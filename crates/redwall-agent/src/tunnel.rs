//! The agent's end of the tunnel (`redwall_tunnel`): every stream the hub
//! opens on this connection is one HTTP connection of the hub's proxy to
//! this agent's Node-RED, joined here to a TCP connection to
//! `127.0.0.1:PORT`. The hub has already decided who may make the request
//! and added the instance's token; Node-RED checks that token. Without a
//! Node-RED a stream is closed at once.

use std::net::SocketAddr;

use redwall_tunnel::{Carrier, TunnelStream};
use tokio::net::TcpStream;
use tracing::debug;

/// The tunnel of one connection, its streams joined to `node_red`.
pub(crate) fn site_end(node_red: Option<SocketAddr>) -> Carrier {
    redwall_tunnel::agent_end(move |stream| {
        if let Some(address) = node_red {
            tokio::spawn(join(stream, address));
        }
        // Without Node-RED the stream is dropped, which resets it: the hub
        // answers 502.
    })
}

async fn join(mut stream: TunnelStream, node_red: SocketAddr) {
    let mut local = match TcpStream::connect(node_red).await {
        Ok(s) => s,
        Err(e) => {
            debug!("a tunnelled request found no Node-RED at {node_red}: {e}");
            return;
        }
    };
    let _ = local.set_nodelay(true);
    // Ends when either side closes; a dropped connection to the hub ends
    // the stream, and with it this copy.
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut local).await;
}

//! Revocation: when the hub announces a client (deleted, rotated, given
//! new rules, or its instance deleted), every open connection of it is
//! closed at once; it can come back only with credentials that still work,
//! under the rules that hold now.

use std::sync::Arc;

use redwall_hub::broker::EVERY_BROKER_CLIENT;
use redwall_hub::metrics::BrokerMetrics;
use redwall_hub::Hub;
use rmqtt::context::ServerContext;
use rmqtt::types::Id;
use tokio::sync::broadcast::error::RecvError;

use crate::principals::Principals;

pub async fn watch(hub: Hub, scx: ServerContext, principals: Arc<Principals>) {
    let mut revocations = hub.broker_revocations();
    loop {
        let ids = match revocations.recv().await {
            Ok(client_id) if client_id == EVERY_BROKER_CLIENT => {
                tracing::warn!("revocations may have been missed; closing every connection");
                principals.all()
            }
            Ok(client_id) => principals.connections_of(&client_id),
            // Announcements were missed: close everything rather than keep
            // a revoked client connected. Every client logs in again.
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "broker revocations were missed; closing every connection"
                );
                principals.all()
            }
            Err(RecvError::Closed) => return,
        };
        for id in ids {
            principals.remove(&id);
            BrokerMetrics::add(&hub.metrics.broker.connections_closed);
            BrokerMetrics::add(&hub.metrics.broker.revocation_kicks);
            kick(&scx, id).await;
        }
    }
}

async fn kick(scx: &ServerContext, id: Id) {
    let entry = scx.extends.shared().await.entry(id.clone());
    let kicked = match entry.try_lock().await {
        Ok(mut locked) => locked.kick(true, true, true).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = kicked {
        tracing::warn!(client = %id.client_id, error = %e, "closing a revoked connection failed");
    }
}

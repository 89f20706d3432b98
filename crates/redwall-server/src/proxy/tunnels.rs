//! The tunnels of the agents connected to this hub, by agent id: how the
//! proxy reaches an instance whose Node-RED runs on a remote agent.
//!
//! A tunnel lives exactly as long as its agent's connection, in the process
//! that holds it (`api/agent_gateway.rs` adds and removes it). A request
//! for an agent's instance that reaches a hub without that connection is
//! answered 502: with several replicas behind a load balancer, agents and
//! their instances' traffic must meet on one (see ARCHITECTURE.md).

use std::collections::HashMap;
use std::sync::Mutex;

use redwall_tunnel::Opener;

#[derive(Default)]
pub struct Tunnels {
    /// agent id -> (connection id, the tunnel's opener).
    open: Mutex<HashMap<String, (String, Opener)>>,
}

impl Tunnels {
    /// The agent's new connection's tunnel; it replaces any older one.
    pub fn add(&self, agent_id: &str, connection: &str, opener: Opener) {
        if let Ok(mut open) = self.open.lock() {
            open.insert(agent_id.to_owned(), (connection.to_owned(), opener));
        }
    }

    /// Forgets the tunnel of this connection (not a newer one's).
    pub fn remove(&self, agent_id: &str, connection: &str) {
        if let Ok(mut open) = self.open.lock() {
            if open.get(agent_id).is_some_and(|(c, _)| c == connection) {
                open.remove(agent_id);
            }
        }
    }

    /// The agent's tunnel, while its connection is held here.
    pub fn get(&self, agent_id: &str) -> Option<Opener> {
        let open = self.open.lock().ok()?;
        open.get(agent_id)
            .map(|(_, opener)| opener.clone())
            .filter(|o| !o.is_closed())
    }
}

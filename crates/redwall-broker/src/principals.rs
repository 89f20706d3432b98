//! Who each open connection is, from its CONNECT to its end: the broker
//! client it logged in as, its team's mount prefix and its ordered rules.
//! Kept per connection (rmqtt's `Id`), so a takeover of a client id never
//! removes the newer connection's entry.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use redwall_policy::mqtt_acl::AclRule;
use rmqtt::types::Id;

/// A connection's identity, fixed for its life: a change of rules or
/// credentials closes the connection instead of changing this.
#[derive(Debug)]
pub struct Principal {
    /// The broker client's id (its username).
    pub client_id: String,
    pub team_id: String,
    /// `redwall_policy::mqtt_acl::mount_prefix` of the team.
    pub prefix: String,
    pub rules: Vec<AclRule>,
}

#[derive(Default)]
pub struct Principals {
    by_connection: RwLock<HashMap<Id, Arc<Principal>>>,
}

impl Principals {
    pub fn insert(&self, id: Id, principal: Principal) {
        self.write().insert(id, Arc::new(principal));
    }

    pub fn get(&self, id: &Id) -> Option<Arc<Principal>> {
        self.by_connection
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Forgets the connection; whether it was known.
    pub fn remove(&self, id: &Id) -> bool {
        self.write().remove(id).is_some()
    }

    /// The open connections of one broker client.
    pub fn connections_of(&self, client_id: &str) -> Vec<Id> {
        self.by_connection
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, p)| p.client_id == client_id)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn all(&self) -> Vec<Id> {
        self.by_connection
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_connection
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Id, Arc<Principal>>> {
        self.by_connection
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }
}

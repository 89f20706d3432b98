//! How many connections to instances are open, per instance and per client.
//!
//! Every request passed to an instance holds a permit until its answer was
//! sent whole (a stream until its end, a WebSocket until it closes), so
//! requests an instance never answers cannot pile up: beyond the limits a
//! client gets 429 and a busy instance 503, both at once and without
//! touching the instance. The counts are of this process's own sockets, so
//! each replica keeps its own.

use crate::config::InstancesConfig;
use crate::error::ApiError;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Counts {
    per_instance: HashMap<String, usize>,
    per_client: HashMap<IpAddr, usize>,
}

/// The open connections to instances, shared by every request.
#[derive(Clone, Default)]
pub struct OpenSockets(Arc<Mutex<Counts>>);

/// Who asks for a connection, and what they may hold.
pub struct Claim {
    instance_id: String,
    client: IpAddr,
    per_instance: usize,
    per_client: usize,
}

impl Claim {
    pub fn new(instance_id: &str, client: IpAddr, config: &InstancesConfig) -> Claim {
        Claim {
            instance_id: instance_id.to_string(),
            client,
            per_instance: config.max_upstream_per_instance,
            per_client: config.max_upstream_per_client,
        }
    }
}

/// One open connection; dropping it gives it back.
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    instance_id: String,
    client: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Ok(mut c) = self.counts.lock() else {
            return;
        };
        release(&mut c.per_instance, &self.instance_id);
        release(&mut c.per_client, &self.client);
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Client,
    Instance,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let error = match self {
            Refused::Client => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                "you have too many open connections to instances; close some and try again",
            ),
            Refused::Instance => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "instance_busy",
                "this instance has too many open connections; try again shortly",
            ),
        };
        let mut r = error.into_response();
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        r
    }
}

impl OpenSockets {
    pub fn acquire(&self, claim: &Claim) -> Result<Permit, Refused> {
        let mut c = self.0.lock().map_err(|_| Refused::Instance)?;
        let by_client = c.per_client.get(&claim.client).copied().unwrap_or(0);
        if by_client >= claim.per_client {
            return Err(Refused::Client);
        }
        let by_instance = c.per_instance.get(&claim.instance_id).copied().unwrap_or(0);
        if by_instance >= claim.per_instance {
            return Err(Refused::Instance);
        }
        *c.per_client.entry(claim.client).or_default() += 1;
        *c.per_instance.entry(claim.instance_id.clone()).or_default() += 1;
        Ok(Permit {
            counts: self.0.clone(),
            instance_id: claim.instance_id.clone(),
            client: claim.client,
        })
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        self.0
            .lock()
            .map(|c| (c.per_instance.len(), c.per_client.len()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(instance: &str, client: u8) -> Claim {
        Claim {
            instance_id: instance.to_string(),
            client: IpAddr::from([10, 0, 0, client]),
            per_instance: 3,
            per_client: 2,
        }
    }

    #[test]
    fn limits_hold_per_client_and_per_instance_and_free_on_drop() {
        let open = OpenSockets::default();
        let a1 = open.acquire(&claim("a", 1));
        let a2 = open.acquire(&claim("a", 1));
        assert!(a1.is_ok() && a2.is_ok());
        assert_eq!(open.acquire(&claim("b", 1)).err(), Some(Refused::Client));
        let a3 = open.acquire(&claim("a", 2));
        assert!(a3.is_ok());
        assert_eq!(open.acquire(&claim("a", 3)).err(), Some(Refused::Instance));
        assert!(open.acquire(&claim("b", 3)).is_ok(), "and dropped at once");
        drop(a1);
        assert!(open.acquire(&claim("a", 3)).is_ok());
        drop((a2, a3));
        assert_eq!(open.held(), (0, 0), "nothing left behind");
    }
}

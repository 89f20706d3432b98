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
use std::cell::Cell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Counts {
    /// By instance id, held here once and shared by the permits. An
    /// instance keeps its entry at zero (up to `KEEP_IDLE_INSTANCES`), so its
    /// next request copies no id. A `Cell`, so the one lookup that finds the
    /// shared id also counts (each lookup hashes the id).
    per_instance: HashMap<Arc<str>, Cell<usize>>,
    /// By client address, removed at zero: addresses are the clients' to
    /// choose, so they are not kept.
    per_client: HashMap<IpAddr, usize>,
}

/// How many instances keep an entry at zero; beyond, entries go at zero.
const KEEP_IDLE_INSTANCES: usize = 1024;

/// The open connections to instances, shared by every request.
#[derive(Clone, Default)]
pub struct OpenSockets(Arc<Mutex<Counts>>);

/// Who asks for a connection, and what they may hold.
pub struct Claim<'a> {
    instance_id: &'a str,
    client: IpAddr,
    per_instance: usize,
    per_client: usize,
}

impl<'a> Claim<'a> {
    pub fn new(instance_id: &'a str, client: IpAddr, config: &InstancesConfig) -> Claim<'a> {
        Claim {
            instance_id,
            client,
            per_instance: config.max_upstream_per_instance,
            per_client: config.max_upstream_per_client,
        }
    }
}

/// One open connection; dropping it gives it back.
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    instance_id: Arc<str>,
    client: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Ok(mut c) = self.counts.lock() else {
            return;
        };
        let id: &str = &self.instance_id;
        if let Some(n) = c.per_instance.get(id) {
            n.set(n.get().saturating_sub(1));
            if n.get() == 0 && c.per_instance.len() > KEEP_IDLE_INSTANCES {
                c.per_instance.remove(id);
            }
        }
        if let Entry::Occupied(mut n) = c.per_client.entry(self.client) {
            *n.get_mut() = n.get().saturating_sub(1);
            if *n.get() == 0 {
                n.remove();
            }
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
        let Counts {
            per_instance,
            per_client,
        } = &mut *c;
        let by_client = per_client.get(&claim.client).copied().unwrap_or(0);
        if by_client >= claim.per_client {
            return Err(Refused::Client);
        }
        let instance_id = match per_instance.get_key_value(claim.instance_id) {
            Some((_, n)) if n.get() >= claim.per_instance => return Err(Refused::Instance),
            Some((id, n)) => {
                n.set(n.get() + 1);
                id.clone()
            }
            None if claim.per_instance == 0 => return Err(Refused::Instance),
            None => {
                let id: Arc<str> = Arc::from(claim.instance_id);
                per_instance.insert(id.clone(), Cell::new(1));
                id
            }
        };
        *per_client.entry(claim.client).or_default() += 1;
        Ok(Permit {
            counts: self.0.clone(),
            instance_id,
            client: claim.client,
        })
    }

    /// Instances and clients holding connections, and instance entries kept.
    #[cfg(test)]
    fn held(&self) -> (usize, usize, usize) {
        self.0
            .lock()
            .map(|c| {
                let busy = c.per_instance.values().filter(|n| n.get() > 0).count();
                (busy, c.per_client.len(), c.per_instance.len())
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(instance: &str, client: u8) -> Claim<'_> {
        Claim {
            instance_id: instance,
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
        assert_eq!(open.held(), (0, 0, 2), "nothing held; a and b kept at zero");
    }

    #[test]
    fn idle_instances_are_forgotten_beyond_a_bound() {
        let open = OpenSockets::default();
        let ids: Vec<String> = (0..KEEP_IDLE_INSTANCES + 10)
            .map(|i| format!("i{i}"))
            .collect();
        for id in &ids {
            drop(open.acquire(&claim(id, 1)));
        }
        let (busy, clients, kept) = open.held();
        assert_eq!((busy, clients), (0, 0));
        assert!(kept <= KEEP_IDLE_INSTANCES + 1, "{kept} entries kept");
    }
}

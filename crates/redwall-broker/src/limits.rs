//! What one client may cost the broker. Each limit ends the offending
//! connection cleanly (or refuses the one request) and leaves the others
//! alone: a packet over the size limit, a subscription beyond the count, a
//! reader too slow to take its messages (its queue fills, then a send times
//! out), a client that never finishes its CONNECT.

use std::num::NonZeroU16;
use std::time::Duration;

use rmqtt::net::Builder;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest MQTT packet, either way, in bytes.
    pub max_packet_bytes: u32,
    /// QoS 1 and 2 messages sent to a client and not yet acknowledged.
    pub max_inflight: u16,
    /// Messages queued for one client beyond its inflight window; further
    /// ones are dropped (and counted by the engine).
    pub max_queue: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Levels in a topic or filter.
    pub max_topic_levels: usize,
    pub max_connections: usize,
    /// Connections still in their TLS or MQTT handshake.
    pub max_handshakes: usize,
    /// Time to finish the TLS handshake and send CONNECT.
    pub handshake_timeout: Duration,
    /// Time a write to a client may take before it is dropped.
    pub send_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_bytes: 1024 * 1024,
            max_inflight: 32,
            max_queue: 1_000,
            max_subscriptions: 1_000,
            max_topic_levels: 64,
            max_connections: 100_000,
            max_handshakes: 1_000,
            handshake_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The engine's listener settings: these limits, no anonymous login,
    /// client ids of at most `MAX_CLIENT_ID_BYTES`.
    pub fn apply(&self, builder: Builder) -> Builder {
        builder
            .allow_anonymous(false)
            .nodelay(true)
            .max_packet_size(self.max_packet_bytes)
            .max_inflight(NonZeroU16::new(self.max_inflight).unwrap_or(NonZeroU16::MIN))
            .max_mqueue_len(self.max_queue)
            .max_subscriptions(self.max_subscriptions)
            .max_topic_levels(self.max_topic_levels)
            .max_connections(self.max_connections)
            .max_handshaking_limit(self.max_handshakes)
            .handshake_timeout(self.handshake_timeout)
            .send_timeout(self.send_timeout)
            .max_clientid_len(redwall_policy::mqtt_acl::MAX_CLIENT_ID_BYTES)
    }
}

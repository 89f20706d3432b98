//! Redwall's team MQTT broker, embedded in the hub's process.
//!
//! The engine is rmqtt, as a library (MQTT 3.1.1 and 5, QoS 0 to 2,
//! retained messages, shared subscriptions). Redwall adds what a team
//! broker needs, through rmqtt's hooks ([`gate`]): every CONNECT is resolved
//! by the hub (`Hub::broker_login`), every publish and subscription decided
//! by `redwall_policy::mqtt_acl` on the team's bare topic tree, mounted
//! under the team's prefix, and every revocation the hub announces closes
//! the client's connections at once ([`revocation`]).
//!
//! Listeners:
//! - plain MQTT on loopback, and on the host's end of the isolated
//!   instances' link (their only way out to the host);
//! - MQTT over TLS, with the hub's certificate (rustls, ring), terminated
//!   here and passed to the engine ([`front`]);
//! - MQTT over WebSocket at `/mqtt` on the hub's own HTTPS port: the server
//!   upgrades the request and hands the stream to [`Broker::front_door`].
//!
//! Every client reaches the engine through [`front`] and one internal
//! loopback listener that reads a PROXY protocol header, so the engine (and
//! the audit of refused connections) sees each client's real address, and a
//! client that never sends its CONNECT is dropped in time. The internal
//! listener requires a login like every other: no port is open without one.

pub mod front;
pub mod gate;
pub mod limits;
pub mod mosquitto;
pub mod principals;
pub mod revocation;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use redwall_hub::Hub;
use rmqtt::context::ServerContext;
use rmqtt::hook::Type;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;

pub use limits::Limits;

/// Where the broker listens.
#[derive(Clone)]
pub struct BrokerOptions {
    /// Plain MQTT: loopback, and the instances' link when they are isolated.
    /// Port 0 on the first picks a free port; port 0 on a later one means
    /// the first's port, so every plain listener says the same thing.
    pub plain: Vec<SocketAddr>,
    /// MQTT over TLS, with this server configuration (its ALPN is cleared:
    /// MQTT clients offer none, or "mqtt").
    pub tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    pub limits: Limits,
}

/// The running broker.
#[derive(Clone)]
pub struct Broker {
    plain: Vec<SocketAddr>,
    tls: Option<SocketAddr>,
    front: front::Front,
    principals: Arc<principals::Principals>,
}

impl Broker {
    /// Binds every listener (failing at once when one cannot be bound),
    /// then runs the engine and the revocation watcher in the background.
    pub async fn start(hub: Hub, options: BrokerOptions) -> anyhow::Result<Broker> {
        let scx = ServerContext::new()
            .mqtt_max_sessions(options.limits.max_connections as isize)
            .build()
            .await;
        *scx.extends.shared_subscription_mut().await = Box::new(gate::RoundRobin::default());
        let principals = Arc::new(principals::Principals::default());
        let gate = gate::Gate {
            hub: hub.clone(),
            principals: principals.clone(),
            scx: scx.clone(),
        };
        let register = scx.extends.hook_mgr().register();
        for typ in [
            Type::ClientAuthenticate,
            Type::ClientDisconnected,
            Type::SessionTerminated,
            Type::ClientSubscribe,
            Type::ClientUnsubscribe,
            Type::ClientSubscribeCheckAcl,
            Type::MessagePublish,
            Type::MessagePublishCheckAcl,
            Type::MessageDelivered,
        ] {
            register.add(typ, Box::new(gate.clone())).await;
        }
        register.start().await;

        // The engine listens on loopback only, behind the front: every
        // client (plain, TLS, WebSocket) enters through `front.rs`.
        let internal = options
            .limits
            .apply(
                Builder::new()
                    .name("front")
                    .laddr(([127, 0, 0, 1], 0).into()),
            )
            .proxy_protocol(true)
            .bind()
            .and_then(|l| l.tcp())
            .context("the broker's internal listener")?;
        let front = front::Front::new(internal.local_addr()?, &options.limits);
        let server = MqttServer::new(scx.clone()).listener_by_id(internal, 0);
        let mut plain: Vec<SocketAddr> = Vec::new();
        for addr in &options.plain {
            let mut addr = *addr;
            if let (0, Some(first)) = (addr.port(), plain.first()) {
                addr.set_port(first.port());
            }
            plain.push(front.listen(addr, None).await?);
        }
        let tls = match &options.tls {
            Some((addr, config)) => Some(front.listen(*addr, Some(config.clone())).await?),
            None => None,
        };
        let server = server.build();
        tokio::spawn(async move {
            if let Err(e) = server.run().await {
                tracing::error!(error = %e, "the MQTT broker stopped");
            }
        });
        tokio::spawn(revocation::watch(hub.clone(), scx, principals.clone()));
        tracing::info!(?plain, ?tls, "the team MQTT broker is listening");
        Ok(Broker {
            plain,
            tls,
            front,
            principals,
        })
    }

    /// The plain listeners' bound addresses, in the order given.
    pub fn plain_addrs(&self) -> &[SocketAddr] {
        &self.plain
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// The way in for a client the hub accepted itself (the `/mqtt`
    /// WebSocket): bytes from `peer` go to the engine as one MQTT stream.
    pub fn front_door(&self) -> &front::Front {
        &self.front
    }

    /// Connections logged in now.
    pub fn connections(&self) -> usize {
        self.principals.len()
    }
}

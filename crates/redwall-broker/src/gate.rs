//! The broker's one gate: rmqtt's hooks, each turned into a call of the hub
//! (who is this CONNECT?) or of `redwall_policy::mqtt_acl` (may it publish
//! or subscribe here?), plus the team mount.
//!
//! A team sees a bare topic tree. Every filter a client subscribes with and
//! every topic it publishes to is mounted under its team's prefix before
//! the engine sees it, and every message it receives is unmounted, so two
//! teams' `plant/temp` are different topics and neither can name the
//! other's. The rules are decided on the bare topic, after the mount is
//! taken off again, so what an Owner writes is what is enforced.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytestring::ByteString;
use redwall_hub::metrics::BrokerMetrics;
use redwall_hub::{Hub, Origin};
use redwall_policy::mqtt_acl::{
    self, client_id_allowed, decide, mount, mount_prefix, unmount, Action, Effect,
};
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::{
    AuthResult, ConnectInfo, Id, LastWill, Publish, PublishAclResult, SubscribeAclResult,
};

use crate::principals::{Principal, Principals};

#[derive(Clone)]
pub struct Gate {
    pub hub: Hub,
    pub principals: Arc<Principals>,
    pub scx: rmqtt::context::ServerContext,
}

fn refuse(result: AuthResult) -> ReturnType {
    (false, Some(HookResult::AuthResult(result)))
}

fn will_topic<'a>(will: &'a LastWill<'_>) -> &'a str {
    match will {
        LastWill::V3(lw) => &lw.topic,
        LastWill::V5(lw) => &lw.topic,
    }
}

fn origin(addr: Option<SocketAddr>) -> Origin {
    Origin {
        ip: addr.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip()),
        user_agent: Some("mqtt".to_string()),
    }
}

impl Gate {
    fn metrics(&self) -> &BrokerMetrics {
        &self.hub.metrics.broker
    }

    /// A CONNECT: the username is a broker client's id, the password its
    /// secret; the client id must be that client's (see
    /// `mqtt_acl::client_id_allowed`), and a will may only name a topic the
    /// client may publish to (the engine publishes wills without asking).
    async fn authenticate(&self, info: &ConnectInfo) -> ReturnType {
        let id = info.id();
        let claimed = info.username().map(|u| u.to_string()).unwrap_or_default();
        let refused = |reason: &'static str, result: AuthResult| {
            let hub = self.hub.clone();
            let origin = origin(id.remote_addr);
            let claimed = claimed.clone();
            async move {
                hub.broker_connect_refused(&origin, reason, &claimed).await;
                refuse(result)
            }
        };
        let (Some(username), Some(password)) = (info.username(), info.password()) else {
            return refused("no_credentials", AuthResult::BadUsernameOrPassword).await;
        };
        let identity = match self.hub.broker_login(username, password).await {
            Ok(Some(identity)) => identity,
            Ok(None) => {
                return refused("wrong_credentials", AuthResult::BadUsernameOrPassword).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "a broker login could not be checked");
                return refuse(AuthResult::NotAuthorized);
            }
        };
        if !client_id_allowed(&identity.client_id, info.client_id())
            || self.held_by_another(id, &identity.client_id).await
        {
            return refused("foreign_client_id", AuthResult::NotAuthorized).await;
        }
        if let Some(will) = info.last_will() {
            let topic = will_topic(&will);
            if mqtt_acl::check_topic_name(topic).is_err()
                || topic.starts_with('$')
                || decide(&identity.rules, Action::Publish, topic) != Effect::Allow
            {
                return refused("will_not_allowed", AuthResult::NotAuthorized).await;
            }
        }
        self.principals.insert(
            id.clone(),
            Principal {
                prefix: mount_prefix(&identity.team_id),
                client_id: identity.client_id,
                team_id: identity.team_id,
                rules: identity.rules,
            },
        );
        BrokerMetrics::add(&self.metrics().connections_accepted);
        (
            false,
            Some(HookResult::AuthResult(AuthResult::Allow(false, None))),
        )
    }

    /// Whether another client holds a session (connected or stored) under
    /// this client id: taking it over would close that client's connection
    /// or hand over its subscriptions and queued messages.
    async fn held_by_another(&self, id: &Id, username: &str) -> bool {
        let entry = self.scx.extends.shared().await.entry(id.clone());
        entry
            .session()
            .is_some_and(|s| s.id.username.as_deref() != Some(username))
    }

    fn closed(&self, id: &Id) {
        if self.principals.remove(id) {
            BrokerMetrics::add(&self.metrics().connections_closed);
        }
    }

    /// The filter of a SUBSCRIBE or UNSUBSCRIBE, mounted. A connection the
    /// gate does not know is left alone here and refused by the rules.
    fn mount_filter(&self, id: &Id, filter: &str) -> ReturnType {
        match self.principals.get(id) {
            Some(p) => (
                true,
                Some(HookResult::TopicFilter(Some(ByteString::from(mount(
                    &p.prefix, filter,
                ))))),
            ),
            None => (true, None),
        }
    }

    /// The rules on a (mounted) subscription filter.
    fn check_subscribe(&self, id: &Id, mounted: &str, qos: rmqtt::types::QoS) -> ReturnType {
        let allowed = self.principals.get(id).is_some_and(|p| {
            unmount(&p.prefix, mounted)
                .is_some_and(|bare| decide(&p.rules, Action::Subscribe, bare) == Effect::Allow)
        });
        let result = if allowed {
            SubscribeAclResult::new_success(qos, None)
        } else {
            BrokerMetrics::add(&self.metrics().subscribe_denied);
            SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized)
        };
        (false, Some(HookResult::SubscribeAclResult(result)))
    }

    /// A publish (or a will) as it arrives: its topic mounted.
    fn mount_publish(&self, id: &Id, publish: &Publish) -> ReturnType {
        BrokerMetrics::add(&self.metrics().messages_received);
        let Some(p) = self.principals.get(id) else {
            return (true, None);
        };
        let mut mounted = publish.clone();
        mounted.topic = ByteString::from(mount(&p.prefix, &publish.topic));
        (true, Some(HookResult::Publish(mounted)))
    }

    /// The rules on a (mounted) publish topic. `$` topics belong to the
    /// broker: no client publishes there (MQTT 4.7.2).
    fn check_publish(&self, id: &Id, mounted: &str) -> ReturnType {
        let allowed = self.principals.get(id).is_some_and(|p| {
            unmount(&p.prefix, mounted).is_some_and(|bare| {
                !bare.starts_with('$') && decide(&p.rules, Action::Publish, bare) == Effect::Allow
            })
        });
        let result = if allowed {
            PublishAclResult::allow()
        } else {
            BrokerMetrics::add(&self.metrics().publish_denied);
            PublishAclResult::rejected(false, None)
        };
        (false, Some(HookResult::PublishAclResult(result)))
    }

    /// A message on its way to a subscriber: its topic as the subscriber's
    /// team names it.
    fn unmount_delivery(&self, id: &Id, publish: &Publish) -> ReturnType {
        BrokerMetrics::add(&self.metrics().messages_delivered);
        let Some(p) = self.principals.get(id) else {
            return (true, None);
        };
        let Some(bare) = unmount(&p.prefix, &publish.topic) else {
            // Never expected: subscriptions are always mounted.
            tracing::error!(client = %p.client_id, "a message outside the team's tree");
            return (true, None);
        };
        let mut delivered = publish.clone();
        delivered.topic = ByteString::from(bare);
        (true, Some(HookResult::Publish(delivered)))
    }
}

#[async_trait]
impl Handler for Gate {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(info) => self.authenticate(info).await,
            Parameter::ClientDisconnected(session, _) => {
                self.closed(&session.id);
                (true, acc)
            }
            Parameter::SessionTerminated(session, _) => {
                self.closed(&session.id);
                (true, acc)
            }
            Parameter::ClientSubscribe(session, sub) => {
                self.mount_filter(&session.id, &sub.topic_filter)
            }
            Parameter::ClientUnsubscribe(session, unsub) => {
                self.mount_filter(&session.id, &unsub.topic_filter)
            }
            Parameter::ClientSubscribeCheckAcl(session, sub) => {
                self.check_subscribe(&session.id, &sub.topic_filter, sub.opts.qos())
            }
            Parameter::MessagePublish(Some(session), _, publish) => {
                self.mount_publish(&session.id, publish)
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                self.check_publish(&session.id, &publish.topic)
            }
            Parameter::MessageDelivered(session, _, publish) => {
                self.unmount_delivery(&session.id, publish)
            }
            _ => (true, acc),
        }
    }
}

/// Shared subscriptions (`$share/{group}/{filter}`): each message goes to
/// one online member of the group, taken in turn. The group's filter is
/// mounted like any other, so a group never spans two teams.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

#[async_trait]
impl rmqtt::subscribe::SharedSubscription for RoundRobin {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        _scx: &rmqtt::context::ServerContext,
        _group: &rmqtt::types::SharedGroup,
        _publisher_id: &Id,
        _topic: &rmqtt::types::TopicName,
        ncs: &[(
            rmqtt::types::NodeId,
            rmqtt::types::ClientId,
            rmqtt::types::SubscriptionOptions,
            Option<Vec<rmqtt::types::SubscriptionIdentifier>>,
            Option<rmqtt::types::IsOnline>,
        )],
    ) -> Option<(usize, rmqtt::types::IsOnline)> {
        if ncs.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..ncs.len())
            .map(|i| (start + i) % ncs.len())
            .find(|&i| ncs[i].4 != Some(false))
            .map(|i| (i, true))
            .or(Some((start % ncs.len(), false)))
    }
}

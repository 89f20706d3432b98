//! The team MQTT broker's clients, as the hub keeps them: created, rotated
//! and revoked by Owners and Members, each with ordered topic rules
//! (`redwall_policy::mqtt_acl`), and each instance's own identity, rotated
//! at every start. The broker (and Mosquitto's manager) resolve a CONNECT
//! through [`Hub::broker_login`] and are told of every revocation through
//! [`Hub::broker_revocations`], so they can close its connections at once.
//!
//! A client's password is a random 256-bit token, shown once and stored as
//! its SHA-256 digest: checking one is a digest lookup, never a slow hash.

use redwall_crypto::token::{self, BROKER_CLIENT_PREFIX};
use redwall_crypto::Secret;
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::mqtt_acl::{
    check_rules, client_name, whole_team_tree, AclRule, MAX_CLIENTS_PER_TEAM,
};
use redwall_store::notify::{Listener, BROKER_REVOCATIONS};
use redwall_store::{BrokerClient, Instance, StoreError};

/// A revocation that closes every connection of the broker (announcements
/// may have been missed).
pub const EVERY_BROKER_CLIENT: &str = "*";
use serde_json::json;

use crate::audit::{Event, Who};
use crate::{Hub, HubError, HubResult};

/// A broker Redwall manages from outside its process (Mosquitto, through
/// its dynamic-security plugin), told of every change as it commits. It
/// gets a client's password only when the hub has it in the clear: at
/// creation and at each rotation.
#[async_trait::async_trait]
pub trait ExternalBroker: Send + Sync {
    /// The client exists with these rules, and this password when given.
    async fn upsert(&self, client: &BrokerClient, password: Option<&Secret>) -> anyhow::Result<()>;
    /// The client is gone: its connections close.
    async fn remove(&self, client_id: &str) -> anyhow::Result<()>;
}

/// Who a broker connection is, once its credentials were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerIdentity {
    pub client_id: String,
    pub team_id: String,
    /// Set for an instance's own identity.
    pub instance_id: Option<String>,
    pub rules: Vec<AclRule>,
}

fn client_event(c: &BrokerClient, event: AuditEvent, details: serde_json::Value) -> Event {
    Event::in_team(
        &c.team_id,
        event,
        format!("broker_client:{}", c.name),
        details,
    )
}

fn rules_json(rules: &[AclRule]) -> HubResult<String> {
    check_rules(rules)?;
    serde_json::to_string(rules).map_err(HubError::internal)
}

/// A client's stored rules; unreadable rules (never expected) allow nothing.
pub fn stored_rules(c: &BrokerClient) -> Vec<AclRule> {
    serde_json::from_str(&c.rules).unwrap_or_default()
}

fn instance_identity() -> HubError {
    HubError::conflict(
        "instance_identity",
        "an instance's own broker identity gets a new password at each start and goes with the instance; restart, stop or delete the instance instead",
    )
}

fn new_secret() -> (Secret, Vec<u8>) {
    let secret = token::new_token(BROKER_CLIENT_PREFIX);
    let digest = token::token_digest(secret.expose()).to_vec();
    (secret, digest)
}

impl Hub {
    /// Every team's clients (for reconciling an external broker).
    pub async fn all_broker_clients(&self) -> HubResult<Vec<BrokerClient>> {
        Ok(self.store.all_broker_clients().await?)
    }

    pub async fn broker_clients(&self, team_id: &str) -> HubResult<Vec<BrokerClient>> {
        Ok(self.store.list_broker_clients(team_id).await?)
    }

    /// Creates an external client (a device, a script) with `rules`; with
    /// none it may do nothing until an Owner or Member gives it some. The
    /// password is returned once.
    pub async fn create_broker_client(
        &self,
        who: Who<'_>,
        team_id: &str,
        creator_id: &str,
        name: &str,
        rules: Vec<AclRule>,
    ) -> HubResult<(Secret, BrokerClient)> {
        let name = client_name(name)?;
        let rules = rules_json(&rules)?;
        self.insert_broker_client(who, team_id, Some(creator_id), name, None, rules)
            .await
    }

    async fn insert_broker_client(
        &self,
        who: Who<'_>,
        team_id: &str,
        creator_id: Option<&str>,
        name: String,
        instance_id: Option<String>,
        rules: String,
    ) -> HubResult<(Secret, BrokerClient)> {
        if self.store.list_broker_clients(team_id).await?.len() >= MAX_CLIENTS_PER_TEAM {
            return Err(HubError::conflict(
                "too_many_clients",
                format!("a team may hold at most {MAX_CLIENTS_PER_TEAM} broker clients"),
            ));
        }
        let (secret, digest) = new_secret();
        let now = self.now();
        let client = BrokerClient {
            id: crate::ids::new_id(),
            team_id: team_id.to_string(),
            name,
            instance_id,
            secret_digest: digest,
            rules,
            created_by: creator_id.map(str::to_string),
            created_at: now,
            updated_at: now,
            disabled_at: None,
        };
        let mut tx = self.begin().await?;
        match tx.create_broker_client(&client).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(HubError::conflict(
                    "name_taken",
                    "the team has a broker client with this name",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let details = json!({ "client_id": client.id, "instance": client.instance_id });
        self.note(
            &mut tx,
            who,
            client_event(&client, AuditEvent::BrokerClientCreated, details),
        );
        self.commit(tx, 1).await?;
        self.tell_external(&client, Some(&secret)).await;
        Ok((secret, client))
    }

    /// The team's client with this id; another team's is `NotFound`.
    pub async fn broker_client(&self, team_id: &str, id: &str) -> HubResult<BrokerClient> {
        self.store
            .get_broker_client(team_id, id)
            .await?
            .ok_or(HubError::NotFound)
    }

    /// A new password for the client; the old one stops working now, and
    /// its connections are closed.
    pub async fn rotate_broker_client(
        &self,
        who: Who<'_>,
        team_id: &str,
        id: &str,
    ) -> HubResult<Secret> {
        self.rotate(who, team_id, id, false).await
    }

    /// The rotation itself; `by_redwall` for an instance's own identity at
    /// its start (nobody else rotates that: the instance could not log in
    /// until its next start).
    async fn rotate(
        &self,
        who: Who<'_>,
        team_id: &str,
        id: &str,
        by_redwall: bool,
    ) -> HubResult<Secret> {
        let client = self.broker_client(team_id, id).await?;
        if client.instance_id.is_some() && !by_redwall {
            return Err(instance_identity());
        }
        let (secret, digest) = new_secret();
        let mut tx = self.begin().await?;
        if !tx
            .set_broker_secret(team_id, id, &digest, self.now())
            .await?
        {
            return Err(HubError::NotFound);
        }
        self.note(
            &mut tx,
            who,
            client_event(
                &client,
                AuditEvent::BrokerClientRotated,
                json!({ "client_id": id }),
            ),
        );
        self.commit(tx, 1).await?;
        self.announce_revocation(id).await;
        self.tell_external(&client, Some(&secret)).await;
        Ok(secret)
    }

    /// Replaces the client's ordered rules; open connections are closed, so
    /// they come back under the new rules. An instance's own identity takes
    /// new rules only from a caller holding `broker:instance_rules:write`
    /// (`may_rule_instances`: Owners): its flows are written by Members.
    pub async fn set_broker_rules(
        &self,
        who: Who<'_>,
        team_id: &str,
        id: &str,
        rules: Vec<AclRule>,
        may_rule_instances: bool,
    ) -> HubResult<BrokerClient> {
        let before = self.broker_client(team_id, id).await?;
        if before.instance_id.is_some() && !may_rule_instances {
            return Err(HubError::Refused {
                kind: crate::Refused::Forbidden,
                code: "forbidden",
                message: "only an Owner narrows or widens an instance's own broker rules".into(),
            });
        }
        let json = rules_json(&rules)?;
        let mut tx = self.begin().await?;
        if !tx.set_broker_rules(team_id, id, &json, self.now()).await? {
            return Err(HubError::NotFound);
        }
        let details = json!({ "client_id": id, "before": stored_rules(&before), "after": rules });
        self.note(
            &mut tx,
            who,
            client_event(&before, AuditEvent::BrokerRulesChanged, details),
        );
        self.commit(tx, 1).await?;
        self.announce_revocation(id).await;
        let after = self.broker_client(team_id, id).await?;
        self.tell_external(&after, None).await;
        Ok(after)
    }

    /// Disables the client (kept with its rules; refused at login, its
    /// connections closed) or enables it again. An instance's identity
    /// follows its instance instead.
    pub async fn set_broker_client_enabled(
        &self,
        who: Who<'_>,
        team_id: &str,
        id: &str,
        enabled: bool,
    ) -> HubResult<BrokerClient> {
        let client = self.broker_client(team_id, id).await?;
        if client.instance_id.is_some() {
            return Err(instance_identity());
        }
        if client.disabled_at.is_none() == enabled {
            return Ok(client); // already so: nothing to record
        }
        let now = self.now();
        let mut tx = self.begin().await?;
        let disabled_at = (!enabled).then_some(now);
        if !tx
            .set_broker_disabled(team_id, id, disabled_at, now)
            .await?
        {
            return Err(HubError::NotFound);
        }
        let event = if enabled {
            AuditEvent::BrokerClientEnabled
        } else {
            AuditEvent::BrokerClientDisabled
        };
        self.note(
            &mut tx,
            who,
            client_event(&client, event, json!({ "client_id": id })),
        );
        self.commit(tx, 1).await?;
        if !enabled {
            self.announce_revocation(id).await;
        }
        let after = self.broker_client(team_id, id).await?;
        self.tell_external(&after, None).await;
        Ok(after)
    }

    /// Deletes the client; its connections are closed.
    pub async fn revoke_broker_client(
        &self,
        who: Who<'_>,
        team_id: &str,
        id: &str,
    ) -> HubResult<()> {
        if self.broker_client(team_id, id).await?.instance_id.is_some() {
            return Err(instance_identity());
        }
        let mut tx = self.begin().await?;
        let client = tx
            .delete_broker_client(team_id, id)
            .await?
            .ok_or(HubError::NotFound)?;
        self.note(
            &mut tx,
            who,
            client_event(
                &client,
                AuditEvent::BrokerClientRevoked,
                json!({ "client_id": id }),
            ),
        );
        self.commit(tx, 1).await?;
        self.announce_revocation(id).await;
        self.tell_external_removed(id).await;
        Ok(())
    }

    /// The instance's own broker identity, with a fresh password: created
    /// with the whole team tree the first time, rotated at every start
    /// after. Returns the username and password the instance gets.
    pub async fn instance_broker_identity(
        &self,
        who: Who<'_>,
        instance: &Instance,
    ) -> HubResult<(String, Secret)> {
        match self.instance_broker_client(instance).await? {
            Some(c) => {
                let secret = self.rotate(who, &instance.team_id, &c.id, true).await?;
                Ok((c.id, secret))
            }
            None => {
                let rules = rules_json(&whole_team_tree())?;
                let (secret, c) = self
                    .insert_broker_client(
                        who,
                        &instance.team_id,
                        None,
                        format!("instance:{}", instance.name),
                        Some(instance.id.clone()),
                        rules,
                    )
                    .await?;
                Ok((c.id, secret))
            }
        }
    }

    /// In `tx`: every external client that `user_id` created (in `team_id`,
    /// or in every team) gets a new password that nobody is shown: the
    /// person leaving saw the old one. Returns the clients with their new
    /// passwords, for [`Hub::after_creator_left`] once `tx` committed.
    pub(crate) async fn rotate_created_by(
        &self,
        tx: &mut redwall_store::Change,
        who: Who<'_>,
        team_id: Option<&str>,
        user_id: &str,
    ) -> HubResult<Vec<(BrokerClient, Secret)>> {
        let clients = match team_id {
            Some(team) => self.store.list_broker_clients(team).await?,
            None => self.store.all_broker_clients().await?,
        };
        let mut rotated = Vec::new();
        for client in clients
            .into_iter()
            .filter(|c| c.created_by.as_deref() == Some(user_id))
        {
            let (secret, digest) = new_secret();
            if tx
                .set_broker_secret(&client.team_id, &client.id, &digest, self.now())
                .await?
            {
                let details = json!({ "client_id": client.id, "reason": "creator_left" });
                self.note(
                    tx,
                    who,
                    client_event(&client, AuditEvent::BrokerClientRotated, details),
                );
                rotated.push((client, secret));
            }
        }
        Ok(rotated)
    }

    /// After the change that rotated them committed: their connections
    /// close, here and on every hub, and an external broker learns the
    /// new passwords.
    pub(crate) async fn after_creator_left(&self, rotated: Vec<(BrokerClient, Secret)>) {
        for (client, secret) in rotated {
            self.announce_revocation(&client.id).await;
            self.tell_external(&client, Some(&secret)).await;
        }
    }

    /// After a team's deletion committed (its clients went with it): their
    /// connections close.
    pub(crate) async fn after_clients_deleted(&self, clients: Vec<BrokerClient>) {
        for client in clients {
            self.announce_revocation(&client.id).await;
            self.tell_external_removed(&client.id).await;
        }
    }

    /// The instance's own broker client, once it started with a broker.
    pub(crate) async fn instance_broker_client(
        &self,
        instance: &Instance,
    ) -> HubResult<Option<BrokerClient>> {
        Ok(self
            .store
            .list_broker_clients(&instance.team_id)
            .await?
            .into_iter()
            .find(|c| c.instance_id.as_deref() == Some(instance.id.as_str())))
    }

    /// Resolves a CONNECT: `username` is the client's id, `password` its
    /// secret. `None` for anything else, with no hint of which part was
    /// wrong.
    pub async fn broker_login(
        &self,
        username: &str,
        password: &[u8],
    ) -> HubResult<Option<BrokerIdentity>> {
        let Some(valid) = std::str::from_utf8(password)
            .ok()
            .and_then(|p| token::parse_token(BROKER_CLIENT_PREFIX, p))
        else {
            return Ok(None);
        };
        let digest = token::token_digest(valid);
        let Some(client) = self.store.broker_client_by_digest(&digest).await? else {
            return Ok(None);
        };
        if client.disabled_at.is_some() {
            return Ok(None);
        }
        if !redwall_crypto::constant_time_eq(client.id.as_bytes(), username.as_bytes()) {
            return Ok(None);
        }
        Ok(Some(BrokerIdentity {
            rules: stored_rules(&client),
            client_id: client.id,
            team_id: client.team_id,
            instance_id: client.instance_id,
        }))
    }

    /// Records a refused CONNECT (wrong credentials, a client id that is
    /// not the client's), aggregated per source and minute like every
    /// refusal. `claimed` is the username as sent, cut to printable text.
    pub async fn broker_connect_refused(
        &self,
        origin: &crate::Origin,
        reason: &'static str,
        claimed: &str,
    ) {
        crate::metrics::BrokerMetrics::add(&self.metrics.broker.connections_refused);
        let claimed: String = claimed
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let refusal = crate::refusals::Refusal {
            event: AuditEvent::BrokerConnectRefused,
            reason,
            team_id: None,
            target: Some(format!("broker_client:{claimed}")),
            actor: None,
            details: serde_json::Value::Null,
        };
        if let Err(e) = self.record_refusal(origin, refusal).await {
            tracing::warn!(error = %e, "a refused broker connection could not be recorded");
        }
    }

    /// Client ids whose connections must close now (rotated, re-ruled or
    /// revoked), for the broker of this process.
    pub fn broker_revocations(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.revocations.subscribe()
    }

    /// Sets the external broker every change is told to (once, at start).
    pub fn manage_external_broker(&self, broker: std::sync::Arc<dyn ExternalBroker>) {
        let _ = self.external_broker.set(broker);
    }

    async fn tell_external(&self, client: &BrokerClient, password: Option<&Secret>) {
        if let Some(broker) = self.external_broker.get() {
            if let Err(e) = broker.upsert(client, password).await {
                // Committed here; the broker is reconciled when its link
                // returns, and a password it missed is refused until the
                // next rotation (said in the log).
                tracing::error!(client = %client.id, error = format!("{e:#}"), "the external broker was not updated");
            }
        }
    }

    pub(crate) async fn tell_external_removed(&self, client_id: &str) {
        if let Some(broker) = self.external_broker.get() {
            if let Err(e) = broker.remove(client_id).await {
                tracing::error!(client = %client_id, error = format!("{e:#}"), "the external broker still has a revoked client; it is removed when its link returns");
            }
        }
    }

    /// Tells this process's broker, and (through PostgreSQL) every other
    /// hub's, to close the client's connections. Returns once the other
    /// hubs were told, so an answer to the API means it is under way
    /// everywhere.
    pub(crate) async fn announce_revocation(&self, client_id: &str) {
        // No broker listening is fine: nothing is connected then.
        let _ = self.revocations.send(client_id.to_string());
        let payload = format!("{}:{client_id}", self.node);
        if let Err(e) = self.store.notify(BROKER_REVOCATIONS, &payload).await {
            // The change is committed; the other hubs' brokers close every
            // connection when they lose their link to the database, and a
            // revoked or rotated password is refused at the next login.
            tracing::error!(error = %e, "other hubs could not be told of a broker revocation");
        }
    }

    /// Subscribes to the revocations the other hubs on this database
    /// announce (`None` on SQLite, where this process is the only one).
    /// Awaited before the broker accepts anyone: a client accepted before
    /// would miss its own revocation announced meanwhile, and stay
    /// connected.
    pub async fn listen_for_revocations(&self) -> HubResult<Option<Listener>> {
        Ok(self.store.listen(BROKER_REVOCATIONS).await?)
    }

    /// Relays the revocations `listener` hears into this process's broker.
    /// When the link to the database drops, announcements may have been
    /// missed, so the broker is told to close every connection
    /// ([`EVERY_BROKER_CLIENT`]); clients log in again.
    pub async fn relay_revocations(&self, mut listener: Listener) {
        loop {
            loop {
                match listener.next().await {
                    Ok(Some(payload)) => {
                        if let Some((node, client_id)) = payload.split_once(':') {
                            if node != &*self.node {
                                let _ = self.revocations.send(client_id.to_string());
                            }
                        }
                    }
                    Ok(None) => {
                        let _ = self.revocations.send(EVERY_BROKER_CLIENT.to_string());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the link for other hubs' broker revocations broke");
                        let _ = self.revocations.send(EVERY_BROKER_CLIENT.to_string());
                        break;
                    }
                }
            }
            match self.store.listen_again(BROKER_REVOCATIONS).await {
                Some(again) => listener = again,
                None => return,
            }
        }
    }
}

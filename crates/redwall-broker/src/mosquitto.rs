//! Mosquitto 2 at scale: instead of the embedded broker, Redwall manages a
//! Mosquitto through its dynamic-security plugin, with the same clients and
//! the same ordered rules.
//!
//! Redwall logs in to Mosquitto as the plugin's admin and sends JSON
//! commands to `$CONTROL/dynamic-security/v1` (answers on `.../response`,
//! matched by `correlationData`). Each broker client is a Mosquitto client
//! named by its id, with one role `rw-{id}` holding its rules as ACLs:
//! rule `i` of `n` gets priority `n - i` (Mosquitto checks higher first), a
//! publish rule becomes `publishClientSend`, a subscribe rule both
//! `subscribePattern` and `publishClientReceive` (so what a client receives
//! is checked topic by topic, like the embedded broker's covering rule).
//! Every other access is denied by default.
//!
//! Mosquitto has no mount per client, so a team's topics carry the team's
//! prefix in the clear (`t/{team}/...`, `REDWALL_MQTT_TOPIC_PREFIX` for
//! instances); the rules name them without it, as everywhere, and the ACLs
//! add it. A team can still never reach another team's prefix.
//!
//! Revocation: deleting or disabling a client makes Mosquitto disconnect it
//! at once; new rules disable and enable the client to close its
//! connections. When the admin link (re)connects, Mosquitto is reconciled
//! with the database: roles rewritten, missing clients created with an
//! unusable password (rotate them to use them), clients Redwall no longer
//! has deleted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use redwall_hub::broker::{stored_rules, ExternalBroker};
use redwall_hub::Hub;
use redwall_policy::mqtt_acl::{client_id_owner, mount, mount_prefix, Actions, Effect};
use redwall_store::BrokerClient;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const CONTROL: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE: &str = "$CONTROL/dynamic-security/v1/response";
/// How long Mosquitto may take to answer a batch of commands.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// How to reach Mosquitto as the dynamic-security admin.
#[derive(Clone)]
pub struct MosquittoOptions {
    pub host: String,
    pub port: u16,
    pub admin_username: String,
    pub admin_password: redwall_crypto::Secret,
    /// PEM CA certificate to verify Mosquitto's TLS listener; plain MQTT
    /// (loopback only, checked by the configuration) when `None`.
    pub ca_pem: Option<Vec<u8>>,
}

/// Waiters for answers, by correlation id; each gets its whole response.
type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

pub struct Mosquitto {
    client: AsyncClient,
    pending: Pending,
    next: AtomicU64,
}

fn role(client_id: &str) -> String {
    format!("rw-{client_id}")
}

/// The role's ACLs for a client's ordered rules, under its team's prefix.
pub fn acls(client: &BrokerClient) -> Vec<Value> {
    let rules = stored_rules(client);
    let prefix = mount_prefix(&client.team_id);
    let n = rules.len();
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let priority = n - i;
        let allow = rule.effect == Effect::Allow;
        let topic = mount(&prefix, &rule.filter);
        let types: &[&str] = match rule.actions {
            Actions::Publish => &["publishClientSend"],
            Actions::Subscribe => &["subscribePattern", "publishClientReceive"],
            Actions::Both => &[
                "publishClientSend",
                "subscribePattern",
                "publishClientReceive",
            ],
        };
        for acltype in types {
            out.push(
                json!({"acltype": acltype, "topic": topic, "priority": priority, "allow": allow}),
            );
        }
    }
    out
}

impl Mosquitto {
    /// Connects as the admin and keeps the link up (reconciling Mosquitto
    /// with the database at every connection), in the background.
    pub async fn connect(hub: Hub, options: MosquittoOptions) -> anyhow::Result<Arc<Mosquitto>> {
        let mut mqtt = MqttOptions::new(
            format!("redwall-manager-{}", redwall_hub::ids::new_id()),
            options.host.clone(),
            options.port,
        );
        mqtt.set_credentials(
            options.admin_username.clone(),
            options.admin_password.expose().to_string(),
        );
        mqtt.set_keep_alive(Duration::from_secs(30));
        mqtt.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        if let Some(ca) = &options.ca_pem {
            mqtt.set_transport(Transport::Tls(rumqttc::TlsConfiguration::Simple {
                ca: ca.clone(),
                alpn: None,
                client_auth: None,
            }));
        }
        let (client, mut events) = AsyncClient::new(mqtt, 256);
        let manager = Arc::new(Mosquitto {
            client,
            pending: Arc::default(),
            next: AtomicU64::new(1),
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        let mut ready = Some(ready_tx);
        let me = manager.clone();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let (me, hub) = (me.clone(), hub.clone());
                        let ready = ready.take();
                        tokio::spawn(async move {
                            let result = me.on_connected(&hub).await;
                            if let Err(e) = &result {
                                tracing::error!(
                                    error = format!("{e:#}"),
                                    "reconciling Mosquitto failed"
                                );
                            }
                            if let Some(ready) = ready {
                                let _ = ready.send(result);
                            }
                        });
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == RESPONSE => {
                        me.answered(&p.payload);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the link to Mosquitto broke; retrying");
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Err(anyhow!("cannot reach Mosquitto: {e}")));
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(15), ready_rx)
            .await
            .context("Mosquitto did not answer within 15 s")?
            .context("the link to Mosquitto ended")??;
        Ok(manager)
    }

    async fn on_connected(&self, hub: &Hub) -> anyhow::Result<()> {
        self.client
            .subscribe(RESPONSE, QoS::AtLeastOnce)
            .await
            .context("subscribing to the dynamic-security answers")?;
        // The subscription must be in place before the first command.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.reconcile(hub).await
    }

    fn answered(&self, payload: &[u8]) {
        let Ok(answer) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        let responses = answer["responses"].as_array().cloned().unwrap_or_default();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for r in responses {
            let Some(id) = r["correlationData"].as_str() else {
                continue;
            };
            if let Some(waiter) = pending.remove(id) {
                let _ = waiter.send(r.clone());
            }
        }
    }

    /// Sends the commands in one message; each one's response.
    async fn run(&self, commands: Vec<Value>) -> anyhow::Result<Vec<Value>> {
        let mut waiters = Vec::new();
        let mut batch = Vec::new();
        for mut command in commands {
            let id = self.next.fetch_add(1, Ordering::Relaxed).to_string();
            command["correlationData"] = Value::String(id.clone());
            let (tx, rx) = oneshot::channel();
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, tx);
            waiters.push(rx);
            batch.push(command);
        }
        let body = serde_json::to_vec(&json!({ "commands": batch }))?;
        self.client
            .publish(CONTROL, QoS::AtLeastOnce, false, body)
            .await
            .context("sending to Mosquitto")?;
        let mut out = Vec::new();
        for waiter in waiters {
            let answer = tokio::time::timeout(ANSWER_WITHIN, waiter)
                .await
                .map_err(|_| anyhow!("Mosquitto did not answer within 5 s"))?
                .map_err(|_| anyhow!("the link to Mosquitto ended"))?;
            out.push(answer);
        }
        Ok(out)
    }

    async fn run_all(&self, commands: Vec<Value>, tolerated: &[&str]) -> anyhow::Result<()> {
        let names: Vec<String> = commands
            .iter()
            .map(|c| c["command"].as_str().unwrap_or("?").to_string())
            .collect();
        for (name, answer) in names.iter().zip(self.run(commands).await?) {
            if let Some(e) = answer["error"].as_str() {
                if !tolerated.iter().any(|t| e.contains(t)) {
                    return Err(anyhow!("Mosquitto refused {name}: {e}"));
                }
            }
        }
        Ok(())
    }

    /// The client's role, rewritten from its stored rules (deleting a role
    /// takes it from its client: it is given back by [`Self::give_role`]).
    fn role_commands(client: &BrokerClient) -> Vec<Value> {
        vec![
            json!({"command": "deleteRole", "rolename": role(&client.id)}),
            json!({"command": "createRole", "rolename": role(&client.id), "acls": acls(client)}),
        ]
    }

    fn give_role(client: &BrokerClient) -> Value {
        json!({"command": "addClientRole", "username": client.id, "rolename": role(&client.id)})
    }

    async fn reconcile(&self, hub: &Hub) -> anyhow::Result<()> {
        self.run_all(
            vec![json!({"command": "setDefaultACLAccess", "acls": [
                {"acltype": "publishClientSend", "allow": false},
                {"acltype": "publishClientReceive", "allow": false},
                {"acltype": "subscribe", "allow": false},
                {"acltype": "unsubscribe", "allow": true},
            ]})],
            &[],
        )
        .await?;
        let clients = hub.all_broker_clients().await?;
        let known: std::collections::HashSet<&str> =
            clients.iter().map(|c| c.id.as_str()).collect();
        // Clients Redwall no longer has (ids only: never the admin).
        let names = self.list_clients().await?;
        let stale: Vec<Value> = names
            .iter()
            .filter(|n| client_id_owner(n) == Some(n.as_str()) && !known.contains(n.as_str()))
            .flat_map(|n| {
                [
                    json!({"command": "deleteClient", "username": n}),
                    json!({"command": "deleteRole", "rolename": role(n)}),
                ]
            })
            .collect();
        if !stale.is_empty() {
            self.run_all(stale, &["not found"]).await?;
        }
        for client in &clients {
            let mut commands = Self::role_commands(client);
            if !names.iter().any(|n| n == &client.id) {
                tracing::warn!(client = %client.id, "Mosquitto did not know this broker client; it was created with an unusable password: rotate it to use it");
                let unusable = redwall_hub::ids::new_id() + &redwall_hub::ids::new_id();
                commands.push(json!({"command": "createClient", "username": client.id,
                    "password": unusable, "roles": [{"rolename": role(&client.id)}]}));
            }
            commands.push(Self::give_role(client));
            let state = if client.disabled_at.is_some() {
                "disableClient"
            } else {
                "enableClient"
            };
            commands.push(json!({"command": state, "username": client.id}));
            self.run_all(commands, &["not found", "already"]).await?;
        }
        tracing::info!(
            clients = clients.len(),
            "Mosquitto reconciled with Redwall's broker clients"
        );
        Ok(())
    }

    async fn list_clients(&self) -> anyhow::Result<Vec<String>> {
        let answer = self
            .run(vec![
                json!({"command": "listClients", "verbose": false, "count": -1}),
            ])
            .await?
            .pop()
            .unwrap_or_default();
        if let Some(e) = answer["error"].as_str() {
            return Err(anyhow!("Mosquitto refused listClients: {e}"));
        }
        Ok(answer["data"]["clients"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().or_else(|| c["username"].as_str()))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl ExternalBroker for Mosquitto {
    async fn upsert(
        &self,
        client: &BrokerClient,
        password: Option<&redwall_crypto::Secret>,
    ) -> anyhow::Result<()> {
        let mut commands = Self::role_commands(client);
        match password {
            Some(password) => {
                // Creating fails when it exists; setting the password then
                // applies (and closes the old password's connections).
                commands.push(json!({"command": "createClient", "username": client.id,
                    "password": password.expose(), "roles": [{"rolename": role(&client.id)}]}));
                commands.push(Self::give_role(client));
                commands.push(
                    json!({"command": "setClientPassword", "username": client.id,
                    "password": password.expose()}),
                );
                commands.push(json!({"command": "disableClient", "username": client.id}));
                commands.push(json!({"command": "enableClient", "username": client.id}));
            }
            None => {
                // New rules: close its connections so they come back under them.
                commands.push(Self::give_role(client));
                commands.push(json!({"command": "disableClient", "username": client.id}));
                commands.push(json!({"command": "enableClient", "username": client.id}));
            }
        }
        if client.disabled_at.is_some() {
            // Disabled: refused at login, connections closed, until enabled.
            commands.retain(|c| c["command"] != "enableClient");
        }
        self.run_all(commands, &["not found", "already"]).await
    }

    async fn remove(&self, client_id: &str) -> anyhow::Result<()> {
        self.run_all(
            vec![
                json!({"command": "deleteClient", "username": client_id}),
                json!({"command": "deleteRole", "rolename": role(client_id)}),
            ],
            &["not found"],
        )
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rules_become_prioritised_acls_under_the_team_prefix() {
        let client = BrokerClient {
            id: "0123456789abcdef0123456789abcdef".into(),
            team_id: "team1".into(),
            name: "c".into(),
            instance_id: None,
            secret_digest: vec![0; 32],
            rules: r#"[{"effect":"deny","actions":"both","filter":"plant/secret/#"},
                       {"effect":"allow","actions":"publish","filter":"plant/#"},
                       {"effect":"allow","actions":"subscribe","filter":"+/temp"}]"#
                .into(),
            created_by: None,
            created_at: 0,
            updated_at: 0,
            disabled_at: None,
        };
        let seen: Vec<(String, String, u64, bool)> = acls(&client)
            .iter()
            .map(|a| {
                (
                    a["acltype"].as_str().unwrap().to_string(),
                    a["topic"].as_str().unwrap().to_string(),
                    a["priority"].as_u64().unwrap(),
                    a["allow"].as_bool().unwrap(),
                )
            })
            .collect();
        let t = |s: &str| s.to_string();
        assert_eq!(
            seen,
            vec![
                (
                    t("publishClientSend"),
                    t("t/team1/plant/secret/#"),
                    3,
                    false
                ),
                (t("subscribePattern"), t("t/team1/plant/secret/#"), 3, false),
                (
                    t("publishClientReceive"),
                    t("t/team1/plant/secret/#"),
                    3,
                    false
                ),
                (t("publishClientSend"), t("t/team1/plant/#"), 2, true),
                (t("subscribePattern"), t("t/team1/+/temp"), 1, true),
                (t("publishClientReceive"), t("t/team1/+/temp"), 1, true),
            ]
        );
        // Unreadable rules (never expected) allow nothing.
        let broken = BrokerClient {
            rules: "not json".into(),
            ..client
        };
        assert!(acls(&broken).is_empty());
    }
}

//! The hub's instance operations. Each validates first, then stores its
//! change with the audit entry in one transaction; starting and stopping
//! happen under the instance's control lock, which is held until the
//! desired state is stored, so the state stored is the one last acted on.

use std::collections::BTreeSet;
use std::sync::Arc;

use redwall_policy::audit_event::AuditEvent;
use redwall_policy::egress::{self, EgressRule, EgressRuleInput};
use redwall_policy::instance_rules::{
    env_name, env_value_fits, instance_name, MAX_ENV_VALUE_BYTES, MAX_ENV_VARS,
    MAX_INSTANCES_PER_TEAM,
};
use redwall_store::{EnvEntry, Instance, StoreError};
use serde_json::json;

use crate::audit::{Event, Who};
use crate::instances::keys::{env_aad, new_sealed_keys, open, seal};
use crate::instances::options::InstanceOptions;
use crate::instances::runner::stored_egress;
use crate::instances::InstanceManager;
use crate::{Hub, HubError, HubResult};

/// What to do with an instance's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Start,
    Stop,
    Restart,
}

/// One variable of an instance's environment, as asked for.
#[derive(Debug)]
pub struct EnvInput {
    pub name: String,
    /// The new value; `None` keeps the stored one (how a secret is kept
    /// without sending it again).
    pub value: Option<String>,
    pub secret: bool,
}

fn instance_event(i: &Instance, event: AuditEvent, details: serde_json::Value) -> Event {
    Event::in_team(&i.team_id, event, format!("instance:{}", i.name), details)
}

fn name_taken() -> HubError {
    HubError::conflict("name_taken", "an instance with this name exists")
}

impl Hub {
    /// The instance manager; offline commands have none.
    pub fn manager(&self) -> HubResult<&Arc<InstanceManager>> {
        self.instance_manager().ok_or_else(|| {
            HubError::unavailable(
                "instances_unavailable",
                "this Redwall process does not run instances",
            )
        })
    }

    /// The team's instance named by id or name; another team's is
    /// `NotFound`, like a missing one.
    pub async fn team_instance(&self, team_id: &str, id_or_name: &str) -> HubResult<Instance> {
        self.store
            .get_team_instance(team_id, id_or_name)
            .await?
            .ok_or(HubError::NotFound)
    }

    pub async fn team_instances(&self, team_id: &str) -> HubResult<Vec<Instance>> {
        Ok(self.store.list_team_instances(team_id).await?)
    }

    /// A free port of the configured range: stored for no instance, and
    /// nothing else listens on it.
    async fn free_port(&self, manager: &InstanceManager) -> HubResult<u16> {
        let used = self.store.used_instance_ports().await?;
        let (min, max) = manager.port_range();
        (min..=max)
            .find(|p| !used.contains(p) && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .ok_or_else(|| {
                HubError::conflict(
                    "no_free_port",
                    "every port of instances.port_min..port_max is taken",
                )
            })
    }

    /// Creates an instance in the team, with fresh sealed keys and a port of
    /// its own, and starts it if asked. One that cannot start is deleted
    /// again (both audited), so the caller may simply retry.
    pub async fn create_instance(
        &self,
        who: Who<'_>,
        team_id: &str,
        creator_id: &str,
        name: &str,
        start: bool,
    ) -> HubResult<Instance> {
        self.create_instance_on(who, team_id, creator_id, name, start, None)
            .await
    }

    /// Creates an instance, run by this hub or, with `agent`, by that
    /// agent's Node-RED (never started here; see `on_agents`).
    pub(crate) async fn create_instance_on(
        &self,
        who: Who<'_>,
        team_id: &str,
        creator_id: &str,
        name: &str,
        start: bool,
        agent: Option<&redwall_store::Agent>,
    ) -> HubResult<Instance> {
        instance_name(name)?;
        let start = start && agent.is_none();
        let manager = self.manager()?;
        if self.store.count_team_instances(team_id).await? >= MAX_INSTANCES_PER_TEAM {
            return Err(HubError::conflict(
                "too_many_instances",
                format!("a team may have at most {MAX_INSTANCES_PER_TEAM} instances"),
            ));
        }
        if self.store.get_instance_by_name(name).await?.is_some() {
            return Err(name_taken());
        }
        if start && manager.adopts_runtime() {
            // A missing or unusable configured Node-RED is reported before
            // anything is stored. One that npm installs is not waited for:
            // the instance answers `installing` and starts when npm is done.
            manager.runtime().await?;
        }
        let version = self.key_version().await?;
        let now = self.now();
        let id = crate::ids::new_id();
        let mut instance = Instance {
            id: id.clone(),
            name: name.to_string(),
            team_id: team_id.to_string(),
            port: 0,
            desired_state: if start { "running" } else { "stopped" }.into(),
            options: serde_json::to_string(&InstanceOptions::default()).unwrap_or_default(),
            routes: "[]".into(),
            egress: "[]".into(),
            secrets: new_sealed_keys(&self.keyring, version, &id),
            created_by: Some(creator_id.to_string()),
            created_at: now,
            updated_at: now,
            running_snapshot_id: None,
            agent_id: agent.map(|a| a.id.clone()),
        };
        // Two creations may pick the same free port, or the same name; the
        // unique indexes refuse the second. SQLite does not say which index,
        // so the name is looked up: taken, it is the answer; free, the port
        // was taken and the next one is tried.
        let mut attempts = 0;
        loop {
            instance.port = self.free_port(manager).await?;
            let mut tx = self.begin().await?;
            match tx.create_instance(&instance).await {
                Ok(()) => {
                    let details = match agent {
                        None => json!({ "name": instance.name, "port": instance.port }),
                        Some(a) => json!({ "name": instance.name, "agent": a.name }),
                    };
                    self.note(
                        &mut tx,
                        who,
                        instance_event(&instance, AuditEvent::InstanceCreated, details),
                    );
                    self.commit(tx, 1).await?;
                    break;
                }
                Err(StoreError::Conflict(_)) => {
                    drop(tx);
                    if self.store.get_instance_by_name(name).await?.is_some() {
                        return Err(name_taken());
                    }
                    if let Some(a) = agent {
                        if self.store.get_instance_of_agent(&a.id).await?.is_some() {
                            return Err(super::on_agents::agent_taken(&a.name));
                        }
                    }
                    if attempts >= 5 {
                        return Err(HubError::conflict(
                            "no_free_port",
                            "no free port could be claimed; try again",
                        ));
                    }
                    attempts += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if start {
            let held = manager.control(&instance.id).await;
            if let Err(e) = manager.start(self, &instance, &held).await {
                // Nothing half-made stays behind.
                let mut tx = self.begin().await?;
                tx.delete_instance(&instance.id).await?;
                let details = json!({ "name": instance.name, "reason": e.to_string() });
                self.note(
                    &mut tx,
                    who,
                    instance_event(&instance, AuditEvent::InstanceDeleted, details),
                );
                self.commit(tx, 1).await?;
                manager.remove_files(&instance.id);
                return Err(e);
            }
            self.record_event(
                who,
                instance_event(&instance, AuditEvent::InstanceStarted, json!({})),
            )
            .await?;
        }
        Ok(instance)
    }

    /// Stops the instance and deletes it with its files, environment and
    /// keys. `confirm_name` must repeat its name.
    pub async fn delete_instance(
        &self,
        who: Who<'_>,
        instance: &Instance,
        confirm_name: &str,
    ) -> HubResult<()> {
        if confirm_name != instance.name {
            return Err(HubError::invalid(
                "confirmation_mismatch",
                "repeat the instance's exact name in confirm_name to delete it",
            ));
        }
        let manager = self.manager()?;
        let held = manager.control(&instance.id).await;
        manager.stop(&instance.id, &held).await?;
        // Its broker identity goes with it (the store cascades); whatever
        // still speaks with it is disconnected after the commit.
        let broker_identity = self.instance_broker_client(instance).await?;
        let mut tx = self.begin().await?;
        tx.delete_instance(&instance.id).await?;
        let details = json!({ "name": instance.name });
        self.note(
            &mut tx,
            who,
            instance_event(instance, AuditEvent::InstanceDeleted, details),
        );
        self.commit(tx, 1).await?;
        if let Some(client) = broker_identity {
            self.announce_revocation(&client.id).await;
            self.tell_external_removed(&client.id).await;
        }
        self.caches.forget_instance(&instance.name);
        manager.remove_files(&instance.id);
        if let Some(agent_id) = &instance.agent_id {
            self.announce_agent_event(crate::agents::AgentEvent::Hosting(agent_id.clone()))
                .await;
        }
        Ok(())
    }

    /// Starts, stops or restarts the instance, then stores the desired
    /// state with the audit entry, all under the instance's control lock.
    pub async fn control_instance(
        &self,
        who: Who<'_>,
        mut instance: Instance,
        action: Control,
    ) -> HubResult<Instance> {
        super::on_agents::run_here(&instance)?;
        let manager = self.manager()?;
        let held = manager.control(&instance.id).await;
        let (desired, event) = match action {
            Control::Start => {
                manager.start(self, &instance, &held).await?;
                ("running", AuditEvent::InstanceStarted)
            }
            Control::Stop => {
                manager.stop(&instance.id, &held).await?;
                ("stopped", AuditEvent::InstanceStopped)
            }
            Control::Restart => {
                manager.restart(self, &instance, &held).await?;
                ("running", AuditEvent::InstanceRestarted)
            }
        };
        let mut tx = self.begin().await?;
        if instance.desired_state != desired {
            tx.set_instance_desired_state(&instance.id, desired, self.now())
                .await?;
            instance.desired_state = desired.to_string();
        }
        self.note(&mut tx, who, instance_event(&instance, event, json!({})));
        self.commit(tx, 1).await?;
        drop(held);
        Ok(instance)
    }

    /// A variable's value in the clear, for variables not marked secret
    /// (secret values are never given back after they are set).
    pub fn env_value(&self, instance_id: &str, entry: &EnvEntry) -> Option<String> {
        (!entry.secret).then(|| {
            open(
                &self.keyring,
                &entry.value,
                &env_aad(instance_id, &entry.name),
            )
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
        })
    }

    pub async fn instance_env(&self, instance_id: &str) -> HubResult<Vec<EnvEntry>> {
        Ok(self.store.list_instance_env(instance_id).await?)
    }

    /// Replaces the whole environment; it takes effect at the next start.
    /// Names only go to the log: values, secret or not, never do.
    pub async fn set_instance_env(
        &self,
        who: Who<'_>,
        instance: &Instance,
        input: Vec<EnvInput>,
    ) -> HubResult<Vec<EnvEntry>> {
        super::on_agents::run_here(instance)?;
        if input.len() > MAX_ENV_VARS {
            return Err(HubError::invalid(
                "too_many_variables",
                format!("at most {MAX_ENV_VARS} variables"),
            ));
        }
        let before = self.store.list_instance_env(&instance.id).await?;
        let version = self.key_version().await?;
        let now = self.now();
        let mut names = BTreeSet::new();
        let mut entries = Vec::with_capacity(input.len());
        for v in &input {
            env_name(&v.name)?;
            if !names.insert(v.name.clone()) {
                return Err(HubError::invalid(
                    "duplicate_name",
                    format!("{} is listed twice", v.name),
                ));
            }
            let stored = before.iter().find(|b| b.name == v.name);
            let sealed = match (&v.value, stored) {
                (Some(value), _) if !env_value_fits(value) => {
                    return Err(HubError::invalid(
                        "invalid_value",
                        format!(
                            "{}: a value is at most {MAX_ENV_VALUE_BYTES} bytes without NUL",
                            v.name
                        ),
                    ))
                }
                (Some(value), _) => seal(
                    &self.keyring,
                    version,
                    value.as_bytes(),
                    &env_aad(&instance.id, &v.name),
                ),
                // A secret stays write-only: turning it into a plain value
                // must not reveal the stored one.
                (None, Some(b)) if b.secret && !v.secret => {
                    return Err(HubError::invalid(
                        "missing_value",
                        format!("{} is no longer secret and needs a new value", v.name),
                    ))
                }
                (None, Some(b)) => b.value.clone(),
                (None, None) => {
                    return Err(HubError::invalid(
                        "missing_value",
                        format!("{} is new and needs a value", v.name),
                    ))
                }
            };
            let unchanged = v.value.is_none() && stored.is_some_and(|b| b.secret == v.secret);
            entries.push(EnvEntry {
                name: v.name.clone(),
                secret: v.secret,
                value: sealed,
                updated_at: match stored {
                    Some(b) if unchanged => b.updated_at,
                    _ => now,
                },
            });
        }
        let changed: Vec<&str> = entries
            .iter()
            .filter(|e| e.updated_at == now)
            .map(|e| e.name.as_str())
            .collect();
        let removed: Vec<&str> = before
            .iter()
            .filter(|b| !names.contains(&b.name))
            .map(|b| b.name.as_str())
            .collect();
        let details = json!({ "set": changed, "removed": removed });
        let mut tx = self.begin().await?;
        tx.replace_instance_env(&instance.id, &entries).await?;
        self.note(
            &mut tx,
            who,
            instance_event(instance, AuditEvent::InstanceEnvChanged, details),
        );
        self.commit(tx, 1).await?;
        Ok(entries)
    }

    /// Sets what the instance may install; it takes effect at the next
    /// start.
    pub async fn set_instance_options(
        &self,
        who: Who<'_>,
        mut instance: Instance,
        options: InstanceOptions,
    ) -> HubResult<Instance> {
        super::on_agents::run_here(&instance)?;
        let before = InstanceOptions::from_json(&instance.options);
        instance.options = serde_json::to_string(&options).map_err(HubError::internal)?;
        let mut tx = self.begin().await?;
        tx.set_instance_options(&instance.id, &instance.options, self.now())
            .await?;
        let details = json!({ "before": before, "after": options });
        self.note(
            &mut tx,
            who,
            instance_event(&instance, AuditEvent::InstanceOptionsChanged, details),
        );
        self.commit(tx, 1).await?;
        Ok(instance)
    }

    /// Replaces the instance's egress policy, validated whole first, and
    /// applies it to the running instance at once. If it cannot be applied
    /// the instance is stopped rather than left with rules nobody chose.
    pub async fn set_instance_egress(
        &self,
        who: Who<'_>,
        instance: &Instance,
        inputs: &[EgressRuleInput],
    ) -> HubResult<Vec<EgressRule>> {
        super::on_agents::run_here(instance)?;
        let rules = egress::validate(inputs)
            .map_err(|e| HubError::invalid("invalid_egress", e.to_string()))?;
        let before: Vec<EgressRuleInput> = stored_egress(instance)
            .map(|r| r.iter().map(EgressRule::to_input).collect())
            .unwrap_or_default();
        let after: Vec<EgressRuleInput> = rules.iter().map(EgressRule::to_input).collect();
        let json = serde_json::to_string(&after).map_err(HubError::internal)?;
        let mut tx = self.begin().await?;
        tx.set_instance_egress(&instance.id, &json, self.now())
            .await?;
        let details = json!({ "before": before, "after": after });
        self.note(
            &mut tx,
            who,
            instance_event(instance, AuditEvent::InstanceEgressChanged, details),
        );
        self.commit(tx, 1).await?;
        if let Some(manager) = self.instance_manager() {
            if let Err(e) = manager.set_egress(instance, &rules).await {
                tracing::error!(instance = %instance.name, error = %e, "applying an egress policy failed; stopping the instance");
                let held = manager.control(&instance.id).await;
                manager.stop(&instance.id, &held).await?;
                return Err(e);
            }
        }
        Ok(rules)
    }
}

impl Hub {
    /// The instance called `name`, in any team: for callers that check
    /// membership themselves (the console's hand-over to an instance host).
    pub async fn instance_by_name(&self, name: &str) -> HubResult<Option<Instance>> {
        Ok(self.store.get_instance_by_name(name).await?)
    }
}

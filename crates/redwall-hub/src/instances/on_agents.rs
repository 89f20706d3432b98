//! Instances whose Node-RED a remote agent runs.
//!
//! Such an instance is a row like any other (name, keys, route rules, API
//! keys, the editor's role checks), so the proxy treats it like any other;
//! only the last hop differs: the request goes through the agent's tunnel
//! (its one connection to the hub) instead of to a port of this host. The
//! hub never starts, stops or configures it: its process, environment and
//! network are the site's. What the hub gives the agent is the instance's
//! editor and endpoint token keys, sealed for the agent's X25519 key, so
//! its Node-RED answers only requests with a token this hub minted, after
//! this hub's checks. The credential key stays the agent's own.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use redwall_policy::agent_protocol::{HostedApiKey, HostedInstance, HostedKeys};
use redwall_policy::MICROS_PER_SECOND;
use redwall_store::{Agent, Instance};

use crate::agents::AgentEvent;
use crate::audit::Who;
use crate::instances::keys::open_keys;
use crate::{Hub, HubError, HubResult};

/// Refuses what only an instance this hub runs can do.
pub fn run_here(instance: &Instance) -> HubResult<()> {
    if instance.agent_id.is_some() {
        return Err(HubError::conflict(
            "instance_on_agent",
            "this instance's Node-RED runs on a remote agent: its process, environment and \
             network are the agent's; restart it through the agent",
        ));
    }
    Ok(())
}

pub(crate) fn agent_taken(agent: &str) -> HubError {
    HubError::conflict(
        "agent_runs_instance",
        format!("the agent {agent} runs an instance already"),
    )
}

impl Hub {
    /// Creates an instance that the team's agent `agent` runs. The agent
    /// must not be revoked and must run no other instance; it gets the
    /// instance's keys on its connection at once.
    pub async fn create_agent_instance(
        &self,
        who: Who<'_>,
        team_id: &str,
        creator_id: &str,
        name: &str,
        agent: &str,
    ) -> HubResult<Instance> {
        let agent = self.agent(team_id, agent).await?;
        if agent.revoked_at.is_some() {
            return Err(HubError::conflict("agent_revoked", "the agent is revoked"));
        }
        if agent.encryption_key.is_empty() {
            return Err(HubError::conflict(
                "agent_without_key",
                "the agent has no key to send the instance's keys to; enrol it again",
            ));
        }
        if self.store.get_instance_of_agent(&agent.id).await?.is_some() {
            return Err(agent_taken(&agent.name));
        }
        let instance = self
            .create_instance_on(who, team_id, creator_id, name, false, Some(&agent))
            .await?;
        self.announce_agent_event(AgentEvent::Hosting(agent.id.clone()))
            .await;
        Ok(instance)
    }

    /// What the agent runs, as its connection tells it: the instance's id
    /// and name, and its token keys sealed for the agent's key. `None`
    /// when it runs none.
    pub async fn hosted_instance(&self, agent: &Agent) -> HubResult<Option<HostedInstance>> {
        let Some(instance) = self.store.get_instance_of_agent(&agent.id).await? else {
            return Ok(None);
        };
        let keys = open_keys(&self.keyring, &instance)?;
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(&HostedKeys {
                instance_id: instance.id.clone(),
                editor: keys.editor.expose().to_owned(),
                endpoint: keys.endpoint.expose().to_owned(),
            })
            .map_err(HubError::internal)?,
        );
        let sealed =
            redwall_crypto::agent_box::seal_for(&agent.encryption_key, &plain).map_err(|_| {
                HubError::conflict(
                    "agent_without_key",
                    "the agent has no usable key to send the instance's keys to",
                )
            })?;
        let now = self.now();
        let api_keys = self
            .store
            .list_instance_api_keys(&instance.id)
            .await?
            .into_iter()
            .filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now))
            .map(|k| HostedApiKey {
                id: k.id,
                sha256: hex::encode(&k.key_digest),
                path_prefix: k.path_prefix,
                expires_at: k.expires_at.map(|e| e / MICROS_PER_SECOND),
            })
            .collect();
        Ok(Some(HostedInstance {
            rules: crate::instances::options::rules_from_json(&instance.routes),
            api_keys,
            id: instance.id,
            name: instance.name,
            keys: STANDARD.encode(sealed),
        }))
    }

    /// Tells the agent an instance runs on (through whichever hub holds
    /// its connection) that its rules or keys changed.
    pub(crate) async fn tell_hosting_agent(&self, instance: &Instance) {
        if let Some(agent_id) = &instance.agent_id {
            self.announce_agent_event(AgentEvent::Hosting(agent_id.clone()))
                .await;
        }
    }

    /// The agent an instance runs on, for the proxy; `None` when this hub
    /// runs it.
    pub async fn instance_agent(&self, instance: &Instance) -> HubResult<Option<Agent>> {
        match &instance.agent_id {
            None => Ok(None),
            Some(id) => Ok(self.store.get_agent(&instance.team_id, id).await?),
        }
    }
}

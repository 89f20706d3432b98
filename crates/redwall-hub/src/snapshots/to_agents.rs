//! Snapshots deployed to remote agents: a single agent, an agent group, or
//! a subset of either, now or held for a deploy window, also as a
//! pipeline's stage.
//!
//! Each agent's deployment is a row (as an instance's is) and a command
//! row that carries it: whichever hub holds the agent's connection hands
//! it over, and hands it over again on the agent's next connection until
//! the agent answers, so a deploy survives a dropped link and a restarted
//! hub. What goes on the wire is the signed snapshot itself, its
//! credentials re-sealed for that agent's own X25519 key: the agent checks
//! the hub's signature and every digest before it runs anything, and no
//! other agent (nor anything that records the traffic) can read them. The
//! deployment ends, with its audit entry, when the agent answers.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use redwall_policy::agent_protocol::{AgentCommand, SignedSnapshot};
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::{Micros, MICROS_PER_SECOND};
use redwall_store::{Agent, AgentCommandRow, Deployment};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::deploy::{STATUS_DEPLOYING, STATUS_DONE, STATUS_FAILED, STATUS_WAITING};
use super::schedule::{DeployRequest, Target};
use crate::agents::AgentEvent;
use crate::audit::{Actor, Event, Origin, Who};
use crate::{Hub, HubError, HubResult};

/// The most agents one deploy may name.
pub const MAX_AGENTS_PER_DEPLOY: usize = 10_000;

/// How long a snapshot checked for agents stays ready to send: a rollout
/// to a thousand agents loads and checks it once, not a thousand times.
const READY_SNAPSHOT_MICROS: Micros = 300 * MICROS_PER_SECOND;
/// Snapshots kept ready at once.
const READY_SNAPSHOTS: usize = 4;

/// A snapshot loaded, checked whole and made ready to seal for agents.
pub(crate) struct ReadySnapshot {
    team_id: String,
    statement: String,
    signature: String,
    content: String,
    /// The credentials JSON, in the clear: sealed anew for each agent.
    credentials: Zeroizing<Vec<u8>>,
}

/// The few snapshots ready to send (snapshots never change once written).
#[derive(Default)]
pub(crate) struct ReadySnapshots(tokio::sync::Mutex<Vec<(String, Micros, Arc<ReadySnapshot>)>>);

fn bad_target(message: impl Into<String>) -> HubError {
    HubError::invalid("invalid_target", message)
}

impl Target {
    /// Whether the target names agents rather than instances.
    pub fn is_agents(&self) -> bool {
        matches!(self, Target::Agent(_) | Target::AgentGroup(_))
    }
}

impl Hub {
    /// The team's agents a snapshot deploy goes to: those the target
    /// names, each with a key to seal credentials for.
    pub async fn target_agents(
        &self,
        team_id: &str,
        target: &Target,
        only: &[String],
    ) -> HubResult<Vec<Agent>> {
        let agents = self.named_agents(team_id, target, only).await?;
        if let Some(old) = agents.iter().find(|a| a.encryption_key.is_empty()) {
            return Err(HubError::conflict(
                "agent_needs_enrolment",
                format!(
                    "agent {} enrolled before agents took snapshots and has no key to seal credentials for; enrol it again",
                    old.name
                ),
            ));
        }
        Ok(agents)
    }

    /// The team's agents a target names (a subset when `only` is given).
    /// Revoked agents are never targets; a group with none left is refused.
    pub async fn named_agents(
        &self,
        team_id: &str,
        target: &Target,
        only: &[String],
    ) -> HubResult<Vec<Agent>> {
        let mut agents = match target {
            Target::Agent(name) => {
                let agent = self.agent(team_id, name).await?;
                if agent.revoked_at.is_some() {
                    return Err(HubError::conflict("agent_revoked", "the agent is revoked"));
                }
                vec![agent]
            }
            Target::AgentGroup(group) => self
                .store
                .list_agents(team_id)
                .await?
                .into_iter()
                .filter(|a| a.revoked_at.is_none() && a.agent_group.as_deref() == Some(group))
                .collect(),
            Target::Instance(_) | Target::Group(_) => {
                return Err(HubError::internal("an instance target was read as agents"))
            }
        };
        if !only.is_empty() {
            for name in only {
                if !agents.iter().any(|a| a.name == *name || a.id == *name) {
                    return Err(bad_target(format!("{name} is not an agent of the target")));
                }
            }
            agents.retain(|a| only.iter().any(|n| *n == a.name || *n == a.id));
        }
        if agents.is_empty() {
            return Err(bad_target("the target holds no agent"));
        }
        if agents.len() > MAX_AGENTS_PER_DEPLOY {
            return Err(bad_target(format!(
                "one deploy names at most {MAX_AGENTS_PER_DEPLOY} agents"
            )));
        }
        Ok(agents)
    }

    /// Schedules the snapshot onto the target's agents with one audit
    /// entry; those whose window is open get their command at once. The
    /// rows come back as they stand: the agents answer later.
    pub(crate) async fn deploy_to_agents(
        &self,
        who: Who<'_>,
        request: DeployRequest<'_>,
        requested_by: &str,
    ) -> HubResult<Vec<Deployment>> {
        self.load_snapshot(who, request.team_id, request.snapshot_id)
            .await?;
        let agents = self
            .target_agents(request.team_id, request.target, request.only)
            .await?;
        let now = self.now();
        let starts_at = super::schedule::window_start(&request.window, now)?;
        let waits = starts_at > now;
        let schedule = serde_json::to_string(&request.window).map_err(HubError::internal)?;
        let mut rows = Vec::with_capacity(agents.len());
        let mut commands = Vec::new();
        for agent in &agents {
            let mut row = Deployment {
                id: crate::ids::new_id(),
                team_id: request.team_id.to_string(),
                instance_id: None,
                agent_id: Some(agent.id.clone()),
                command_id: None,
                snapshot_id: request.snapshot_id.to_string(),
                previous_snapshot_id: agent.running_snapshot.clone(),
                reason: request.reason.as_str().to_string(),
                status: STATUS_WAITING.to_string(),
                step: "waiting for its deploy window".to_string(),
                error: None,
                requested_by: Some(requested_by.to_string()),
                created_at: now,
                updated_at: now,
                schedule: schedule.clone(),
                promotion_id: request.promotion_id.map(str::to_string),
            };
            if !waits {
                let command = deploy_command(&row, Some(requested_by), now)?;
                row.status = STATUS_DEPLOYING.to_string();
                row.step = "sent to the agent".to_string();
                row.command_id = Some(command.id.clone());
                commands.push(command);
            }
            rows.push(row);
        }
        let mut tx = self.begin().await?;
        for row in &rows {
            tx.create_deployment(row).await?;
        }
        for command in &commands {
            tx.create_agent_command(command).await?;
        }
        self.note(
            &mut tx,
            who,
            super::schedule::scheduled_event(
                &request,
                "agents",
                agents.iter().map(|a| a.name.as_str()).collect(),
                starts_at,
            ),
        );
        self.commit(tx, 1).await?;
        if !waits {
            self.announce_commands(agents.iter().map(|a| a.id.clone()).collect())
                .await;
        }
        Ok(rows)
    }

    /// Sends their commands for every waiting agent deployment whose
    /// window is open (any hub may: the agents' connections are wherever
    /// they are). Returns how many it started.
    pub async fn run_due_agent_deployments(&self) -> HubResult<usize> {
        let now = self.now();
        let mut started = Vec::new();
        for d in self.store.waiting_deployments().await? {
            let Some(agent_id) = d.agent_id.clone() else {
                continue;
            };
            if !self.claim_if_due(&d, now).await? {
                continue;
            }
            let command = deploy_command(&d, d.requested_by.as_deref(), now)?;
            let mut tx = self.begin().await?;
            tx.create_agent_command(&command).await?;
            tx.set_deployment_command(&d.id, &command.id).await?;
            tx.update_deployment(&d.id, STATUS_DEPLOYING, "sent to the agent", None, now)
                .await?;
            tx.commit().await?;
            started.push(agent_id);
        }
        let count = started.len();
        if count > 0 {
            self.announce_commands(started).await;
        }
        Ok(count)
    }

    /// The snapshot as this agent gets it: signed by the hub, with its
    /// credentials sealed for the agent's own key.
    pub async fn snapshot_for_agent(
        &self,
        agent: &Agent,
        snapshot_id: &str,
    ) -> HubResult<SignedSnapshot> {
        let ready = self.ready_snapshot(&agent.team_id, snapshot_id).await?;
        if ready.team_id != agent.team_id {
            return Err(HubError::NotFound);
        }
        let sealed = redwall_crypto::agent_box::seal_for(&agent.encryption_key, &ready.credentials)
            .map_err(|_| {
                HubError::conflict(
                    "agent_needs_enrolment",
                    "the agent has no usable key to seal credentials for; enrol it again",
                )
            })?;
        Ok(SignedSnapshot {
            statement: ready.statement.clone(),
            signature: ready.signature.clone(),
            content: ready.content.clone(),
            credentials: STANDARD.encode(sealed),
        })
    }

    /// Loads and checks the snapshot once for any number of agents.
    async fn ready_snapshot(&self, team_id: &str, id: &str) -> HubResult<Arc<ReadySnapshot>> {
        let now = self.now();
        // One lock for the look-up and the load: a thousand connections
        // asking at once load it once.
        let mut ready = self.ready_snapshots.0.lock().await;
        ready.retain(|(_, at, _)| now.saturating_sub(*at) < READY_SNAPSHOT_MICROS);
        if let Some((_, _, r)) = ready.iter().find(|(key, _, _)| key == id) {
            return Ok(r.clone());
        }
        let origin = Origin::local("redwall-agent-deploy");
        let loaded = self
            .load_snapshot(Who::anonymous(&origin), team_id, id)
            .await?;
        let credentials =
            serde_json::to_vec(&Value::Object(loaded.credentials)).map_err(HubError::internal)?;
        let r = Arc::new(ReadySnapshot {
            team_id: loaded.row.team_id.clone(),
            statement: loaded.row.statement.clone(),
            signature: STANDARD.encode(&loaded.row.signature),
            content: loaded.row.content.clone(),
            credentials: Zeroizing::new(credentials),
        });
        if ready.len() >= READY_SNAPSHOTS {
            ready.remove(0);
        }
        ready.push((id.to_string(), now, r.clone()));
        Ok(r)
    }

    /// The agent answered the command that carries a deployment: the
    /// deployment ends, with its audit entry, in one transaction. A second
    /// answer (after a reconnect) changes nothing.
    pub(crate) async fn agent_deploy_answered(
        &self,
        origin: &Origin,
        agent: &Agent,
        command_id: &str,
        ok: bool,
        message: &str,
    ) -> HubResult<()> {
        let Some(d) = self
            .store
            .deployment_of_command(&agent.id, command_id)
            .await?
        else {
            return Ok(());
        };
        let user = match &d.requested_by {
            Some(id) => self.store.get_user(id).await?,
            None => None,
        };
        let actor = user.as_ref().map(|u| Actor::user(&u.id, &u.username));
        let who = Who {
            actor: actor.as_ref(),
            origin,
        };
        let now = self.now();
        let mut details = json!({
            "deployment": d.id,
            "snapshot": d.snapshot_id,
            "previous": d.previous_snapshot_id,
            "reason": d.reason,
            "promotion": d.promotion_id,
            "agent": agent.id,
        });
        let target = format!("agent:{}", agent.name);
        let mut tx = self.begin().await?;
        let event = if ok {
            if !tx
                .end_deployment(&d.id, STATUS_DONE, "the agent runs the snapshot", None, now)
                .await?
            {
                return Ok(());
            }
            tx.set_agent_running_snapshot(&agent.id, &d.snapshot_id)
                .await?;
            Event::in_team(&d.team_id, AuditEvent::SnapshotDeployed, target, details)
        } else {
            if !tx
                .end_deployment(
                    &d.id,
                    STATUS_FAILED,
                    "the agent did not take the snapshot; it keeps what it ran",
                    Some(message),
                    now,
                )
                .await?
            {
                return Ok(());
            }
            details["error"] = json!(message);
            Event {
                outcome: Outcome::Failure,
                ..Event::in_team(
                    &d.team_id,
                    AuditEvent::SnapshotDeployFailed,
                    target,
                    details,
                )
            }
        };
        self.note(&mut tx, who, event);
        self.commit(tx, 1).await
    }

    /// The agent's deployments, newest first.
    pub async fn agent_deployments(&self, agent: &Agent) -> HubResult<Vec<Deployment>> {
        Ok(self
            .store
            .list_agent_deployments(&agent.team_id, &agent.id, 50)
            .await?)
    }

    /// Tells the hubs holding these agents' connections that commands wait.
    pub(crate) async fn announce_commands(&self, mut agent_ids: Vec<String>) {
        agent_ids.sort();
        agent_ids.dedup();
        self.announce_agent_event(AgentEvent::Commands(agent_ids.into()))
            .await;
    }
}

/// The command that carries a deployment to its agent.
fn deploy_command(
    d: &Deployment,
    created_by: Option<&str>,
    now: Micros,
) -> HubResult<AgentCommandRow> {
    let command = AgentCommand::Deploy {
        snapshot_id: d.snapshot_id.clone(),
    };
    Ok(AgentCommandRow {
        id: crate::ids::new_id(),
        agent_id: d
            .agent_id
            .clone()
            .ok_or_else(|| HubError::internal("an instance deployment was sent to an agent"))?,
        team_id: d.team_id.clone(),
        command: serde_json::to_string(&command).map_err(HubError::internal)?,
        created_by: created_by.map(str::to_string),
        created_at: now,
        sent_at: None,
        done_at: None,
        ok: None,
        message: None,
        update_id: None,
    })
}

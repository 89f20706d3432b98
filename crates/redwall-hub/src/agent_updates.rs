//! Signed agent builds and their rollouts: a platform admin adds a build
//! (the hub checks it is an executable for the platform it names, signs a
//! statement of its digest with the hub's key, and keeps it whole in the
//! database, so any replica can hand it out); a team's Owner rolls it out
//! to an agent or an agent group in batches.
//!
//! The next batch gets its update commands only once every agent of the
//! batch before has answered, and the first failure stops the rollout. An
//! agent's "ok" counts only if it reconnected with the build's SHA-256 in
//! its hello: the agent answers from the new build, after it connected; a
//! build that never connects is rolled back on the agent, which then
//! answers from the old build.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use redwall_policy::agent_protocol::{
    check_platform, check_version, AgentCommand, BuildStatement, SignedBuild, BUILD_CONTEXT,
    MAX_BUILD_BYTES,
};
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::snapshot_format::{canonical, sha256_hex};
use redwall_policy::Micros;
use redwall_store::{Agent, AgentBuild, AgentCommandRow, AgentUpdate, StoreError};
use serde_json::json;

use crate::audit::{Actor, Event, Origin, Who};
use crate::snapshots::schedule::Target;
use crate::{Hub, HubError, HubResult};

/// The largest batch of a rollout.
pub const MAX_BATCH: u32 = 1000;

pub const UPDATE_ROLLING: &str = "rolling";
pub const UPDATE_DONE: &str = "done";
pub const UPDATE_STOPPED: &str = "stopped";

/// A rollout and how far it got.
pub struct UpdateProgress {
    pub update: AgentUpdate,
    pub build: Option<AgentBuild>,
    /// Agents sent the build so far.
    pub sent: usize,
    /// Agents that run it.
    pub updated: usize,
    pub failed: usize,
}

/// A build ready to send: its signed statement and its bytes in base64.
pub(crate) struct ReadyBuild {
    statement: String,
    signature: String,
    binary: Arc<str>,
}

/// The last build made ready (a rollout sends one build to many agents).
#[derive(Default)]
pub(crate) struct ReadyBuilds(tokio::sync::Mutex<Option<(String, Arc<ReadyBuild>)>>);

/// The ELF machine of a platform (`e_machine`).
fn elf_machine(platform: &str) -> Option<u16> {
    match platform {
        "linux-x86_64" => Some(62),
        "linux-aarch64" => Some(183),
        _ => None,
    }
}

/// Whether `body` is a 64-bit little-endian ELF executable for `platform`.
fn is_executable_for(platform: &str, body: &[u8]) -> bool {
    let Some(machine) = elf_machine(platform) else {
        return false;
    };
    body.len() > 20
        && body.starts_with(b"\x7fELF")
        && body[4] == 2 // 64-bit
        && body[5] == 1 // little-endian
        && u16::from_le_bytes([body[18], body[19]]) == machine
}

fn invalid_build(message: impl Into<String>) -> HubError {
    HubError::invalid("invalid_build", message)
}

impl Hub {
    /// Adds a build after checking it, with the hub's signed statement.
    pub async fn add_agent_build(
        &self,
        who: Who<'_>,
        creator_id: &str,
        version: &str,
        platform: &str,
        body: &[u8],
    ) -> HubResult<AgentBuild> {
        check_version(version)?;
        check_platform(platform)?;
        if body.is_empty() || body.len() as u64 > MAX_BUILD_BYTES {
            return Err(invalid_build(format!(
                "a build is 1 byte to {} MiB",
                MAX_BUILD_BYTES >> 20
            )));
        }
        if !is_executable_for(platform, body) {
            return Err(invalid_build(format!(
                "the file is not a 64-bit ELF executable for {platform}"
            )));
        }
        let id = crate::ids::new_id();
        let statement = BuildStatement {
            v: 1,
            id: id.clone(),
            version: version.to_string(),
            platform: platform.to_string(),
            sha256: sha256_hex(body),
            size: body.len() as u64,
            created_at: self.now(),
        };
        let text = canonical(&serde_json::to_value(&statement).map_err(HubError::internal)?);
        let key = self.signing_key().await?;
        let build = AgentBuild {
            id,
            version: statement.version.clone(),
            platform: statement.platform.clone(),
            sha256: statement.sha256.clone(),
            size: i64::try_from(statement.size).map_err(HubError::internal)?,
            signature: key.sign(BUILD_CONTEXT, text.as_bytes()).to_vec(),
            statement: text,
            created_by: Some(creator_id.to_string()),
            created_at: statement.created_at,
        };
        let mut tx = self.begin().await?;
        match tx.create_agent_build(&build, body).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(HubError::conflict(
                    "build_exists",
                    "this build is stored already for this platform",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        self.note(
            &mut tx,
            who,
            Event::on_platform(
                AuditEvent::AgentBuildAdded,
                format!("agent_build:{}", build.id),
                json!({ "build": build.id, "version": build.version, "platform": build.platform,
                        "sha256": build.sha256, "size": build.size }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok(build)
    }

    pub async fn agent_builds(&self) -> HubResult<Vec<AgentBuild>> {
        Ok(self.store.list_agent_builds().await?)
    }

    pub async fn delete_agent_build(&self, who: Who<'_>, id: &str) -> HubResult<()> {
        let mut tx = self.begin().await?;
        if !tx.delete_agent_build(id).await? {
            return Err(HubError::NotFound);
        }
        self.note(
            &mut tx,
            who,
            Event::on_platform(
                AuditEvent::AgentBuildDeleted,
                format!("agent_build:{id}"),
                json!({ "build": id }),
            ),
        );
        self.commit(tx, 1).await
    }

    /// The team's agents a rollout of `build` goes to: those the target
    /// names, not revoked, on the build's platform.
    async fn update_targets(
        &self,
        team_id: &str,
        target: &Target,
        build: &AgentBuild,
    ) -> HubResult<Vec<Agent>> {
        Ok(self
            .named_agents(team_id, target, &[])
            .await?
            .into_iter()
            .filter(|a| a.platform == build.platform)
            .collect())
    }

    /// Starts rolling `build_id` out to the target's agents, `batch_size`
    /// at a time; the first batch gets its commands at once.
    pub async fn start_agent_update(
        &self,
        who: Who<'_>,
        team_id: &str,
        creator_id: &str,
        build_id: &str,
        target: &Target,
        batch_size: u32,
    ) -> HubResult<AgentUpdate> {
        if !target.is_agents() {
            return Err(HubError::invalid(
                "invalid_target",
                "an agent build goes to an agent or an agent group",
            ));
        }
        if !(1..=MAX_BATCH).contains(&batch_size) {
            return Err(HubError::invalid(
                "invalid_batch",
                format!("a batch is 1 to {MAX_BATCH} agents"),
            ));
        }
        let build = self
            .store
            .get_agent_build(build_id)
            .await?
            .ok_or(HubError::NotFound)?;
        let agents = self.update_targets(team_id, target, &build).await?;
        if agents.is_empty() {
            return Err(HubError::invalid(
                "invalid_target",
                format!("no agent of the target runs on {}", build.platform),
            ));
        }
        let now = self.now();
        let update = AgentUpdate {
            id: crate::ids::new_id(),
            team_id: team_id.to_string(),
            build_id: build.id.clone(),
            target: serde_json::to_string(target).map_err(HubError::internal)?,
            batch_size: i64::from(batch_size),
            status: UPDATE_ROLLING.to_string(),
            error: None,
            created_by: Some(creator_id.to_string()),
            created_at: now,
            updated_at: now,
        };
        let batch: Vec<&Agent> = agents.iter().take(batch_size as usize).collect();
        let mut tx = self.begin().await?;
        tx.create_agent_update(&update).await?;
        for agent in &batch {
            tx.create_agent_command(&update_command(&update, &build, agent, now)?)
                .await?;
        }
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::AgentUpdateStarted,
                format!("agent_build:{}", build.id),
                json!({ "update": update.id, "build": build.id, "version": build.version,
                        "target": target, "agents": agents.len(), "batch_size": batch_size }),
            ),
        );
        self.commit(tx, 1).await?;
        self.announce_commands(batch.iter().map(|a| a.id.clone()).collect())
            .await;
        Ok(update)
    }

    /// The team's rollouts and how far each got, newest first.
    pub async fn agent_updates(&self, team_id: &str) -> HubResult<Vec<UpdateProgress>> {
        let mut out = Vec::new();
        for update in self.store.list_agent_updates(team_id).await? {
            let commands = self.store.update_commands(&update.id).await?;
            out.push(UpdateProgress {
                build: self.store.get_agent_build(&update.build_id).await?,
                sent: commands.len(),
                updated: commands.iter().filter(|c| c.ok == Some(true)).count(),
                failed: commands.iter().filter(|c| c.ok == Some(false)).count(),
                update,
            });
        }
        Ok(out)
    }

    /// Moves every rolling rollout on: fails an update an agent was sent
    /// and has not answered within `answer_within` (its new build hangs,
    /// or it went away mid-way), stops one whose batch had a failure,
    /// sends the next batch once the last one has answered, and ends one
    /// with no agent left. Any replica may; each step is claimed by one.
    /// Returns how many rollouts moved.
    pub async fn run_agent_updates(&self, answer_within: std::time::Duration) -> HubResult<usize> {
        let mut moved = 0;
        let limit = i64::try_from(answer_within.as_micros()).unwrap_or(i64::MAX);
        for update in self.store.rolling_agent_updates().await? {
            let mut commands = self.store.update_commands(&update.id).await?;
            let now = self.now();
            for c in commands.iter_mut() {
                let Some(sent) = c.sent_at else { continue };
                if c.done_at.is_some() || now.saturating_sub(sent) <= limit {
                    continue;
                }
                let why = format!(
                    "no answer within {} s of the build being sent",
                    answer_within.as_secs()
                );
                if self
                    .store
                    .finish_agent_command(&c.agent_id, &c.id, false, &why, now)
                    .await?
                {
                    if let Some(agent) = self.store.agent_by_id(&c.agent_id).await? {
                        let origin = Origin::local("redwall-agent-updates");
                        self.audit_update_answer(&origin, &agent, c, &update.build_id, false, &why)
                            .await?;
                    }
                }
                c.done_at = Some(now);
                c.ok = Some(false);
                c.message = Some(why);
            }
            if commands.iter().any(|c| c.done_at.is_none()) {
                continue;
            }
            let now = self.now();
            let failure = commands.iter().find(|c| c.ok == Some(false));
            let Some(build) = self.store.get_agent_build(&update.build_id).await? else {
                continue;
            };
            let next: Vec<Agent> = if failure.is_some() {
                Vec::new()
            } else {
                let target: Target =
                    serde_json::from_str(&update.target).map_err(HubError::internal)?;
                let done: std::collections::BTreeSet<&str> =
                    commands.iter().map(|c| c.agent_id.as_str()).collect();
                match self.update_targets(&update.team_id, &target, &build).await {
                    Ok(agents) => agents
                        .into_iter()
                        .filter(|a| !done.contains(a.id.as_str()))
                        .take(usize::try_from(update.batch_size).unwrap_or(1))
                        .collect(),
                    // The group emptied meanwhile: nothing left to send.
                    Err(_) => Vec::new(),
                }
            };
            if !self
                .store
                .claim_agent_update(&update.id, update.updated_at, now)
                .await?
            {
                continue;
            }
            moved += 1;
            let mut tx = self.begin().await?;
            if next.is_empty() {
                let (status, error) = match failure {
                    Some(c) => (
                        UPDATE_STOPPED,
                        Some(format!(
                            "agent {} did not take the build: {}",
                            c.agent_id,
                            c.message.as_deref().unwrap_or_default()
                        )),
                    ),
                    None => (UPDATE_DONE, None),
                };
                if !tx
                    .end_agent_update(&update.id, status, error.as_deref(), now)
                    .await?
                {
                    continue;
                }
                let origin = Origin::local("redwall-agent-updates");
                let actor = update.created_by.as_deref().map(Actor::user_id);
                let who = Who {
                    actor: actor.as_ref(),
                    origin: &origin,
                };
                self.note(
                    &mut tx,
                    who,
                    Event {
                        outcome: if failure.is_some() {
                            Outcome::Failure
                        } else {
                            Outcome::Success
                        },
                        ..Event::in_team(
                            &update.team_id,
                            AuditEvent::AgentUpdateEnded,
                            format!("agent_build:{}", update.build_id),
                            json!({ "update": update.id, "status": status, "error": error,
                                    "agents": commands.len() }),
                        )
                    },
                );
                self.commit(tx, 1).await?;
            } else {
                for agent in &next {
                    tx.create_agent_command(&update_command(&update, &build, agent, now)?)
                        .await?;
                }
                tx.commit().await?;
                self.announce_commands(next.iter().map(|a| a.id.clone()).collect())
                    .await;
            }
        }
        Ok(moved)
    }

    /// The build as the agent gets it: the hub's signed statement and the
    /// bytes.
    pub async fn build_for_agent(&self, agent: &Agent, build_id: &str) -> HubResult<SignedBuild> {
        let build = self
            .store
            .get_agent_build(build_id)
            .await?
            .ok_or(HubError::NotFound)?;
        if build.platform != agent.platform {
            return Err(HubError::conflict(
                "wrong_platform",
                format!(
                    "the build is for {}, the agent runs on {}",
                    build.platform, agent.platform
                ),
            ));
        }
        let mut ready = self.ready_builds.0.lock().await;
        let r = match ready.as_ref() {
            Some((id, r)) if id == build_id => r.clone(),
            _ => {
                let body = self
                    .store
                    .agent_build_body(build_id)
                    .await?
                    .ok_or(HubError::NotFound)?;
                // The stored bytes are checked against the signed digest
                // before any agent gets them.
                if sha256_hex(&body) != build.sha256 {
                    tracing::error!(
                        build = build_id,
                        "a stored agent build does not match its digest"
                    );
                    return Err(HubError::conflict(
                        "build_invalid",
                        "the stored build does not match its signed digest and will not be sent",
                    ));
                }
                let r = Arc::new(ReadyBuild {
                    statement: build.statement.clone(),
                    signature: STANDARD.encode(&build.signature),
                    binary: STANDARD.encode(&body).into(),
                });
                *ready = Some((build_id.to_string(), r.clone()));
                r
            }
        };
        Ok(SignedBuild {
            statement: r.statement.clone(),
            signature: r.signature.clone(),
            binary: r.binary.to_string(),
        })
    }

    /// An agent's answer to an update command as it counts: an "ok" only
    /// when the agent connected with the build's digest.
    pub(crate) async fn update_answer_counts(
        &self,
        agent: &Agent,
        build_id: &str,
        ok: bool,
        message: &str,
    ) -> HubResult<(bool, String)> {
        let build = self.store.get_agent_build(build_id).await?;
        Ok(match (&build, ok) {
            (Some(b), true) if agent.build_sha256.as_deref() == Some(b.sha256.as_str()) => {
                (true, message.to_string())
            }
            (Some(_), true) => (
                false,
                format!(
                    "the agent said it runs the build but connected with another one ({})",
                    agent.build_sha256.as_deref().unwrap_or("none")
                ),
            ),
            (None, _) => (false, "the build was deleted".to_string()),
            (_, false) => (false, message.to_string()),
        })
    }

    /// The audit entry of an agent's counted answer to an update command.
    pub(crate) async fn audit_update_answer(
        &self,
        origin: &Origin,
        agent: &Agent,
        command: &AgentCommandRow,
        build_id: &str,
        ok: bool,
        message: &str,
    ) -> HubResult<()> {
        let actor = command.created_by.as_deref().map(Actor::user_id);
        let who = Who {
            actor: actor.as_ref(),
            origin,
        };
        let details = json!({ "agent": agent.id, "build": build_id, "update": command.update_id,
                              "message": message });
        let event = Event::in_team(
            &agent.team_id,
            if ok {
                AuditEvent::AgentUpdated
            } else {
                AuditEvent::AgentUpdateFailed
            },
            format!("agent:{}", agent.name),
            details,
        );
        let event = if ok {
            event
        } else {
            Event {
                outcome: Outcome::Failure,
                ..event
            }
        };
        self.record_event(who, event).await
    }
}

/// The command that carries a build to one agent of a rollout.
fn update_command(
    update: &AgentUpdate,
    build: &AgentBuild,
    agent: &Agent,
    now: Micros,
) -> HubResult<AgentCommandRow> {
    Ok(AgentCommandRow {
        id: crate::ids::new_id(),
        agent_id: agent.id.clone(),
        team_id: update.team_id.clone(),
        command: serde_json::to_string(&AgentCommand::Update {
            build_id: build.id.clone(),
        })
        .map_err(HubError::internal)?,
        created_by: update.created_by.clone(),
        created_at: now,
        sent_at: None,
        done_at: None,
        ok: None,
        message: None,
        update_id: Some(update.id.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_elf_for_the_named_platform_is_a_build() {
        let mut x86 = vec![0u8; 64];
        x86[..4].copy_from_slice(b"\x7fELF");
        x86[4] = 2;
        x86[5] = 1;
        x86[18..20].copy_from_slice(&62u16.to_le_bytes());
        assert!(is_executable_for("linux-x86_64", &x86));
        assert!(!is_executable_for("linux-aarch64", &x86));
        assert!(!is_executable_for("windows", &x86));
        let mut arm = x86.clone();
        arm[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert!(is_executable_for("linux-aarch64", &arm));
        let mut bits32 = x86.clone();
        bits32[4] = 1;
        assert!(!is_executable_for("linux-x86_64", &bits32));
        assert!(!is_executable_for("linux-x86_64", b"#!/bin/sh\nexit 0\n"));
        assert!(!is_executable_for("linux-x86_64", &x86[..19]));
    }
}

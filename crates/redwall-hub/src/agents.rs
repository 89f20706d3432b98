//! Remote agents: provisioning tokens, enrolment, the checks of an agent's
//! connection, heartbeats, commands and revocation.
//!
//! Nothing an agent needs lives only in this process: the agent, its last
//! heartbeat and its commands are rows, and what another hub must act on at
//! once (a revocation, a new command) is announced through PostgreSQL
//! (`AGENT_EVENTS`). The gateway that holds an agent's WebSocket is a shell
//! over these calls.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rand::RngCore as _;
use redwall_crypto::signing::PublicKey;
use redwall_crypto::token::{new_token, parse_token, token_digest, AGENT_ENROL_PREFIX};
use redwall_crypto::Secret;
use redwall_policy::agent_protocol::{
    self, check_agent_group, check_agent_name, check_platform, check_version, hello_message,
    AgentCommand, AgentStatus, EnrolRequest, HELLO_CONTEXT,
};
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::MICROS_PER_SECOND;
use redwall_store::notify::{Listener, AGENT_EVENTS};
use redwall_store::{Agent, AgentCommandRow, AgentToken, StoreError};
use serde_json::json;

use crate::audit::{Event, Who};
use crate::refusals::Refusal;
use crate::{Hub, HubError, HubResult, Origin};

/// Agents a team may enrol.
pub const MAX_AGENTS_PER_TEAM: usize = 10_000;
/// Open provisioning tokens a team may hold at once.
pub const MAX_OPEN_TOKENS_PER_TEAM: usize = 100;

/// What a hub holding agent connections must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEvent {
    /// Close this agent's connection: revoked or deleted.
    Revoked(String),
    /// These agents (sorted ids) have commands waiting: one event for a
    /// whole rollout, so a thousand connections each wake once, not a
    /// thousand times.
    Commands(std::sync::Arc<[String]>),
    /// This agent connected anew (this connection id): any other
    /// connection of it closes, so one key never holds two sessions.
    Connected {
        agent_id: String,
        connection: String,
    },
    /// The instance this agent runs was created or deleted: the hub
    /// holding its connection tells it (its keys, or that it runs none).
    Hosting(String),
    /// Announcements may have been missed (the link to the database
    /// dropped): close every connection; agents dial again and are checked
    /// afresh.
    CloseAll,
}

/// Largest announcement sent through PostgreSQL (its limit is 8,000 bytes).
const MAX_PAYLOAD_BYTES: usize = 7_000;

impl AgentEvent {
    /// Whether the event says this agent has commands waiting.
    pub fn has_commands_for(&self, agent_id: &str) -> bool {
        match self {
            AgentEvent::Commands(ids) => {
                ids.binary_search_by(|id| id.as_str().cmp(agent_id)).is_ok()
            }
            _ => false,
        }
    }

    /// The announcements other hubs get (several when one would be too long).
    fn payloads(&self, node: &str) -> Vec<String> {
        match self {
            AgentEvent::Revoked(id) => vec![format!("{node}:revoked:{id}")],
            AgentEvent::Hosting(id) => vec![format!("{node}:hosting:{id}")],
            AgentEvent::Commands(ids) => {
                let head = format!("{node}:commands:");
                let mut out = Vec::new();
                let mut current = head.clone();
                for id in ids.iter() {
                    if current.len() > head.len()
                        && current.len() + 1 + id.len() > MAX_PAYLOAD_BYTES
                    {
                        out.push(std::mem::replace(&mut current, head.clone()));
                    }
                    if current.len() > head.len() {
                        current.push(',');
                    }
                    current.push_str(id);
                }
                if current.len() > head.len() {
                    out.push(current);
                }
                out
            }
            AgentEvent::Connected {
                agent_id,
                connection,
            } => vec![format!("{node}:connected:{agent_id}/{connection}")],
            AgentEvent::CloseAll => Vec::new(),
        }
    }

    /// An announcement from another hub; `None` for this hub's own or an
    /// unreadable one.
    fn from_payload(payload: &str, this_node: &str) -> Option<AgentEvent> {
        let mut parts = payload.splitn(3, ':');
        let (node, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
        if node == this_node {
            return None;
        }
        match kind {
            "revoked" => Some(AgentEvent::Revoked(id.to_string())),
            "hosting" => Some(AgentEvent::Hosting(id.to_string())),
            "commands" => {
                let mut ids: Vec<String> = id.split(',').map(str::to_string).collect();
                ids.sort();
                Some(AgentEvent::Commands(ids.into()))
            }
            "connected" => {
                let (agent_id, connection) = id.split_once('/')?;
                Some(AgentEvent::Connected {
                    agent_id: agent_id.to_string(),
                    connection: connection.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// A new provisioning token: shown once.
pub struct NewAgentToken {
    pub token: Secret,
    pub row: AgentToken,
}

fn agent_event(a: &Agent, event: AuditEvent, details: serde_json::Value) -> Event {
    Event::in_team(&a.team_id, event, format!("agent:{}", a.name), details)
}

/// The fingerprint of a stored public key, for the log and the list.
pub fn key_fingerprint(public_key: &str) -> String {
    PublicKey::from_base64(public_key)
        .map(|k| k.fingerprint())
        .unwrap_or_else(|_| "unreadable".to_string())
}

/// A random challenge for a new connection.
pub fn new_challenge() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Hub {
    /// Makes a one-time provisioning token for the team (its agents join
    /// `group`), usable for `hours` (a day when `None`).
    pub async fn create_agent_token(
        &self,
        who: Who<'_>,
        team_id: &str,
        creator_id: &str,
        group: Option<&str>,
        hours: Option<u32>,
    ) -> HubResult<NewAgentToken> {
        if let Some(g) = group {
            check_agent_group(g)?;
        }
        let hours = agent_protocol::token_hours(hours)?;
        let now = self.now();
        let open = self.store.open_agent_tokens(team_id).await?;
        if open.iter().filter(|t| t.expires_at > now).count() >= MAX_OPEN_TOKENS_PER_TEAM {
            return Err(HubError::conflict(
                "too_many_tokens",
                format!(
                    "a team may hold at most {MAX_OPEN_TOKENS_PER_TEAM} unused provisioning tokens"
                ),
            ));
        }
        let token = new_token(AGENT_ENROL_PREFIX);
        let row = AgentToken {
            id: crate::ids::new_id(),
            team_id: team_id.to_string(),
            token_digest: token_digest(token.expose()).to_vec(),
            agent_group: group.map(str::to_string),
            created_by: Some(creator_id.to_string()),
            created_at: now,
            expires_at: now + i64::from(hours) * 3600 * MICROS_PER_SECOND,
            used_at: None,
            used_by_agent: None,
        };
        let mut tx = self.begin().await?;
        tx.create_agent_token(&row).await?;
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::AgentTokenCreated,
                format!("agent_token:{}", row.id),
                json!({ "token_id": row.id, "group": row.agent_group, "hours": hours }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok(NewAgentToken { token, row })
    }

    /// The team's unused provisioning tokens (never the tokens themselves).
    pub async fn agent_tokens(&self, team_id: &str) -> HubResult<Vec<AgentToken>> {
        Ok(self.store.open_agent_tokens(team_id).await?)
    }

    /// Withdraws an unused provisioning token.
    pub async fn delete_agent_token(&self, who: Who<'_>, team_id: &str, id: &str) -> HubResult<()> {
        let mut tx = self.begin().await?;
        if !tx.delete_agent_token(team_id, id).await? {
            return Err(HubError::NotFound);
        }
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::AgentTokenWithdrawn,
                format!("agent_token:{id}"),
                json!({ "token_id": id }),
            ),
        );
        self.commit(tx, 1).await
    }

    /// Enrols an agent with a provisioning token and the public key it made.
    /// Everything is checked before the token is spent; an unknown, used or
    /// expired token all get the same answer (and one aggregated refusal
    /// entry per source and minute).
    pub async fn enrol_agent(&self, origin: &Origin, req: &EnrolRequest) -> HubResult<Agent> {
        check_agent_name(&req.name)?;
        check_platform(&req.platform)?;
        check_version(&req.version)?;
        let key = PublicKey::from_base64(&req.public_key).map_err(|_| {
            HubError::invalid(
                "invalid_public_key",
                "the public key must be a 32-byte Ed25519 key in standard base64",
            )
        })?;
        let encryption_key = redwall_crypto::agent_box::check_public_key(&req.encryption_key)
            .map_err(|_| {
                HubError::invalid(
                    "invalid_encryption_key",
                    "the encryption key must be a 32-byte X25519 key in standard base64",
                )
            })?;
        let refused = || {
            HubError::unauthenticated(
                "invalid_token",
                "the provisioning token is not valid (unknown, used or expired)",
            )
        };
        let Some(token) = parse_token(AGENT_ENROL_PREFIX, req.provisioning_token.trim()) else {
            self.agent_refusal(
                origin,
                AuditEvent::AgentEnrolRefused,
                "invalid_token",
                &req.name,
            )
            .await;
            return Err(refused());
        };
        let now = self.now();
        let id = crate::ids::new_id();
        let mut tx = self.begin().await?;
        let Some(spent) = tx.spend_agent_token(&token_digest(token), &id, now).await? else {
            drop(tx);
            self.agent_refusal(
                origin,
                AuditEvent::AgentEnrolRefused,
                "invalid_token",
                &req.name,
            )
            .await;
            return Err(refused());
        };
        let enrolled =
            usize::try_from(tx.count_agents(&spent.team_id).await?).unwrap_or(usize::MAX);
        if enrolled >= MAX_AGENTS_PER_TEAM {
            return Err(HubError::conflict(
                "too_many_agents",
                format!("a team may enrol at most {MAX_AGENTS_PER_TEAM} agents"),
            ));
        }
        let agent = Agent {
            id,
            team_id: spent.team_id.clone(),
            name: req.name.clone(),
            agent_group: spent.agent_group.clone(),
            public_key: key.to_base64(),
            platform: req.platform.clone(),
            version: req.version.clone(),
            enrolled_by: spent.created_by.clone(),
            created_at: now,
            last_seen_at: None,
            disconnected_at: None,
            connected_node: None,
            node_red: "none".to_string(),
            running_snapshot: None,
            revoked_at: None,
            encryption_key: STANDARD.encode(encryption_key),
            build_sha256: None,
            site_report: None,
        };
        match tx.create_agent(&agent).await {
            Ok(()) => {}
            // Rolled back with the token: it stays usable under another name.
            Err(StoreError::Conflict(_)) => {
                return Err(HubError::conflict(
                    "name_taken",
                    "the team has an agent with this name (or this key is enrolled already)",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let details = json!({
            "agent_id": agent.id,
            "token_id": spent.id,
            "group": agent.agent_group,
            "key": key.fingerprint(),
            "platform": agent.platform,
            "version": agent.version,
        });
        self.note(
            &mut tx,
            Who::anonymous(origin),
            agent_event(&agent, AuditEvent::AgentEnrolled, details),
        );
        self.commit(tx, 1).await?;
        Ok(agent)
    }

    /// The team's agents, by name.
    pub async fn agents(&self, team_id: &str) -> HubResult<Vec<Agent>> {
        Ok(self.store.list_agents(team_id).await?)
    }

    /// The team's agent named by id or name; another team's is `NotFound`.
    pub async fn agent(&self, team_id: &str, id_or_name: &str) -> HubResult<Agent> {
        if let Some(a) = self.store.get_agent(team_id, id_or_name).await? {
            return Ok(a);
        }
        self.store
            .agent_by_name(team_id, id_or_name)
            .await?
            .ok_or(HubError::NotFound)
    }

    /// Revokes the agent: its connection closes (on whichever hub holds it)
    /// and it is refused from now on. Kept in the list, marked revoked.
    pub async fn revoke_agent(
        &self,
        who: Who<'_>,
        team_id: &str,
        id_or_name: &str,
    ) -> HubResult<Agent> {
        let agent = self.agent(team_id, id_or_name).await?;
        let mut tx = self.begin().await?;
        if !tx.revoke_agent(team_id, &agent.id, self.now()).await? {
            return Err(HubError::conflict(
                "already_revoked",
                "the agent is revoked already",
            ));
        }
        self.note(
            &mut tx,
            who,
            agent_event(
                &agent,
                AuditEvent::AgentRevoked,
                json!({ "agent_id": agent.id }),
            ),
        );
        self.commit(tx, 1).await?;
        self.announce_agent_event(AgentEvent::Revoked(agent.id.clone()))
            .await;
        self.agent(team_id, &agent.id).await
    }

    /// Deletes the agent (revoked first if it was not).
    pub async fn delete_agent(
        &self,
        who: Who<'_>,
        team_id: &str,
        id_or_name: &str,
    ) -> HubResult<()> {
        let agent = self.agent(team_id, id_or_name).await?;
        if let Some(instance) = self.store.get_instance_of_agent(&agent.id).await? {
            return Err(HubError::conflict(
                "agent_runs_instance",
                format!(
                    "the agent runs the instance {}; delete that instance first",
                    instance.name
                ),
            ));
        }
        let mut tx = self.begin().await?;
        if !tx.delete_agent(team_id, &agent.id).await? {
            return Err(HubError::NotFound);
        }
        self.note(
            &mut tx,
            who,
            agent_event(
                &agent,
                AuditEvent::AgentDeleted,
                json!({ "agent_id": agent.id, "was_revoked": agent.revoked_at.is_some() }),
            ),
        );
        self.commit(tx, 1).await?;
        self.announce_agent_event(AgentEvent::Revoked(agent.id))
            .await;
        Ok(())
    }

    /// Queues a command for the agent and tells the hub holding its
    /// connection; the answer is read with [`Hub::agent_command`].
    pub async fn send_agent_command(
        &self,
        who: Who<'_>,
        team_id: &str,
        id_or_name: &str,
        creator_id: Option<&str>,
        command: &AgentCommand,
    ) -> HubResult<AgentCommandRow> {
        match command {
            // A deploy is a deployment and an update a rollout (their own
            // permissions, rows and audit entries): never bare commands.
            AgentCommand::Deploy { .. } => {
                return Err(HubError::invalid(
                    "invalid_command",
                    "snapshots are deployed to agents through the team's deploys, with the agent or its group as the target",
                ))
            }
            AgentCommand::Update { .. } => {
                return Err(HubError::invalid(
                    "invalid_command",
                    "agent builds are rolled out through the team's agent updates",
                ))
            }
            AgentCommand::Ping | AgentCommand::Restart => {}
        }
        let agent = self.agent(team_id, id_or_name).await?;
        if agent.revoked_at.is_some() {
            return Err(HubError::conflict("agent_revoked", "the agent is revoked"));
        }
        let row = AgentCommandRow {
            id: crate::ids::new_id(),
            agent_id: agent.id.clone(),
            team_id: team_id.to_string(),
            command: serde_json::to_string(command).map_err(HubError::internal)?,
            created_by: creator_id.map(str::to_string),
            created_at: self.now(),
            sent_at: None,
            done_at: None,
            ok: None,
            message: None,
            update_id: None,
        };
        let mut tx = self.begin().await?;
        tx.create_agent_command(&row).await?;
        self.note(
            &mut tx,
            who,
            agent_event(
                &agent,
                AuditEvent::AgentCommandSent,
                json!({ "agent_id": agent.id, "command_id": row.id, "command": command.name() }),
            ),
        );
        self.commit(tx, 1).await?;
        self.announce_commands(vec![agent.id]).await;
        Ok(row)
    }

    /// The team's command with this id, with the agent's answer once given.
    pub async fn agent_command(&self, team_id: &str, id: &str) -> HubResult<AgentCommandRow> {
        self.store
            .get_agent_command(team_id, id)
            .await?
            .ok_or(HubError::NotFound)
    }

    // ---- the gateway's calls, for one agent connection ----

    /// Checks an agent's answer to the challenge `nonce`. Unknown agents,
    /// revoked ones and bad signatures get the same refusal (one
    /// aggregated entry per source and minute). A proved agent that dials
    /// again faster than its pace (`redwall_policy::pace::Pace::agent_dials`)
    /// gets [`HubError::Throttled`], before anything is written.
    pub async fn authenticate_agent(
        &self,
        origin: &Origin,
        agent_id: &str,
        nonce: &str,
        signature: &str,
    ) -> HubResult<Agent> {
        let refused =
            || HubError::unauthenticated("unauthenticated", "the agent is not recognised");
        let agent = match self.store.agent_by_id(agent_id).await? {
            Some(a) if a.revoked_at.is_none() => a,
            _ => {
                self.agent_refusal(
                    origin,
                    AuditEvent::AgentConnectRefused,
                    "unknown_agent",
                    agent_id,
                )
                .await;
                return Err(refused());
            }
        };
        let good = PublicKey::from_base64(&agent.public_key).is_ok_and(|key| {
            STANDARD.decode(signature.trim()).is_ok_and(|sig| {
                key.verify(HELLO_CONTEXT, &hello_message(agent_id, nonce), &sig)
                    .is_ok()
            })
        });
        if !good {
            self.agent_refusal(
                origin,
                AuditEvent::AgentConnectRefused,
                "bad_signature",
                &agent.name,
            )
            .await;
            return Err(refused());
        }
        // Paced only once the key is proved: a stranger naming an agent
        // can never use up its pace.
        if let Err(wait) = self.agent_dials.admit(&agent.id) {
            return Err(HubError::Throttled {
                retry_after_secs: i64::try_from(wait.as_millis().div_ceil(1_000))
                    .unwrap_or(i64::MAX),
            });
        }
        Ok(agent)
    }

    /// A heartbeat (or the welcome) of a connected agent. False when the
    /// agent was revoked or deleted meanwhile: close its connection.
    pub async fn agent_heartbeat(&self, agent_id: &str, status: &AgentStatus) -> HubResult<bool> {
        let node_red: String = status
            .node_red
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(20)
            .collect();
        let snapshot = status
            .running_snapshot
            .as_deref()
            .filter(|s| s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
        // Typed already (read strictly); kept as the agent's own figures.
        let site = status
            .site
            .as_ref()
            .and_then(|s| serde_json::to_string(s).ok());
        Ok(self
            .store
            .record_agent_heartbeat(
                agent_id,
                &self.node,
                &node_red,
                snapshot,
                site.as_deref(),
                self.now(),
            )
            .await?)
    }

    /// A new connection of the agent, here: every older one, on any hub,
    /// is told to close.
    pub async fn agent_connected(&self, agent_id: &str, connection: &str) {
        self.announce_agent_event(AgentEvent::Connected {
            agent_id: agent_id.to_string(),
            connection: connection.to_string(),
        })
        .await;
    }

    /// The agent's connection through this hub ended.
    pub async fn agent_disconnected(&self, agent_id: &str) {
        if let Err(e) = self
            .store
            .record_agent_disconnect(agent_id, &self.node, self.now())
            .await
        {
            tracing::warn!(agent = agent_id, error = %e, "an agent's disconnection was not recorded");
        }
    }

    /// The agent's commands to hand it now, claimed for this connection
    /// (another hub never sends the same one): those not sent yet, and
    /// deploys and updates sent on an earlier connection that the agent
    /// never answered (the link or a hub went down meanwhile). An agent
    /// answers at once for a snapshot or a build it already runs, repeats
    /// an answer it gave, and does not start an update twice.
    pub async fn claim_agent_commands(
        &self,
        agent_id: &str,
        reconnected: bool,
    ) -> HubResult<Vec<(String, AgentCommand)>> {
        let mut out = Vec::new();
        if reconnected {
            for row in self.store.unanswered_agent_commands(agent_id).await? {
                let Ok(command @ (AgentCommand::Deploy { .. } | AgentCommand::Update { .. })) =
                    serde_json::from_str::<AgentCommand>(&row.command)
                else {
                    continue;
                };
                let Some(sent_at) = row.sent_at else { continue };
                if self
                    .store
                    .reclaim_agent_command(&row.id, sent_at, self.now())
                    .await?
                {
                    out.push((row.id, command));
                }
            }
        }
        for row in self.store.unsent_agent_commands(agent_id).await? {
            if !self.store.claim_agent_command(&row.id, self.now()).await? {
                continue;
            }
            match serde_json::from_str::<AgentCommand>(&row.command) {
                Ok(command) => out.push((row.id, command)),
                Err(_) => {
                    // Never written by this hub: answer it as failed.
                    self.store
                        .finish_agent_command(
                            agent_id,
                            &row.id,
                            false,
                            "unreadable command",
                            self.now(),
                        )
                        .await?;
                }
            }
        }
        Ok(out)
    }

    /// The agent's answer to one of its commands: a deploy's answer ends
    /// its deployment; an update's counts only if the agent connected with
    /// the build's digest. A second answer changes nothing.
    pub async fn agent_command_done(
        &self,
        origin: &Origin,
        agent_id: &str,
        command_id: &str,
        ok: bool,
        message: &str,
    ) -> HubResult<()> {
        let message: String = message
            .chars()
            .filter(|c| !c.is_control())
            .take(500)
            .collect();
        let Some(agent) = self.store.agent_by_id(agent_id).await? else {
            return Ok(());
        };
        let Some(row) = self
            .store
            .get_agent_command(&agent.team_id, command_id)
            .await?
            .filter(|c| c.agent_id == agent.id && c.done_at.is_none())
        else {
            // Unknown, another agent's, or answered already.
            return Ok(());
        };
        let command = serde_json::from_str::<AgentCommand>(&row.command).ok();
        let (ok, message) = match &command {
            Some(AgentCommand::Update { build_id }) => {
                self.update_answer_counts(&agent, build_id, ok, &message)
                    .await?
            }
            _ => (ok, message),
        };
        if !self
            .store
            .finish_agent_command(agent_id, command_id, ok, &message, self.now())
            .await?
        {
            return Ok(());
        }
        match &command {
            Some(AgentCommand::Deploy { .. }) => {
                self.agent_deploy_answered(origin, &agent, command_id, ok, &message)
                    .await
            }
            Some(AgentCommand::Update { build_id }) => {
                self.audit_update_answer(origin, &agent, &row, build_id, ok, &message)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// What the agent said it runs as it connected (its hello): recorded,
    /// and the agent as it now stands.
    pub async fn agent_build_reported(
        &self,
        mut agent: Agent,
        version: &str,
        build_sha256: Option<&str>,
    ) -> HubResult<Agent> {
        let version = if check_version(version).is_ok() {
            version
        } else {
            "unknown"
        };
        let sha = build_sha256.filter(|s| {
            s.len() == 64
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        self.store
            .record_agent_build(&agent.id, version, sha)
            .await?;
        agent.version = version.to_string();
        agent.build_sha256 = sha.map(str::to_string);
        Ok(agent)
    }

    /// What this process's agent connections must act on.
    pub fn agent_events(&self) -> tokio::sync::broadcast::Receiver<AgentEvent> {
        self.agent_events.subscribe()
    }

    /// Tells this process's gateway and (through PostgreSQL) every other
    /// hub's. Returns once the others were told.
    pub(crate) async fn announce_agent_event(&self, event: AgentEvent) {
        let _ = self.agent_events.send(event.clone());
        for payload in event.payloads(&self.node) {
            if let Err(e) = self.store.notify(AGENT_EVENTS, &payload).await {
                // Committed: a revoked agent is refused at its next
                // heartbeat and connection; a command waits for the next
                // connection.
                tracing::error!(error = %e, "other hubs could not be told of an agent event");
            }
        }
    }

    /// Subscribes to the agent announcements of the other hubs on this
    /// database (`None` on SQLite). Awaited before the hub accepts anyone:
    /// an agent accepted before would miss a revocation or a command
    /// announced meanwhile.
    pub async fn listen_for_agent_events(&self) -> HubResult<Option<Listener>> {
        Ok(self.store.listen(AGENT_EVENTS).await?)
    }

    /// Relays the agent announcements `listener` hears into this process.
    /// When the link drops, announcements may have been missed: every
    /// connection is closed.
    pub async fn relay_agent_events(&self, mut listener: Listener) {
        loop {
            loop {
                match listener.next().await {
                    Ok(Some(payload)) => {
                        if let Some(event) = AgentEvent::from_payload(&payload, &self.node) {
                            let _ = self.agent_events.send(event);
                        }
                    }
                    Ok(None) => {
                        let _ = self.agent_events.send(AgentEvent::CloseAll);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the link for other hubs' agent events broke");
                        let _ = self.agent_events.send(AgentEvent::CloseAll);
                        break;
                    }
                }
            }
            match self.store.listen_again(AGENT_EVENTS).await {
                Some(again) => listener = again,
                None => return,
            }
        }
    }

    async fn agent_refusal(
        &self,
        origin: &Origin,
        event: AuditEvent,
        reason: &'static str,
        claimed: &str,
    ) {
        let claimed: String = claimed
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let refusal = Refusal {
            event,
            reason,
            team_id: None,
            target: Some(format!("agent:{claimed}")),
            actor: None,
            details: serde_json::Value::Null,
        };
        if let Err(e) = self.record_refusal(origin, refusal).await {
            tracing::warn!(error = %e, "a refused agent could not be recorded");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn announcements_name_their_hub_and_skip_our_own() {
        let one = |e: &AgentEvent| {
            let mut p = e.payloads("n1");
            assert_eq!(p.len(), 1);
            p.remove(0)
        };
        let e = AgentEvent::Revoked("a1".into());
        let p = one(&e);
        assert_eq!(AgentEvent::from_payload(&p, "n1"), None);
        assert_eq!(AgentEvent::from_payload(&p, "n2"), Some(e));
        let c = one(&AgentEvent::Commands(vec!["a2".to_string()].into()));
        assert_eq!(
            AgentEvent::from_payload(&c, "n2"),
            Some(AgentEvent::Commands(vec!["a2".to_string()].into()))
        );
        let c = AgentEvent::Connected {
            agent_id: "a3".into(),
            connection: "c9".into(),
        };
        assert_eq!(AgentEvent::from_payload(&one(&c), "n2"), Some(c));
        assert_eq!(AgentEvent::from_payload("n1:connected:a3", "n2"), None);
        assert_eq!(AgentEvent::from_payload("n1:bogus:a", "n2"), None);
        assert_eq!(AgentEvent::from_payload("garbage", "n2"), None);
        assert!(AgentEvent::CloseAll.payloads("n1").is_empty());
    }

    #[test]
    fn a_rollout_to_many_agents_is_announced_in_payloads_postgres_takes() {
        let mut ids: Vec<String> = (0..1000).map(|i| format!("agent{i:021}")).collect();
        ids.sort();
        let e = AgentEvent::Commands(ids.clone().into());
        let payloads = e.payloads("n1");
        assert!(payloads.len() > 1);
        let mut heard = Vec::new();
        for p in &payloads {
            assert!(p.len() <= MAX_PAYLOAD_BYTES, "{} bytes", p.len());
            match AgentEvent::from_payload(p, "n2") {
                Some(AgentEvent::Commands(part)) => heard.extend(part.iter().cloned()),
                other => panic!("{other:?}"),
            }
        }
        heard.sort();
        assert_eq!(heard, ids);
        assert!(e.has_commands_for(&ids[500]));
        assert!(!e.has_commands_for("agent-elsewhere"));
        assert!(!AgentEvent::Revoked(ids[0].clone()).has_commands_for(&ids[0]));
    }

    #[test]
    fn challenges_are_fresh_and_of_the_agreed_size() {
        let a = new_challenge();
        assert_eq!(a.len(), agent_protocol::NONCE_CHARS);
        assert_ne!(a, new_challenge());
    }
}

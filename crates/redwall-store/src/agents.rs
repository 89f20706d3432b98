//! Remote agents, their one-time provisioning tokens and the commands
//! waiting for them. Changes an operator makes (tokens, enrolment,
//! revocation, commands) happen inside a [`Change`], so each carries its
//! audit entry; heartbeats and command answers are plain writes (they are
//! the agent's reports, not anyone's decisions).

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Change, Micros, Store, StoreError};

/// A provisioning token: only its digest is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentToken {
    pub id: String,
    pub team_id: String,
    pub token_digest: Vec<u8>,
    /// The group the enrolled agent joins.
    pub agent_group: Option<String>,
    pub created_by: Option<String>,
    pub created_at: Micros,
    pub expires_at: Micros,
    pub used_at: Option<Micros>,
    pub used_by_agent: Option<String>,
}

const TOKEN_COLUMNS: &str =
    "id, team_id, token_digest, agent_group, created_by, created_at, expires_at, used_at, used_by_agent";

fn token_from_row(row: &AnyRow) -> Result<AgentToken, sqlx::Error> {
    Ok(AgentToken {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        token_digest: row.try_get("token_digest")?,
        agent_group: row.try_get("agent_group")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
        used_by_agent: row.try_get("used_by_agent")?,
    })
}

/// An enrolled agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub agent_group: Option<String>,
    /// Its Ed25519 public key, standard base64.
    pub public_key: String,
    pub platform: String,
    pub version: String,
    /// Who made the provisioning token it enrolled with.
    pub enrolled_by: Option<String>,
    pub created_at: Micros,
    pub last_seen_at: Option<Micros>,
    pub disconnected_at: Option<Micros>,
    /// The hub replica that holds its connection (or held the last one).
    pub connected_node: Option<String>,
    /// Node-RED's state as the agent last reported it.
    pub node_red: String,
    pub running_snapshot: Option<String>,
    pub revoked_at: Option<Micros>,
    /// Its X25519 public key, standard base64: snapshots' credentials are
    /// sealed for it. Empty for an agent enrolled before agents had one.
    pub encryption_key: String,
    /// SHA-256 of the build it said it runs when it last connected.
    pub build_sha256: Option<String>,
    /// The site figures of its last heartbeat (JSON), if it sent any.
    pub site_report: Option<String>,
}

const AGENT_COLUMNS: &str = "id, team_id, name, agent_group, public_key, platform, version, \
     enrolled_by, created_at, last_seen_at, disconnected_at, connected_node, node_red, \
     running_snapshot, revoked_at, encryption_key, build_sha256, site_report";

fn agent_from_row(row: &AnyRow) -> Result<Agent, sqlx::Error> {
    Ok(Agent {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        name: row.try_get("name")?,
        agent_group: row.try_get("agent_group")?,
        public_key: row.try_get("public_key")?,
        platform: row.try_get("platform")?,
        version: row.try_get("version")?,
        enrolled_by: row.try_get("enrolled_by")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        disconnected_at: row.try_get("disconnected_at")?,
        connected_node: row.try_get("connected_node")?,
        node_red: row.try_get("node_red")?,
        running_snapshot: row.try_get("running_snapshot")?,
        revoked_at: row.try_get("revoked_at")?,
        encryption_key: row.try_get("encryption_key")?,
        build_sha256: row.try_get("build_sha256")?,
        site_report: row.try_get("site_report")?,
    })
}

/// A command for an agent and, once it answered, the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCommandRow {
    pub id: String,
    pub agent_id: String,
    pub team_id: String,
    /// JSON of `redwall_policy::agent_protocol::AgentCommand`.
    pub command: String,
    pub created_by: Option<String>,
    pub created_at: Micros,
    pub sent_at: Option<Micros>,
    pub done_at: Option<Micros>,
    pub ok: Option<bool>,
    pub message: Option<String>,
    /// The rollout of a build it belongs to (an update command).
    pub update_id: Option<String>,
}

const COMMAND_COLUMNS: &str =
    "id, agent_id, team_id, command, created_by, created_at, sent_at, done_at, ok, message, update_id";

fn command_from_row(row: &AnyRow) -> Result<AgentCommandRow, sqlx::Error> {
    let ok: Option<i64> = row.try_get("ok")?;
    Ok(AgentCommandRow {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        team_id: row.try_get("team_id")?,
        command: row.try_get("command")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
        done_at: row.try_get("done_at")?,
        ok: ok.map(|v| v != 0),
        message: row.try_get("message")?,
        update_id: row.try_get("update_id")?,
    })
}

impl Change {
    /// The snapshot an agent runs, as its deployment ended.
    pub async fn set_agent_running_snapshot(
        &mut self,
        agent_id: &str,
        snapshot_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET running_snapshot = $2 WHERE id = $1")
            .bind(agent_id)
            .bind(snapshot_id)
            .execute(&mut **self.tx())
            .await?;
        Ok(())
    }

    pub async fn create_agent_token(&mut self, t: &AgentToken) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO agent_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&t.id)
        .bind(&t.team_id)
        .bind(t.token_digest.as_slice())
        .bind(&t.agent_group)
        .bind(&t.created_by)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.used_at)
        .bind(&t.used_by_agent)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Spends the token with this digest for `agent_id`, if it is unused
    /// and unexpired at `now`: a conditional update, so of two enrolments
    /// racing with one token exactly one wins. The token as it was, or
    /// `None` (unknown, used or expired: the caller cannot tell which).
    pub async fn spend_agent_token(
        &mut self,
        digest: &[u8],
        agent_id: &str,
        now: Micros,
    ) -> Result<Option<AgentToken>, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_tokens SET used_at = $2, used_by_agent = $3 \
             WHERE token_digest = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(digest)
        .bind(now)
        .bind(agent_id)
        .execute(&mut **self.tx())
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM agent_tokens WHERE token_digest = $1"
        ))
        .bind(digest)
        .fetch_optional(&mut **self.tx())
        .await?;
        Ok(row.as_ref().map(token_from_row).transpose()?)
    }

    /// How many agents the team has, read inside this change (a change
    /// must never wait for a second connection of the pool while it holds
    /// one: enough of them at once would wait on each other).
    pub async fn count_agents(&mut self, team_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM agents WHERE team_id = $1")
            .bind(team_id)
            .fetch_one(&mut **self.tx())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Deletes the team's unused token; whether there was one.
    pub async fn delete_agent_token(
        &mut self,
        team_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM agent_tokens WHERE team_id = $1 AND id = $2 AND used_at IS NULL",
        )
        .bind(team_id)
        .bind(id)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores a new agent. `Conflict` when the team has one by that name
    /// (or the key is already enrolled).
    pub async fn create_agent(&mut self, a: &Agent) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO agents ({AGENT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        ))
        .bind(&a.id)
        .bind(&a.team_id)
        .bind(&a.name)
        .bind(&a.agent_group)
        .bind(&a.public_key)
        .bind(&a.platform)
        .bind(&a.version)
        .bind(&a.enrolled_by)
        .bind(a.created_at)
        .bind(a.last_seen_at)
        .bind(a.disconnected_at)
        .bind(&a.connected_node)
        .bind(&a.node_red)
        .bind(&a.running_snapshot)
        .bind(a.revoked_at)
        .bind(&a.encryption_key)
        .bind(&a.build_sha256)
        .bind(&a.site_report)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Marks the team's agent revoked; false when there is no such agent
    /// or it already was.
    pub async fn revoke_agent(
        &mut self,
        team_id: &str,
        id: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agents SET revoked_at = $3 WHERE team_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(team_id)
        .bind(id)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes the team's agent (its commands go with it); whether it existed.
    pub async fn delete_agent(&mut self, team_id: &str, id: &str) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM agent_commands WHERE team_id = $1 AND agent_id = $2")
            .bind(team_id)
            .bind(id)
            .execute(&mut **self.tx())
            .await?;
        // Only the team's own agent (the id alone is not trusted here).
        for table in ["agent_logs", "agent_event_streams"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE agent_id = $1 AND agent_id IN \
                 (SELECT id FROM agents WHERE team_id = $2)"
            ))
            .bind(id)
            .bind(team_id)
            .execute(&mut **self.tx())
            .await?;
        }
        let done = sqlx::query("DELETE FROM agents WHERE team_id = $1 AND id = $2")
            .bind(team_id)
            .bind(id)
            .execute(&mut **self.tx())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn create_agent_command(&mut self, c: &AgentCommandRow) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO agent_commands ({COMMAND_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&c.id)
        .bind(&c.agent_id)
        .bind(&c.team_id)
        .bind(&c.command)
        .bind(&c.created_by)
        .bind(c.created_at)
        .bind(c.sent_at)
        .bind(c.done_at)
        .bind(c.ok.map(i64::from))
        .bind(&c.message)
        .bind(&c.update_id)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }
}

impl Store {
    /// The team's agents, by name.
    pub async fn list_agents(&self, team_id: &str) -> Result<Vec<Agent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE team_id = $1 ORDER BY name, id"
        ))
        .bind(team_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(agent_from_row).collect::<Result<_, _>>()?)
    }

    /// The team's agent with this id.
    pub async fn get_agent(&self, team_id: &str, id: &str) -> Result<Option<Agent>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE team_id = $1 AND id = $2"
        ))
        .bind(team_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(agent_from_row).transpose()?)
    }

    /// The team's agent with this name.
    pub async fn agent_by_name(
        &self,
        team_id: &str,
        name: &str,
    ) -> Result<Option<Agent>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE team_id = $1 AND name = $2"
        ))
        .bind(team_id)
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(agent_from_row).transpose()?)
    }

    /// The agent with this id in any team (an agent's connection names
    /// only itself).
    pub async fn agent_by_id(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        let row = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(agent_from_row).transpose()?)
    }

    /// The team's provisioning tokens not used yet (expired ones too, so
    /// they can be seen and deleted), newest first.
    pub async fn open_agent_tokens(&self, team_id: &str) -> Result<Vec<AgentToken>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM agent_tokens WHERE team_id = $1 AND used_at IS NULL \
             ORDER BY created_at DESC, id"
        ))
        .bind(team_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
    }

    /// A heartbeat (or a welcome) from an agent, through the hub `node`.
    /// False when the agent is revoked or gone: its connection must close.
    pub async fn record_agent_heartbeat(
        &self,
        id: &str,
        node: &str,
        node_red: &str,
        running_snapshot: Option<&str>,
        site_report: Option<&str>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agents SET last_seen_at = $2, connected_node = $3, node_red = $4, \
             running_snapshot = $5, site_report = $6 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .bind(node)
        .bind(node_red)
        .bind(running_snapshot)
        .bind(site_report)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// What the agent said it runs as it connected: its version and the
    /// SHA-256 of its executable.
    pub async fn record_agent_build(
        &self,
        id: &str,
        version: &str,
        build_sha256: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET version = $2, build_sha256 = $3 WHERE id = $1")
            .bind(id)
            .bind(version)
            .bind(build_sha256)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The commands of a rollout of a build.
    pub async fn update_commands(
        &self,
        update_id: &str,
    ) -> Result<Vec<AgentCommandRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COMMAND_COLUMNS} FROM agent_commands WHERE update_id = $1 ORDER BY created_at, id"
        ))
        .bind(update_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(command_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The agent's connection through `node` ended (unless a newer one,
    /// through another hub, already took over).
    pub async fn record_agent_disconnect(
        &self,
        id: &str,
        node: &str,
        now: Micros,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET disconnected_at = $3 WHERE id = $1 AND connected_node = $2")
            .bind(id)
            .bind(node)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Commands sent to the agent on an earlier connection that it never
    /// answered, oldest first: a deploy among them is handed over again
    /// (the agent answers at once for a snapshot it already runs).
    pub async fn unanswered_agent_commands(
        &self,
        agent_id: &str,
    ) -> Result<Vec<AgentCommandRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COMMAND_COLUMNS} FROM agent_commands WHERE agent_id = $1 \
             AND sent_at IS NOT NULL AND done_at IS NULL ORDER BY created_at, id"
        ))
        .bind(agent_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(command_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Claims a sent, unanswered command for sending again: true for
    /// exactly one caller (the one that saw `sent_at` as it was).
    pub async fn reclaim_agent_command(
        &self,
        id: &str,
        sent_at: Micros,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_commands SET sent_at = $3 \
             WHERE id = $1 AND sent_at = $2 AND done_at IS NULL",
        )
        .bind(id)
        .bind(sent_at)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Commands not yet sent to the agent, oldest first.
    pub async fn unsent_agent_commands(
        &self,
        agent_id: &str,
    ) -> Result<Vec<AgentCommandRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COMMAND_COLUMNS} FROM agent_commands WHERE agent_id = $1 AND sent_at IS NULL \
             ORDER BY created_at, id"
        ))
        .bind(agent_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(command_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Claims a command for sending: true for exactly one caller, so two
    /// hubs never both send it.
    pub async fn claim_agent_command(&self, id: &str, now: Micros) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE agent_commands SET sent_at = $2 WHERE id = $1 AND sent_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The agent's answer to one of its commands (a second answer is ignored).
    pub async fn finish_agent_command(
        &self,
        agent_id: &str,
        id: &str,
        ok: bool,
        message: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_commands SET done_at = $3, ok = $4, message = $5 \
             WHERE agent_id = $1 AND id = $2 AND done_at IS NULL",
        )
        .bind(agent_id)
        .bind(id)
        .bind(now)
        .bind(i64::from(ok))
        .bind(message)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The team's command with this id.
    pub async fn get_agent_command(
        &self,
        team_id: &str,
        id: &str,
    ) -> Result<Option<AgentCommandRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COMMAND_COLUMNS} FROM agent_commands WHERE team_id = $1 AND id = $2"
        ))
        .bind(team_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(command_from_row).transpose()?)
    }
}

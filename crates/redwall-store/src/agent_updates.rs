//! Agent builds the hub offers (stored whole, with the statement it
//! signed) and their rollouts to a team's agents, batch by batch.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Change, Micros, Store, StoreError};

/// An agent build, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentBuild {
    pub id: String,
    pub version: String,
    pub platform: String,
    pub sha256: String,
    pub size: i64,
    /// `redwall_policy::agent_protocol::BuildStatement`, canonical JSON.
    pub statement: String,
    pub signature: Vec<u8>,
    pub created_by: Option<String>,
    pub created_at: Micros,
}

const BUILD_COLUMNS: &str =
    "id, version, platform, sha256, size, statement, signature, created_by, created_at";

fn build_from_row(row: &AnyRow) -> Result<AgentBuild, sqlx::Error> {
    Ok(AgentBuild {
        id: row.try_get("id")?,
        version: row.try_get("version")?,
        platform: row.try_get("platform")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        statement: row.try_get("statement")?,
        signature: row.try_get("signature")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A rollout of a build to the agents a target names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentUpdate {
    pub id: String,
    pub team_id: String,
    pub build_id: String,
    /// The target (`Target` of the hub's snapshots) as JSON.
    pub target: String,
    pub batch_size: i64,
    /// rolling, done or stopped.
    pub status: String,
    pub error: Option<String>,
    pub created_by: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

const UPDATE_COLUMNS: &str = "id, team_id, build_id, target, batch_size, status, error, \
     created_by, created_at, updated_at";

fn update_from_row(row: &AnyRow) -> Result<AgentUpdate, sqlx::Error> {
    Ok(AgentUpdate {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        build_id: row.try_get("build_id")?,
        target: row.try_get("target")?,
        batch_size: row.try_get("batch_size")?,
        status: row.try_get("status")?,
        error: row.try_get("error")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Change {
    /// Stores a build; `Conflict` when the same bytes are stored already
    /// for that platform.
    pub async fn create_agent_build(
        &mut self,
        b: &AgentBuild,
        body: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO agent_builds ({BUILD_COLUMNS}, body) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&b.id)
        .bind(&b.version)
        .bind(&b.platform)
        .bind(&b.sha256)
        .bind(b.size)
        .bind(&b.statement)
        .bind(&b.signature)
        .bind(&b.created_by)
        .bind(b.created_at)
        .bind(body)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Deletes a build (its rollouts go with it); whether it existed.
    pub async fn delete_agent_build(&mut self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM agent_builds WHERE id = $1")
            .bind(id)
            .execute(&mut **self.tx())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn create_agent_update(&mut self, u: &AgentUpdate) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO agent_updates ({UPDATE_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&u.id)
        .bind(&u.team_id)
        .bind(&u.build_id)
        .bind(&u.target)
        .bind(u.batch_size)
        .bind(&u.status)
        .bind(&u.error)
        .bind(&u.created_by)
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Ends a rollout still rolling; false when it already ended.
    pub async fn end_agent_update(
        &mut self,
        id: &str,
        status: &str,
        error: Option<&str>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_updates SET status = $2, error = $3, updated_at = $4 \
             WHERE id = $1 AND status = 'rolling'",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Every build, newest first.
    pub async fn list_agent_builds(&self) -> Result<Vec<AgentBuild>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM agent_builds ORDER BY created_at DESC, id"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(build_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn get_agent_build(&self, id: &str) -> Result<Option<AgentBuild>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM agent_builds WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(build_from_row).transpose()?)
    }

    /// A build's bytes.
    pub async fn agent_build_body(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT body FROM agent_builds WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("body")?),
            None => None,
        })
    }

    /// The team's rollouts, newest first.
    pub async fn list_agent_updates(&self, team_id: &str) -> Result<Vec<AgentUpdate>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {UPDATE_COLUMNS} FROM agent_updates WHERE team_id = $1 \
             ORDER BY created_at DESC, id LIMIT 100"
        ))
        .bind(team_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(update_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn get_agent_update(
        &self,
        team_id: &str,
        id: &str,
    ) -> Result<Option<AgentUpdate>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {UPDATE_COLUMNS} FROM agent_updates WHERE team_id = $1 AND id = $2"
        ))
        .bind(team_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(update_from_row).transpose()?)
    }

    /// Every rollout still rolling, oldest first.
    pub async fn rolling_agent_updates(&self) -> Result<Vec<AgentUpdate>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {UPDATE_COLUMNS} FROM agent_updates WHERE status = 'rolling' \
             ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(update_from_row).collect::<Result<_, _>>()?)
    }

    /// Takes the next step of a rollout for this process: true for exactly
    /// one of the replicas that saw it at `seen` (its `updated_at`).
    pub async fn claim_agent_update(
        &self,
        id: &str,
        seen: Micros,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_updates SET updated_at = $3 \
             WHERE id = $1 AND updated_at = $2 AND status = 'rolling'",
        )
        .bind(id)
        .bind(seen)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

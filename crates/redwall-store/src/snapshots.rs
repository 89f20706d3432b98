//! Snapshots of instances' flows, the hub's signing keys, what each
//! instance runs, and deployments with their progress.
//!
//! A snapshot row is written once; the database refuses to update it. Its
//! integrity is not the store's business: the hub checks the hashes and the
//! signature each time it loads one, so a row changed behind Redwall's back
//! is refused there.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Change, Micros, Store, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRow {
    pub id: String,
    pub team_id: String,
    /// The instance it was taken from (or imported into); kept after that
    /// instance is deleted.
    pub instance_id: Option<String>,
    pub kind: String,
    pub note: String,
    pub content_sha256: String,
    pub flows_sha256: String,
    /// Canonical JSON: flows, environment variable names, options, modules.
    pub content: String,
    pub sealed_data_key: Vec<u8>,
    pub sealed_credentials: Vec<u8>,
    /// The canonical JSON the hub signed.
    pub statement: String,
    pub signature: Vec<u8>,
    /// The signer's public key (base64).
    pub signing_key: String,
    pub created_by: Option<String>,
    pub created_at: Micros,
}

/// A snapshot without its content, for lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub id: String,
    pub team_id: String,
    pub instance_id: Option<String>,
    pub kind: String,
    pub note: String,
    pub content_sha256: String,
    pub flows_sha256: String,
    pub created_by: Option<String>,
    pub created_at: Micros,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub id: String,
    pub public_key: String,
    pub sealed_key: Vec<u8>,
    pub created_at: Micros,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    pub team_id: String,
    /// The instance it deploys to, or
    pub instance_id: Option<String>,
    /// the remote agent it deploys to (exactly one of the two).
    pub agent_id: Option<String>,
    /// An agent's deployment: the command that carries it to the agent,
    /// once issued.
    pub command_id: Option<String>,
    pub snapshot_id: String,
    pub previous_snapshot_id: Option<String>,
    pub reason: String,
    pub status: String,
    pub step: String,
    pub error: Option<String>,
    pub requested_by: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
    /// `redwall_policy::deploy_window::DeployWindow` as JSON (`{}`: now).
    pub schedule: String,
    /// The promotion it carries out, if any.
    pub promotion_id: Option<String>,
}

const SNAPSHOT_COLUMNS: &str = "id, team_id, instance_id, kind, note, content_sha256, \
     flows_sha256, content, sealed_data_key, sealed_credentials, statement, signature, \
     signing_key, created_by, created_at";

const SUMMARY_COLUMNS: &str =
    "id, team_id, instance_id, kind, note, content_sha256, flows_sha256, created_by, created_at";

const DEPLOYMENT_COLUMNS: &str = "id, team_id, instance_id, agent_id, command_id, snapshot_id, \
     previous_snapshot_id, reason, status, step, error, requested_by, created_at, updated_at, \
     schedule, promotion_id";

fn snapshot_from_row(row: &AnyRow) -> Result<SnapshotRow, sqlx::Error> {
    Ok(SnapshotRow {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        instance_id: row.try_get("instance_id")?,
        kind: row.try_get("kind")?,
        note: row.try_get("note")?,
        content_sha256: row.try_get("content_sha256")?,
        flows_sha256: row.try_get("flows_sha256")?,
        content: row.try_get("content")?,
        sealed_data_key: row.try_get("sealed_data_key")?,
        sealed_credentials: row.try_get("sealed_credentials")?,
        statement: row.try_get("statement")?,
        signature: row.try_get("signature")?,
        signing_key: row.try_get("signing_key")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

fn summary_from_row(row: &AnyRow) -> Result<SnapshotSummary, sqlx::Error> {
    Ok(SnapshotSummary {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        instance_id: row.try_get("instance_id")?,
        kind: row.try_get("kind")?,
        note: row.try_get("note")?,
        content_sha256: row.try_get("content_sha256")?,
        flows_sha256: row.try_get("flows_sha256")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

fn deployment_from_row(row: &AnyRow) -> Result<Deployment, sqlx::Error> {
    Ok(Deployment {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        instance_id: row.try_get("instance_id")?,
        agent_id: row.try_get("agent_id")?,
        command_id: row.try_get("command_id")?,
        snapshot_id: row.try_get("snapshot_id")?,
        previous_snapshot_id: row.try_get("previous_snapshot_id")?,
        reason: row.try_get("reason")?,
        status: row.try_get("status")?,
        step: row.try_get("step")?,
        error: row.try_get("error")?,
        requested_by: row.try_get("requested_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        schedule: row.try_get("schedule")?,
        promotion_id: row.try_get("promotion_id")?,
    })
}

impl Change {
    pub async fn create_snapshot(&mut self, s: &SnapshotRow) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO snapshots ({SNAPSHOT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))
        .bind(&s.id)
        .bind(&s.team_id)
        .bind(&s.instance_id)
        .bind(&s.kind)
        .bind(&s.note)
        .bind(&s.content_sha256)
        .bind(&s.flows_sha256)
        .bind(&s.content)
        .bind(s.sealed_data_key.as_slice())
        .bind(s.sealed_credentials.as_slice())
        .bind(&s.statement)
        .bind(s.signature.as_slice())
        .bind(&s.signing_key)
        .bind(&s.created_by)
        .bind(s.created_at)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Deletes the team's snapshots with these ids (retention); how many went.
    pub async fn delete_snapshots(
        &mut self,
        team_id: &str,
        ids: &[String],
    ) -> Result<u64, StoreError> {
        let mut gone = 0;
        for id in ids {
            gone += sqlx::query("DELETE FROM snapshots WHERE team_id = $1 AND id = $2")
                .bind(team_id)
                .bind(id)
                .execute(&mut **self.tx())
                .await?
                .rows_affected();
        }
        Ok(gone)
    }

    /// Records what the instance now runs; false when there is no such
    /// instance in the team.
    pub async fn set_running_snapshot(
        &mut self,
        team_id: &str,
        instance_id: &str,
        snapshot_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE instances SET running_snapshot_id = $3 WHERE team_id = $1 AND id = $2",
        )
        .bind(team_id)
        .bind(instance_id)
        .bind(snapshot_id)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn create_deployment(&mut self, d: &Deployment) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(&d.id)
        .bind(&d.team_id)
        .bind(&d.instance_id)
        .bind(&d.agent_id)
        .bind(&d.command_id)
        .bind(&d.snapshot_id)
        .bind(&d.previous_snapshot_id)
        .bind(&d.reason)
        .bind(&d.status)
        .bind(&d.step)
        .bind(&d.error)
        .bind(&d.requested_by)
        .bind(d.created_at)
        .bind(d.updated_at)
        .bind(&d.schedule)
        .bind(&d.promotion_id)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Records what ran before a deployment started.
    pub async fn set_deployment_previous(
        &mut self,
        id: &str,
        previous: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE deployments SET previous_snapshot_id = $2 WHERE id = $1")
            .bind(id)
            .bind(previous)
            .execute(&mut **self.tx())
            .await?;
        Ok(())
    }

    /// Names the command that carries an agent's deployment.
    pub async fn set_deployment_command(
        &mut self,
        id: &str,
        command_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE deployments SET command_id = $2 WHERE id = $1")
            .bind(id)
            .bind(command_id)
            .execute(&mut **self.tx())
            .await?;
        Ok(())
    }

    /// Ends a deployment still under way (false when it already ended:
    /// an agent's answer that arrives twice counts once).
    pub async fn end_deployment(
        &mut self,
        id: &str,
        status: &str,
        step: &str,
        error: Option<&str>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE deployments SET status = $2, step = $3, error = $4, updated_at = $5 \
             WHERE id = $1 AND status IN ('waiting', 'deploying')",
        )
        .bind(id)
        .bind(status)
        .bind(step)
        .bind(error)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a deployment on: its status, step and error.
    pub async fn update_deployment(
        &mut self,
        id: &str,
        status: &str,
        step: &str,
        error: Option<&str>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE deployments SET status = $2, step = $3, error = $4, updated_at = $5 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(step)
        .bind(error)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// The team's snapshot with this id, whole.
    pub async fn get_snapshot(
        &self,
        team_id: &str,
        id: &str,
    ) -> Result<Option<SnapshotRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE team_id = $1 AND id = $2"
        ))
        .bind(team_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(snapshot_from_row).transpose()?)
    }

    /// The team's snapshots, newest first; only those of one instance when
    /// `instance_id` is given.
    pub async fn list_snapshots(
        &self,
        team_id: &str,
        instance_id: Option<&str>,
    ) -> Result<Vec<SnapshotSummary>, StoreError> {
        let rows = match instance_id {
            Some(instance) => {
                sqlx::query(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM snapshots WHERE team_id = $1 \
                     AND instance_id = $2 ORDER BY created_at DESC, id DESC"
                ))
                .bind(team_id)
                .bind(instance)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM snapshots WHERE team_id = $1 \
                     ORDER BY created_at DESC, id DESC"
                ))
                .bind(team_id)
                .fetch_all(self.pool())
                .await?
            }
        };
        Ok(rows
            .iter()
            .map(summary_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Snapshot ids some instance of the team runs, or some deployment
    /// still names (retention keeps them).
    pub async fn snapshots_in_use(&self, team_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT running_snapshot_id AS id FROM instances \
             WHERE team_id = $1 AND running_snapshot_id IS NOT NULL \
             UNION SELECT running_snapshot AS id FROM agents \
             WHERE team_id = $1 AND running_snapshot IS NOT NULL \
             UNION SELECT snapshot_id AS id FROM deployments \
             WHERE team_id = $1 AND status NOT IN ('done', 'failed', 'cancelled')",
        )
        .bind(team_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?)
    }

    /// The snapshot the instance runs, if Redwall knows it.
    pub async fn running_snapshot(&self, instance_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT running_snapshot_id FROM instances WHERE id = $1")
            .bind(instance_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => r.try_get("running_snapshot_id")?,
            None => None,
        })
    }

    /// The hub's signing key rows, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, public_key, sealed_key, created_at FROM signing_keys ORDER BY created_at, id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKeyRow {
                    id: r.try_get("id")?,
                    public_key: r.try_get("public_key")?,
                    sealed_key: r.try_get("sealed_key")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Stores a signing key unless one with this id exists (another
    /// replica won the race); the caller reads the keys back either way.
    pub async fn add_signing_key_if_absent(&self, key: &SigningKeyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys (id, public_key, sealed_key, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&key.id)
        .bind(&key.public_key)
        .bind(key.sealed_key.as_slice())
        .bind(key.created_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Takes a waiting deployment for this process: false when another
    /// took it first (replicas race on the same row).
    pub async fn claim_deployment(&self, id: &str, now: Micros) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE deployments SET status = 'deploying', step = 'starting', updated_at = $2 \
             WHERE id = $1 AND status = 'waiting'",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every deployment still waiting for its window, oldest first.
    pub async fn waiting_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE status = 'waiting' \
             ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(deployment_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The promotion's deployments.
    pub async fn promotion_deployments(
        &self,
        promotion_id: &str,
    ) -> Result<Vec<Deployment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE promotion_id = $1 \
             ORDER BY created_at, id"
        ))
        .bind(promotion_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(deployment_from_row)
            .collect::<Result<_, _>>()?)
    }

    pub async fn get_deployment(
        &self,
        team_id: &str,
        id: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE team_id = $1 AND id = $2"
        ))
        .bind(team_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(deployment_from_row).transpose()?)
    }

    /// The deployment an agent's command carries.
    pub async fn deployment_of_command(
        &self,
        agent_id: &str,
        command_id: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE agent_id = $1 AND command_id = $2"
        ))
        .bind(agent_id)
        .bind(command_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(deployment_from_row).transpose()?)
    }

    /// The agent's deployments, newest first, at most `limit`.
    pub async fn list_agent_deployments(
        &self,
        team_id: &str,
        agent_id: &str,
        limit: i64,
    ) -> Result<Vec<Deployment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE team_id = $1 AND agent_id = $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(team_id)
        .bind(agent_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(deployment_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The instance's deployments, newest first, at most `limit`.
    pub async fn list_deployments(
        &self,
        team_id: &str,
        instance_id: &str,
        limit: i64,
    ) -> Result<Vec<Deployment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE team_id = $1 AND instance_id = $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(team_id)
        .bind(instance_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(deployment_from_row)
            .collect::<Result<_, _>>()?)
    }
}

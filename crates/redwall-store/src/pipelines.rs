//! Instance groups (deploy targets), pipelines of stages, and promotions
//! of snapshots through them. Writes happen inside a [`Change`].

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Change, Micros, Store, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceGroup {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub created_at: Micros,
    /// Member instances' ids, by id.
    pub instance_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineRow {
    pub id: String,
    pub team_id: String,
    pub name: String,
    /// JSON array of stages.
    pub stages: String,
    pub created_by: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promotion {
    pub id: String,
    pub team_id: String,
    pub pipeline_id: String,
    pub stage: i64,
    pub snapshot_id: String,
    pub status: String,
    pub promoted_by: String,
    pub approved_by: Option<String>,
    /// The deploy window (JSON) its deployments wait for.
    pub schedule: String,
    pub created_at: Micros,
    pub updated_at: Micros,
}

const PIPELINE_COLUMNS: &str = "id, team_id, name, stages, created_by, created_at, updated_at";
const PROMOTION_COLUMNS: &str = "id, team_id, pipeline_id, stage, snapshot_id, status, \
     promoted_by, approved_by, schedule, created_at, updated_at";

fn pipeline_from_row(row: &AnyRow) -> Result<PipelineRow, sqlx::Error> {
    Ok(PipelineRow {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        name: row.try_get("name")?,
        stages: row.try_get("stages")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn promotion_from_row(row: &AnyRow) -> Result<Promotion, sqlx::Error> {
    Ok(Promotion {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        pipeline_id: row.try_get("pipeline_id")?,
        stage: row.try_get("stage")?,
        snapshot_id: row.try_get("snapshot_id")?,
        status: row.try_get("status")?,
        promoted_by: row.try_get("promoted_by")?,
        approved_by: row.try_get("approved_by")?,
        schedule: row.try_get("schedule")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Change {
    /// Creates or replaces the team's group `name` with these members.
    /// `Conflict` on a name taken by another id.
    pub async fn put_instance_group(&mut self, g: &InstanceGroup) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO instance_groups (id, team_id, name, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&g.id)
        .bind(&g.team_id)
        .bind(&g.name)
        .bind(g.created_at)
        .execute(&mut **self.tx())
        .await?;
        sqlx::query("DELETE FROM instance_group_members WHERE group_id = $1")
            .bind(&g.id)
            .execute(&mut **self.tx())
            .await?;
        for instance_id in &g.instance_ids {
            sqlx::query(
                "INSERT INTO instance_group_members (group_id, instance_id) VALUES ($1, $2)",
            )
            .bind(&g.id)
            .bind(instance_id)
            .execute(&mut **self.tx())
            .await?;
        }
        Ok(())
    }

    pub async fn delete_instance_group(
        &mut self,
        team_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM instance_groups WHERE team_id = $1 AND id = $2")
            .bind(team_id)
            .bind(id)
            .execute(&mut **self.tx())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn create_pipeline(&mut self, p: &PipelineRow) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO pipelines ({PIPELINE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&p.id)
        .bind(&p.team_id)
        .bind(&p.name)
        .bind(&p.stages)
        .bind(&p.created_by)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    pub async fn delete_pipeline(&mut self, team_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM pipelines WHERE team_id = $1 AND id = $2")
            .bind(team_id)
            .bind(id)
            .execute(&mut **self.tx())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn create_promotion(&mut self, p: &Promotion) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO promotions ({PROMOTION_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&p.id)
        .bind(&p.team_id)
        .bind(&p.pipeline_id)
        .bind(p.stage)
        .bind(&p.snapshot_id)
        .bind(&p.status)
        .bind(&p.promoted_by)
        .bind(&p.approved_by)
        .bind(&p.schedule)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Moves a promotion from `from` to `to` (an approval names its
    /// approver); false when it was not in `from` (someone else moved it).
    pub async fn move_promotion(
        &mut self,
        id: &str,
        from: &str,
        to: &str,
        approved_by: Option<&str>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE promotions SET status = $3, approved_by = COALESCE($4, approved_by), \
             updated_at = $5 WHERE id = $1 AND status = $2",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(approved_by)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    async fn group_members(&self, group_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT instance_id FROM instance_group_members WHERE group_id = $1 ORDER BY instance_id",
        )
        .bind(group_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("instance_id"))
            .collect::<Result<_, _>>()?)
    }

    fn group_from(row: &AnyRow) -> Result<InstanceGroup, sqlx::Error> {
        Ok(InstanceGroup {
            id: row.try_get("id")?,
            team_id: row.try_get("team_id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
            instance_ids: Vec::new(),
        })
    }

    /// The team's groups, by name, with their members.
    pub async fn list_instance_groups(
        &self,
        team_id: &str,
    ) -> Result<Vec<InstanceGroup>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, team_id, name, created_at FROM instance_groups WHERE team_id = $1 \
             ORDER BY name",
        )
        .bind(team_id)
        .fetch_all(self.pool())
        .await?;
        let mut groups = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut g = Self::group_from(row)?;
            g.instance_ids = self.group_members(&g.id).await?;
            groups.push(g);
        }
        Ok(groups)
    }

    /// The team's group by id or name.
    pub async fn get_instance_group(
        &self,
        team_id: &str,
        id_or_name: &str,
    ) -> Result<Option<InstanceGroup>, StoreError> {
        let row = sqlx::query(
            "SELECT id, team_id, name, created_at FROM instance_groups WHERE team_id = $1 \
             AND (id = $2 OR name = $2)",
        )
        .bind(team_id)
        .bind(id_or_name)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut g = Self::group_from(&row)?;
        g.instance_ids = self.group_members(&g.id).await?;
        Ok(Some(g))
    }

    pub async fn list_pipelines(&self, team_id: &str) -> Result<Vec<PipelineRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE team_id = $1 ORDER BY name"
        ))
        .bind(team_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(pipeline_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The team's pipeline by id or name.
    pub async fn get_pipeline(
        &self,
        team_id: &str,
        id_or_name: &str,
    ) -> Result<Option<PipelineRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE team_id = $1 AND (id = $2 OR name = $2)"
        ))
        .bind(team_id)
        .bind(id_or_name)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(pipeline_from_row).transpose()?)
    }

    pub async fn get_promotion(
        &self,
        team_id: &str,
        id: &str,
    ) -> Result<Option<Promotion>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PROMOTION_COLUMNS} FROM promotions WHERE team_id = $1 AND id = $2"
        ))
        .bind(team_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(promotion_from_row).transpose()?)
    }

    /// The pipeline's promotions, newest first, at most `limit`.
    pub async fn list_promotions(
        &self,
        pipeline_id: &str,
        limit: i64,
    ) -> Result<Vec<Promotion>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PROMOTION_COLUMNS} FROM promotions WHERE pipeline_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(pipeline_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(promotion_from_row)
            .collect::<Result<_, _>>()?)
    }
}

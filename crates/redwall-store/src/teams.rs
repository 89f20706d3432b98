//! Teams and memberships.
//!
//! Every query that touches a team's resources names the team, so a caller
//! holding one team's id can never reach another's rows. Roles are stored by
//! name ('owner', 'member', 'viewer', 'dashboard'); the rules about them live
//! in redwall-policy.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{get_bool, Micros, Store, StoreError};

#[derive(Clone, Debug)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub require_mfa: bool,
    /// CIDR ranges allowed to reach the team's resources; empty means any.
    pub allowed_cidrs: Vec<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub user_id: String,
    pub username: String,
    pub role: String,
    pub joined_at: Micros,
}

fn team_from_row(row: &AnyRow) -> Result<Team, sqlx::Error> {
    let cidrs: String = row.try_get("allowed_cidrs")?;
    Ok(Team {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        require_mfa: get_bool(row, "require_mfa")?,
        allowed_cidrs: serde_json::from_str(&cidrs).unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    pub async fn get_team(&self, id: &str) -> Result<Option<Team>, StoreError> {
        let row = sqlx::query("SELECT * FROM teams WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(team_from_row).transpose()?)
    }

    /// The user's teams with the user's role in each, by name.
    pub async fn list_teams_of_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(Team, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.*, m.role FROM teams t JOIN memberships m ON m.team_id = t.id \
             WHERE m.user_id = $1 ORDER BY t.name, t.id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((team_from_row(r)?, r.try_get("role")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Every team, for platform admins, keyset-paged by id.
    pub async fn list_all_teams(
        &self,
        after_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Team>, StoreError> {
        let rows = sqlx::query("SELECT * FROM teams WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after_id.unwrap_or(""))
            .bind(limit.clamp(1, 1000))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(team_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Deletes the team, its memberships, invitations and team-limited tokens.
    pub async fn delete_team(&self, id: &str) -> Result<bool, StoreError> {
        self.in_change(async |c| c.delete_team(id).await).await
    }

    /// The user's role in the team, or `None` when not a member (or no such team).
    pub async fn get_member_role(
        &self,
        team_id: &str,
        user_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let role = sqlx::query_scalar::<_, String>(
            "SELECT role FROM memberships WHERE team_id = $1 AND user_id = $2",
        )
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(role)
    }

    pub async fn list_members(&self, team_id: &str) -> Result<Vec<Member>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.username, m.role, m.joined_at FROM memberships m \
             JOIN users u ON u.id = m.user_id WHERE m.team_id = $1 ORDER BY u.username_key",
        )
        .bind(team_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Member {
                    user_id: r.try_get("user_id")?,
                    username: r.try_get("username")?,
                    role: r.try_get("role")?,
                    joined_at: r.try_get("joined_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Teams in which `user_id` is the only Owner (deleting the user would orphan them).
    pub async fn teams_solely_owned_by(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar::<_, String>(
            "SELECT m.team_id FROM memberships m WHERE m.user_id = $1 AND m.role = 'owner' \
             AND (SELECT COUNT(*) FROM memberships o WHERE o.team_id = m.team_id AND o.role = 'owner') = 1",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        Ok(ids)
    }
}

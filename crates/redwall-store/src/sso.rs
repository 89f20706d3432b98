//! External identities: the link from a provider's stable subject to a
//! Redwall user, and the membership writes that group mapping needs.

use sqlx::Row;

use crate::{Micros, Store, StoreError};

/// What a mapping-driven membership write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipWrite {
    Unchanged,
    Added,
    Changed,
    Removed,
    /// Refused: the team would be left without an Owner.
    LastOwner,
}

impl Store {
    /// The user linked to this subject of this provider.
    pub async fn find_external_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM external_identities WHERE provider = $1 AND subject = $2",
        )
        .bind(provider)
        .bind(subject)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Links a subject to a user. `Conflict` when the subject is linked already.
    pub async fn link_external_identity(
        &self,
        provider: &str,
        subject: &str,
        user_id: &str,
        now: Micros,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO external_identities (provider, subject, user_id, created_at, last_login_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(provider)
        .bind(subject)
        .bind(user_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn touch_external_identity(
        &self,
        provider: &str,
        subject: &str,
        now: Micros,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE external_identities SET last_login_at = $3 WHERE provider = $1 AND subject = $2",
        )
        .bind(provider)
        .bind(subject)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every (provider, subject, user id), for re-syncing everyone.
    pub async fn list_external_identities(
        &self,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT provider, subject, user_id FROM external_identities ORDER BY provider, subject",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("provider")?,
                    r.try_get("subject")?,
                    r.try_get("user_id")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Removes the local password: the user can then log in by SSO only.
    pub async fn clear_password_hash(
        &self,
        user_id: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET password_hash = NULL, updated_at = $2 WHERE id = $1 AND password_hash IS NOT NULL",
        )
        .bind(user_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn count_admins(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE is_admin = 1 AND suspended = 0")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Sets the user's role in the team (`None`: not a member), keeping at
    /// least one Owner, in one transaction.
    pub async fn write_membership(
        &self,
        team_id: &str,
        user_id: &str,
        role: Option<&str>,
        now: Micros,
    ) -> Result<MembershipWrite, StoreError> {
        let mut tx = self.begin_write().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT role FROM memberships WHERE team_id = $1 AND user_id = $2")
                .bind(team_id)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        if current.as_deref() == role {
            return Ok(MembershipWrite::Unchanged);
        }
        if current.as_deref() == Some("owner") {
            let owners: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM memberships WHERE team_id = $1 AND role = 'owner'",
            )
            .bind(team_id)
            .fetch_one(&mut *tx)
            .await?;
            if owners <= 1 {
                return Ok(MembershipWrite::LastOwner);
            }
        }
        let done = match (current, role) {
            (None, Some(r)) => {
                sqlx::query(
                    "INSERT INTO memberships (team_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(team_id)
                .bind(user_id)
                .bind(r)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                MembershipWrite::Added
            }
            (Some(_), Some(r)) => {
                sqlx::query("UPDATE memberships SET role = $3 WHERE team_id = $1 AND user_id = $2")
                    .bind(team_id)
                    .bind(user_id)
                    .bind(r)
                    .execute(&mut *tx)
                    .await?;
                MembershipWrite::Changed
            }
            (Some(_), None) => {
                sqlx::query("DELETE FROM memberships WHERE team_id = $1 AND user_id = $2")
                    .bind(team_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                MembershipWrite::Removed
            }
            (None, None) => MembershipWrite::Unchanged,
        };
        tx.commit().await?;
        Ok(done)
    }

    /// Teams whose exact name is `name` (for mapping rules that name a team).
    pub async fn find_teams_by_name(&self, name: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM teams WHERE name = $1 ORDER BY id")
                .bind(name)
                .fetch_all(self.pool())
                .await?,
        )
    }
}

//! Writes to platform accounts inside a [`Change`]: the admin flag,
//! suspension and deletion, with the counts their rules need read under
//! locks, so two concurrent changes cannot both pass a "one left" check.

use crate::{Backend, Change, Micros, Store, StoreError};

impl Change {
    /// Active platform admins, counted under a lock on their rows, so two
    /// concurrent removals of the admin flag cannot both see another admin.
    pub async fn locked_admin_count(&mut self) -> Result<i64, StoreError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM users WHERE is_admin = 1 AND suspended = 0{lock}"
        ))
        .fetch_all(&mut **self.tx())
        .await?;
        Ok(i64::try_from(ids.len()).unwrap_or(i64::MAX))
    }

    /// False when there is no such user.
    pub async fn set_admin(
        &mut self,
        user_id: &str,
        is_admin: bool,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE users SET is_admin = $2, updated_at = $3 WHERE id = $1")
            .bind(user_id)
            .bind(i64::from(is_admin))
            .bind(now)
            .execute(&mut **self.tx())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Suspending also ends the user's sessions and API tokens. False when
    /// there is no such user.
    pub async fn set_suspended(
        &mut self,
        user_id: &str,
        suspended: bool,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let tx = self.tx();
        let r = sqlx::query("UPDATE users SET suspended = $2, updated_at = $3 WHERE id = $1")
            .bind(user_id)
            .bind(i64::from(suspended))
            .bind(now)
            .execute(&mut **tx)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        if suspended {
            for sql in [
                "DELETE FROM sessions WHERE user_id = $1",
                "DELETE FROM api_tokens WHERE user_id = $1",
            ] {
                sqlx::query(sql).bind(user_id).execute(&mut **tx).await?;
            }
        }
        Ok(true)
    }

    /// Deletes a user with their sessions, API tokens and recovery codes.
    /// False when there is no such user.
    pub async fn delete_user(&mut self, user_id: &str) -> Result<bool, StoreError> {
        let tx = self.tx();
        for sql in [
            "DELETE FROM sessions WHERE user_id = $1",
            "DELETE FROM api_tokens WHERE user_id = $1",
            "DELETE FROM recovery_codes WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(user_id).execute(&mut **tx).await?;
        }
        let r = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Teams in which `user_id` is the only Owner (deleting the user would
    /// orphan them), read under each of their teams' locks.
    pub async fn teams_solely_owned_by(
        &mut self,
        user_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut owned: Vec<String> = sqlx::query_scalar(
            "SELECT team_id FROM memberships WHERE user_id = $1 AND role = 'owner'",
        )
        .bind(user_id)
        .fetch_all(&mut **self.tx())
        .await?;
        owned.sort();
        let mut sole = Vec::new();
        for team_id in owned {
            if self.locked_owner_count(&team_id).await? <= 1 {
                sole.push(team_id);
            }
        }
        Ok(sole)
    }
}

/// The same writes, each its own change without audit entries.
impl Store {
    pub async fn set_admin(
        &self,
        user_id: &str,
        is_admin: bool,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| c.set_admin(user_id, is_admin, now).await)
            .await
    }

    pub async fn set_suspended(
        &self,
        user_id: &str,
        suspended: bool,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| c.set_suspended(user_id, suspended, now).await)
            .await
    }

    pub async fn delete_user(&self, user_id: &str) -> Result<bool, StoreError> {
        self.in_change(async |c| c.delete_user(user_id).await).await
    }
}

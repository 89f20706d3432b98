//! API tokens. Only a digest of the token is stored.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Change, Micros, Store, StoreError};

/// A personal API token.
#[derive(Clone, Debug)]
pub struct ApiToken {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// Secret-derived: the digest of the token.
    pub token_digest: Vec<u8>,
    /// The first characters of the token, shown so the owner can recognise it.
    pub display_prefix: String,
    pub scope: String,
    pub team_id: Option<String>,
    /// When limited to some permissions: their names as a JSON array.
    pub permissions: Option<String>,
    pub created_at: Micros,
    pub expires_at: Option<Micros>,
    pub last_used_at: Option<Micros>,
}

const TOKEN_COLUMNS: &str = "id, user_id, name, token_digest, display_prefix, scope, team_id, \
     permissions, created_at, expires_at, last_used_at";

fn token_from_row(row: &AnyRow) -> Result<ApiToken, sqlx::Error> {
    Ok(ApiToken {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        token_digest: row.try_get("token_digest")?,
        display_prefix: row.try_get("display_prefix")?,
        scope: row.try_get("scope")?,
        team_id: row.try_get("team_id")?,
        permissions: row.try_get("permissions")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

impl Store {
    /// The token whose digest is `digest`, expired or not: the caller checks
    /// `expires_at` against its clock.
    pub async fn get_api_token_by_digest(
        &self,
        digest: &[u8],
    ) -> Result<Option<ApiToken>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_digest = $1");
        let row = sqlx::query(&sql)
            .bind(digest)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(token_from_row).transpose()?)
    }

    /// The user's tokens, newest first.
    pub async fn list_api_tokens(&self, user_id: &str) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
    }

    /// Deletes all the user's tokens and returns their ids.
    pub async fn delete_api_tokens_of_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("DELETE FROM api_tokens WHERE user_id = $1 RETURNING id")
                .bind(user_id)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Batch update of `last_used_at` (token id, time), in one transaction.
    /// A time never moves backwards; unknown ids are skipped.
    pub async fn touch_api_tokens(&self, updates: &[(String, Micros)]) -> Result<(), StoreError> {
        self.touch_last_used("api_tokens", updates).await
    }

    /// The same for instance API keys.
    pub async fn touch_instance_api_keys(
        &self,
        updates: &[(String, Micros)],
    ) -> Result<(), StoreError> {
        self.touch_last_used("instance_api_keys", updates).await
    }

    async fn touch_last_used(
        &self,
        table: &'static str,
        updates: &[(String, Micros)],
    ) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE {table} SET last_used_at = $2 \
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)"
        );
        let mut tx = self.begin_write().await?;
        for (id, at) in updates {
            sqlx::query(&sql)
                .bind(id)
                .bind(*at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Change {
    /// Stores a new token. `Conflict` if the id or digest exists.
    pub async fn create_api_token(&mut self, t: &ApiToken) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, token_digest, display_prefix, scope, \
             team_id, permissions, created_at, expires_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&t.id)
        .bind(&t.user_id)
        .bind(&t.name)
        .bind(t.token_digest.as_slice())
        .bind(&t.display_prefix)
        .bind(&t.scope)
        .bind(&t.team_id)
        .bind(&t.permissions)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.last_used_at)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Deletes the token, but only if `user_id` owns it. False otherwise.
    pub async fn revoke_api_token(
        &mut self,
        user_id: &str,
        token_id: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2")
            .bind(token_id)
            .bind(user_id)
            .execute(&mut **self.tx())
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

/// The same writes, each its own change without audit entries.
impl Store {
    pub async fn create_api_token(&self, t: &ApiToken) -> Result<(), StoreError> {
        self.in_change(async |c| c.create_api_token(t).await).await
    }

    pub async fn revoke_api_token(
        &self,
        user_id: &str,
        token_id: &str,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| c.revoke_api_token(user_id, token_id).await)
            .await
    }
}

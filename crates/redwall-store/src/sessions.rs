//! Browser sessions. Only digests of the session and CSRF tokens are stored.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{get_bool, Micros, Store, StoreError};

/// A login session.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    /// Secret-derived: the digest of the session token.
    pub token_digest: Vec<u8>,
    pub user_id: String,
    pub created_at: Micros,
    pub last_seen_at: Micros,
    /// Absolute expiry.
    pub expires_at: Micros,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// Secret-derived: the digest of the CSRF token.
    pub csrf_token_digest: Vec<u8>,
    pub mfa_verified: bool,
}

const SESSION_COLUMNS: &str = "id, token_digest, user_id, created_at, last_seen_at, expires_at, \
     client_ip, user_agent, csrf_token_digest, mfa_verified";

fn session_from_row(row: &AnyRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        id: row.try_get("id")?,
        token_digest: row.try_get("token_digest")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
        client_ip: row.try_get("client_ip")?,
        user_agent: row.try_get("user_agent")?,
        csrf_token_digest: row.try_get("csrf_token_digest")?,
        mfa_verified: get_bool(row, "mfa_verified")?,
    })
}

impl Store {
    /// The session whose token digest is `digest`, expired or not: the
    /// caller checks `expires_at` and `last_seen_at` against its clock.
    pub async fn get_session_by_digest(
        &self,
        digest: &[u8],
    ) -> Result<Option<Session>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE token_digest = $1");
        let row = sqlx::query(&sql)
            .bind(digest)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    /// The user's sessions, newest first.
    pub async fn list_sessions(&self, user_id: &str) -> Result<Vec<Session>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(session_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Batch update of `last_seen_at` (session id, time), in one transaction.
    /// A time never moves backwards; unknown ids are skipped.
    pub async fn touch_sessions(&self, updates: &[(String, Micros)]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (id, at) in updates {
            sqlx::query(
                "UPDATE sessions SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $2",
            )
            .bind(id)
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes sessions past their absolute expiry (`expires_at <= now`) or
    /// idle since `idle_cutoff` (`last_seen_at <= idle_cutoff`). Returns how
    /// many were deleted.
    pub async fn delete_expired_sessions(
        &self,
        now: Micros,
        idle_cutoff: Micros,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
            .bind(now)
            .bind(idle_cutoff)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }
}

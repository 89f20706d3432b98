//! Users, their MFA state and recovery codes, and the first-run setup token.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{get_bool, Micros, Store, StoreError};

/// A user account. Secret-derived fields hold only a password hash and sealed
/// (encrypted) MFA secrets; never log this struct at a level that is shipped.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub username: String,
    /// Secret-derived: the password hash (PHC string).
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub suspended: bool,
    pub mfa_enabled: bool,
    /// Secret-derived: the active TOTP secret, sealed.
    pub mfa_secret_sealed: Option<Vec<u8>>,
    /// Secret-derived: a TOTP secret being enrolled, sealed.
    pub mfa_pending_sealed: Option<Vec<u8>>,
    /// The last TOTP time step accepted (replay guard).
    pub mfa_last_step: Option<i64>,
    pub created_at: Micros,
    pub updated_at: Micros,
    pub password_changed_at: Option<Micros>,
}

/// What [`Store::create_user`] needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub id: String,
    pub username: String,
    /// Secret-derived: the password hash (PHC string), if any.
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub now: Micros,
}

const USER_COLUMNS: &str = "id, username, password_hash, is_admin, suspended, mfa_enabled, \
     mfa_secret_sealed, mfa_pending_sealed, mfa_last_step, created_at, updated_at, \
     password_changed_at";

/// The upper bound on one page of [`Store::list_users`].
const MAX_PAGE: i64 = 1000;
const DEFAULT_PAGE: i64 = 100;

fn user_from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: get_bool(row, "is_admin")?,
        suspended: get_bool(row, "suspended")?,
        mfa_enabled: get_bool(row, "mfa_enabled")?,
        mfa_secret_sealed: row.try_get("mfa_secret_sealed")?,
        mfa_pending_sealed: row.try_get("mfa_pending_sealed")?,
        mfa_last_step: row.try_get("mfa_last_step")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        password_changed_at: row.try_get("password_changed_at")?,
    })
}

/// The case-insensitive key usernames are unique on.
fn username_key(name: &str) -> String {
    name.to_lowercase()
}

pub(crate) fn user_from_new(u: NewUser) -> User {
    let password_changed_at = u.password_hash.as_ref().map(|_| u.now);
    User {
        id: u.id,
        username: u.username,
        password_hash: u.password_hash,
        is_admin: u.is_admin,
        suspended: false,
        mfa_enabled: false,
        mfa_secret_sealed: None,
        mfa_pending_sealed: None,
        mfa_last_step: None,
        created_at: u.now,
        updated_at: u.now,
        password_changed_at,
    }
}

pub(crate) async fn insert_user(
    conn: &mut sqlx::AnyConnection,
    u: &User,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, username, username_key, password_hash, is_admin, suspended, \
         mfa_enabled, created_at, updated_at, password_changed_at) \
         VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $6, $7)",
    )
    .bind(&u.id)
    .bind(&u.username)
    .bind(username_key(&u.username))
    .bind(&u.password_hash)
    .bind(i64::from(u.is_admin))
    .bind(u.created_at)
    .bind(u.password_changed_at)
    .execute(conn)
    .await
    .map_err(|e| match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict("username or id already exists".into()),
        other => other,
    })?;
    Ok(())
}

impl Store {
    pub async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Looks a user up by name, case-insensitively.
    pub async fn find_user_by_username(&self, name: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = $1");
        let row = sqlx::query(&sql)
            .bind(username_key(name))
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// One page of users ordered by (lowercased) username, starting after
    /// `after_username`. `limit` is at most 1000; zero or negative means 100.
    pub async fn list_users(
        &self,
        after_username: Option<&str>,
        limit: i64,
    ) -> Result<Vec<User>, StoreError> {
        let limit = if limit <= 0 {
            DEFAULT_PAGE
        } else {
            limit.min(MAX_PAGE)
        };
        let rows = match after_username {
            Some(after) => {
                let sql = format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE username_key > $1 \
                     ORDER BY username_key LIMIT $2"
                );
                sqlx::query(&sql)
                    .bind(username_key(after))
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                let sql =
                    format!("SELECT {USER_COLUMNS} FROM users ORDER BY username_key LIMIT $1");
                sqlx::query(&sql).bind(limit).fetch_all(self.pool()).await?
            }
        };
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(self.pool())
            .await?)
    }

    /// Replaces the user's recovery codes (e.g. "generate new codes").
    /// False when there is no such user.
    pub async fn replace_recovery_codes(
        &self,
        user_id: &str,
        recovery_code_digests: &[Vec<u8>],
        now: Micros,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        if exists == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        replace_recovery_codes(&mut tx, user_id, recovery_code_digests, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records that the TOTP code of time step `step` was accepted, but only
    /// when it is later than the last accepted step. The compare and the write
    /// are one statement, so of two concurrent requests with the same code
    /// only one gets `true`: a code can never be used twice.
    pub async fn advance_mfa_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET mfa_last_step = $2 \
             WHERE id = $1 AND (mfa_last_step IS NULL OR mfa_last_step < $2)",
        )
        .bind(user_id)
        .bind(step)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Uses up one unused recovery code whose digest is `digest`. True when
    /// one was found (and is now used); atomic, so a code works once only.
    pub async fn use_recovery_code(
        &self,
        user_id: &str,
        digest: &[u8],
        now: Micros,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE recovery_codes SET used_at = $3 \
             WHERE user_id = $1 AND code_digest = $2 AND used_at IS NULL",
        )
        .bind(user_id)
        .bind(digest)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// How many unused recovery codes the user has left.
    pub async fn count_recovery_codes(&self, user_id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(self.pool())
        .await?)
    }

    /// Replaces the first-run setup token (there is at most one).
    pub async fn replace_setup_token(
        &self,
        digest: &[u8],
        expires_at: Micros,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO setup_token (id, token_digest, expires_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET token_digest = excluded.token_digest, \
             expires_at = excluded.expires_at",
        )
        .bind(digest)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

pub(crate) async fn replace_recovery_codes(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    digests: &[Vec<u8>],
    now: Micros,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for digest in digests {
        sqlx::query(
            "INSERT INTO recovery_codes (user_id, code_digest, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, code_digest) DO NOTHING",
        )
        .bind(user_id)
        .bind(digest.as_slice())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

//! Writes of accounts, MFA and sessions inside a [`Change`], so that each
//! carries its audit entry (a sign-in, a password change, an enrolment).

use crate::users::{insert_user, replace_recovery_codes, user_from_new};
use crate::{Change, Micros, NewUser, Session, Store, StoreError, User};

impl Change {
    /// First-run bootstrap: consumes the setup token whose
    /// digest is `digest` if it has not expired, and creates `admin` as an
    /// administrator, but only while no user exists. `Ok(None)` (and nothing
    /// changed) when the token is unknown, expired or already used, or when a
    /// user already exists.
    pub async fn consume_setup_token_and_create_admin(
        &mut self,
        digest: &[u8],
        now: Micros,
        admin: NewUser,
    ) -> Result<Option<User>, StoreError> {
        let r = sqlx::query("DELETE FROM setup_token WHERE token_digest = $1 AND expires_at > $2")
            .bind(digest)
            .bind(now)
            .execute(&mut **self.tx())
            .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut **self.tx())
            .await?;
        if users > 0 {
            return Ok(None);
        }
        let user = user_from_new(NewUser {
            is_admin: true,
            ..admin
        });
        insert_user(self.tx(), &user).await?;
        Ok(Some(user))
    }

    /// Creates a user. `Conflict` when the username (compared
    /// case-insensitively) or the id is taken.
    pub async fn create_user(&mut self, u: NewUser) -> Result<User, StoreError> {
        let user = user_from_new(u);
        insert_user(self.tx(), &user).await?;
        Ok(user)
    }

    /// Sets the password hash and `password_changed_at`. False when there is
    /// no such user.
    pub async fn set_password_hash(
        &mut self,
        user_id: &str,
        hash: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET password_hash = $2, password_changed_at = $3, updated_at = $3 \
             WHERE id = $1",
        )
        .bind(user_id)
        .bind(hash)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Stores (or with `None` clears) the sealed secret of an MFA enrolment
    /// in progress. False when there is no such user.
    pub async fn set_mfa_pending(
        &mut self,
        user_id: &str,
        sealed: Option<&[u8]>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let r =
            sqlx::query("UPDATE users SET mfa_pending_sealed = $2, updated_at = $3 WHERE id = $1")
                .bind(user_id)
                .bind(sealed)
                .bind(now)
                .execute(&mut **self.tx())
                .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Completes an enrolment in one transaction: the sealed secret becomes
    /// the active one, the pending one is cleared, `mfa_last_step` is set to
    /// `step` (the step of the code that confirmed enrolment, so it cannot be
    /// replayed) and the recovery codes are replaced by `recovery_code_digests`.
    /// False when there is no such user.
    pub async fn enable_mfa(
        &mut self,
        user_id: &str,
        sealed_secret: &[u8],
        recovery_code_digests: &[Vec<u8>],
        step: i64,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET mfa_enabled = 1, mfa_secret_sealed = $2, mfa_pending_sealed = NULL, \
             mfa_last_step = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(user_id)
        .bind(sealed_secret)
        .bind(step)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        replace_recovery_codes(self.tx(), user_id, recovery_code_digests, now).await?;
        Ok(true)
    }

    /// Turns MFA off: clears the active and pending secrets, the last step and
    /// the recovery codes, in one transaction. False when there is no such
    /// user.
    pub async fn disable_mfa(&mut self, user_id: &str, now: Micros) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET mfa_enabled = 0, mfa_secret_sealed = NULL, \
             mfa_pending_sealed = NULL, mfa_last_step = NULL, updated_at = $2 WHERE id = $1",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut **self.tx())
            .await?;
        Ok(true)
    }

    /// Stores a new session. `Conflict` if the id or token digest exists.
    pub async fn create_session(&mut self, s: &Session) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, token_digest, user_id, created_at, last_seen_at, \
             expires_at, client_ip, user_agent, csrf_token_digest, mfa_verified) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&s.id)
        .bind(s.token_digest.as_slice())
        .bind(&s.user_id)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .bind(&s.client_ip)
        .bind(&s.user_agent)
        .bind(s.csrf_token_digest.as_slice())
        .bind(i64::from(s.mfa_verified))
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// False when there was no such session.
    pub async fn delete_session(&mut self, session_id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(session_id)
            .execute(&mut **self.tx())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Deletes all the user's sessions but `except_session_id` and returns
    /// the ids deleted.
    pub async fn delete_sessions_of_user(
        &mut self,
        user_id: &str,
        except_session_id: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let ids = match except_session_id {
            Some(keep) => {
                sqlx::query_scalar(
                    "DELETE FROM sessions WHERE user_id = $1 AND id <> $2 RETURNING id",
                )
                .bind(user_id)
                .bind(keep)
                .fetch_all(&mut **self.tx())
                .await?
            }
            None => {
                sqlx::query_scalar("DELETE FROM sessions WHERE user_id = $1 RETURNING id")
                    .bind(user_id)
                    .fetch_all(&mut **self.tx())
                    .await?
            }
        };
        Ok(ids)
    }
}

/// The same writes, each its own change without audit entries: for callers
/// that record nothing (tests, set-up).
impl Store {
    /// Creates a user. `Conflict` when the username (compared
    /// case-insensitively) or the id is taken.
    pub async fn create_user(&self, u: NewUser) -> Result<User, StoreError> {
        self.in_change(async |c| c.create_user(u).await).await
    }

    pub async fn set_password_hash(
        &self,
        user_id: &str,
        hash: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| c.set_password_hash(user_id, hash, now).await)
            .await
    }

    pub async fn set_mfa_pending(
        &self,
        user_id: &str,
        sealed: Option<&[u8]>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| c.set_mfa_pending(user_id, sealed, now).await)
            .await
    }

    pub async fn enable_mfa(
        &self,
        user_id: &str,
        sealed_secret: &[u8],
        recovery_code_digests: &[Vec<u8>],
        step: i64,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| {
            c.enable_mfa(user_id, sealed_secret, recovery_code_digests, step, now)
                .await
        })
        .await
    }

    pub async fn disable_mfa(&self, user_id: &str, now: Micros) -> Result<bool, StoreError> {
        self.in_change(async |c| c.disable_mfa(user_id, now).await)
            .await
    }

    pub async fn consume_setup_token_and_create_admin(
        &self,
        digest: &[u8],
        now: Micros,
        admin: NewUser,
    ) -> Result<Option<User>, StoreError> {
        let mut change = self.begin_change().await?;
        let user = change
            .consume_setup_token_and_create_admin(digest, now, admin)
            .await?;
        // Nothing is kept of a refused attempt (not even the token's use).
        if user.is_some() {
            change.commit().await?;
        }
        Ok(user)
    }

    pub async fn create_session(&self, s: &Session) -> Result<(), StoreError> {
        self.in_change(async |c| c.create_session(s).await).await
    }

    pub async fn delete_session(&self, session_id: &str) -> Result<bool, StoreError> {
        self.in_change(async |c| c.delete_session(session_id).await)
            .await
    }

    pub async fn delete_sessions_of_user(
        &self,
        user_id: &str,
        except_session_id: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        self.in_change(async |c| c.delete_sessions_of_user(user_id, except_session_id).await)
            .await
    }
}

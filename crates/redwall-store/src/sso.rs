//! External identities: the link from a provider's stable subject to a
//! Redwall user, and the membership writes that group mapping needs.

use sqlx::Row;

use crate::{Micros, Store, StoreError};

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

    pub async fn count_admins(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE is_admin = 1 AND suspended = 0")
                .fetch_one(self.pool())
                .await?,
        )
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

/// What [`Store::use_oidc_state`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OidcStateUse {
    /// First use: recorded.
    First,
    /// Used before: a replayed callback.
    Replayed,
    /// This client has too many recent logins recorded; others are unaffected.
    ClientFull,
}

impl Store {
    /// Records the first use of an OIDC login state (by its digest), until
    /// `expires_at`. At most `per_client` unexpired states are kept for one
    /// `client`, so a flood from one address cannot crowd out anyone else.
    /// Expired rows are removed on the way.
    pub async fn use_oidc_state(
        &self,
        digest: &str,
        client: &str,
        expires_at: Micros,
        now: Micros,
        per_client: i64,
    ) -> Result<OidcStateUse, StoreError> {
        sqlx::query("DELETE FROM oidc_used_states WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        let seen: Option<String> =
            sqlx::query_scalar("SELECT client FROM oidc_used_states WHERE state_digest = $1")
                .bind(digest)
                .fetch_optional(self.pool())
                .await?;
        if seen.is_some() {
            return Ok(OidcStateUse::Replayed);
        }
        let held: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM oidc_used_states WHERE client = $1")
                .bind(client)
                .fetch_one(self.pool())
                .await?;
        if held >= per_client {
            return Ok(OidcStateUse::ClientFull);
        }
        // The primary key settles a race between two replicas.
        let r = sqlx::query(
            "INSERT INTO oidc_used_states (state_digest, client, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (state_digest) DO NOTHING",
        )
        .bind(digest)
        .bind(client)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(if r.rows_affected() == 1 {
            OidcStateUse::First
        } else {
            OidcStateUse::Replayed
        })
    }
}

impl crate::Change {
    /// Links a subject to a user. `Conflict` when the subject is linked already.
    pub async fn link_external_identity(
        &mut self,
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
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Removes the local password: the user can then log in by SSO only.
    pub async fn clear_password_hash(
        &mut self,
        user_id: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET password_hash = NULL, updated_at = $2 WHERE id = $1 AND password_hash IS NOT NULL",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(r.rows_affected() > 0)
    }
}

/// The same writes, each its own change without audit entries.
impl Store {
    pub async fn link_external_identity(
        &self,
        provider: &str,
        subject: &str,
        user_id: &str,
        now: Micros,
    ) -> Result<(), StoreError> {
        self.in_change(async |c| {
            c.link_external_identity(provider, subject, user_id, now)
                .await
        })
        .await
    }

    pub async fn clear_password_hash(
        &self,
        user_id: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| c.clear_password_hash(user_id, now).await)
            .await
    }
}

#[cfg(test)]
mod oidc_state_tests {
    use super::*;

    async fn a_state_is_used_once_and_clients_are_bounded(
        store: Store,
    ) -> crate::testing::TestResult {
        let u = |d: &'static str, c: &'static str, exp, now| {
            let store = store.clone();
            async move { store.use_oidc_state(d, c, exp, now, 2).await }
        };
        use OidcStateUse::*;
        assert_eq!(u("a", "1.1.1.1", 100, 0).await?, First);
        assert_eq!(u("a", "1.1.1.1", 100, 1).await?, Replayed);
        assert_eq!(u("a", "2.2.2.2", 100, 1).await?, Replayed);
        assert_eq!(u("b", "1.1.1.1", 100, 1).await?, First);
        // This client is full; another is not.
        assert_eq!(u("c", "1.1.1.1", 100, 1).await?, ClientFull);
        assert_eq!(u("c", "2.2.2.2", 100, 1).await?, First);
        // Expired rows go, and their room with them.
        assert_eq!(u("d", "1.1.1.1", 300, 100).await?, First);
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oidc_used_states")
            .fetch_one(store.pool())
            .await?;
        assert_eq!(left, 1);
        Ok(())
    }

    crate::both_backends!(used_states, a_state_is_used_once_and_clients_are_bounded);
}

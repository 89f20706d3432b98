//! Each team's git repository for snapshots. The HTTPS token is stored
//! sealed by the hub (never in the clear); writes happen inside a
//! [`Change`], so each carries its audit entry.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Change, Micros, Store, StoreError};

#[derive(Clone, PartialEq, Eq)]
pub struct GitSettingsRow {
    pub team_id: String,
    pub repository_url: String,
    /// Where snapshots are pushed (for review).
    pub push_branch: String,
    /// Where reviewed flows are pulled from.
    pub pull_branch: String,
    /// The HTTPS token, sealed by the master key.
    pub sealed_token: Option<Vec<u8>>,
    pub updated_by: Option<String>,
    pub updated_at: Micros,
}

impl std::fmt::Debug for GitSettingsRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSettingsRow")
            .field("team_id", &self.team_id)
            .field("repository_url", &self.repository_url)
            .field("push_branch", &self.push_branch)
            .field("pull_branch", &self.pull_branch)
            .field(
                "sealed_token",
                &self.sealed_token.as_ref().map(|_| "[sealed]"),
            )
            .field("updated_by", &self.updated_by)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

const COLUMNS: &str =
    "team_id, repository_url, push_branch, pull_branch, sealed_token, updated_by, updated_at";

fn settings_from_row(row: &AnyRow) -> Result<GitSettingsRow, sqlx::Error> {
    Ok(GitSettingsRow {
        team_id: row.try_get("team_id")?,
        repository_url: row.try_get("repository_url")?,
        push_branch: row.try_get("push_branch")?,
        pull_branch: row.try_get("pull_branch")?,
        sealed_token: row.try_get("sealed_token")?,
        updated_by: row.try_get("updated_by")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Change {
    /// Stores the team's git settings, replacing any it had.
    pub async fn put_git_settings(&mut self, s: &GitSettingsRow) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO git_settings ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (team_id) DO UPDATE SET repository_url = excluded.repository_url, \
             push_branch = excluded.push_branch, pull_branch = excluded.pull_branch, \
             sealed_token = excluded.sealed_token, updated_by = excluded.updated_by, \
             updated_at = excluded.updated_at"
        ))
        .bind(&s.team_id)
        .bind(&s.repository_url)
        .bind(&s.push_branch)
        .bind(&s.pull_branch)
        .bind(s.sealed_token.as_deref())
        .bind(&s.updated_by)
        .bind(s.updated_at)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }
}

impl Store {
    /// The team's git settings, if it has any.
    pub async fn git_settings(&self, team_id: &str) -> Result<Option<GitSettingsRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM git_settings WHERE team_id = $1"
        ))
        .bind(team_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(settings_from_row).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::testing::{execute_raw, with_backend, TestResult};
    use crate::Backend;

    async fn settings_are_one_row_per_team_replaced_whole(store: Store) -> TestResult {
        execute_raw(
            &store,
            "INSERT INTO teams (id, name, created_at, updated_at) VALUES ('t1', 'Plant', 1, 1)",
        )
        .await?;
        assert_eq!(store.git_settings("t1").await?, None);
        let mut row = GitSettingsRow {
            team_id: "t1".into(),
            repository_url: "https://git.example.com/a.git".into(),
            push_branch: "redwall/snapshots".into(),
            pull_branch: "main".into(),
            sealed_token: Some(vec![1, 2, 3]),
            updated_by: Some("u1".into()),
            updated_at: 10,
        };
        let mut tx = store.begin_change().await?;
        tx.put_git_settings(&row).await?;
        tx.commit().await?;
        assert_eq!(store.git_settings("t1").await?.as_ref(), Some(&row));
        assert!(!format!("{row:?}").contains("[1, 2, 3]"));
        row.repository_url = "ssh://git@git.example.com/b.git".into();
        row.sealed_token = None;
        row.updated_at = 20;
        let mut tx = store.begin_change().await?;
        tx.put_git_settings(&row).await?;
        tx.commit().await?;
        assert_eq!(store.git_settings("t1").await?.as_ref(), Some(&row));
        assert_eq!(store.git_settings("t2").await?, None);
        execute_raw(&store, "DELETE FROM teams WHERE id = 't1'").await?;
        assert_eq!(store.git_settings("t1").await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn git_settings_on_sqlite() -> TestResult {
        with_backend(
            Backend::Sqlite,
            settings_are_one_row_per_team_replaced_whole,
        )
        .await
    }

    #[tokio::test]
    async fn git_settings_on_postgres() -> TestResult {
        with_backend(
            Backend::Postgres,
            settings_are_one_row_per_team_replaced_whole,
        )
        .await
    }
}

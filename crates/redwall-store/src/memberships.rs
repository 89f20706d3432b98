//! Writes to a team's name, settings and memberships, inside a [`Change`].
//!
//! Every membership write, from the API or from SSO group mapping, takes the
//! team's lock first and applies one rule
//! ([`redwall_policy::team_rules::leaves_no_owner`]), so concurrent
//! demotions cannot leave a team without an Owner on either backend.

use redwall_policy::permission::TeamRole;
use redwall_policy::team_rules::leaves_no_owner;

use crate::{Backend, Change, Micros, Store, StoreError, Team};

/// What a membership write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipWrite {
    Unchanged,
    Added,
    Changed,
    Removed,
    /// Refused: the team would be left without an Owner.
    LastOwner,
}

/// What a change to an existing member did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChange {
    Done,
    NotAMember,
    /// Refused: the team would be left without an Owner.
    LastOwner,
}

impl Change {
    /// Creates a team with `owner_id` as its first Owner.
    pub async fn create_team(
        &mut self,
        id: &str,
        name: &str,
        owner_id: &str,
        now: Micros,
    ) -> Result<Team, StoreError> {
        let tx = self.tx();
        sqlx::query(
            "INSERT INTO teams (id, name, require_mfa, allowed_cidrs, created_at, updated_at) \
             VALUES ($1, $2, 0, '[]', $3, $3)",
        )
        .bind(id)
        .bind(name)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO memberships (team_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(owner_id)
        .bind(TeamRole::Owner.name())
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(Team {
            id: id.to_owned(),
            name: name.to_owned(),
            require_mfa: false,
            allowed_cidrs: Vec::new(),
            created_at: now,
            updated_at: now,
        })
    }

    pub async fn rename_team(
        &mut self,
        id: &str,
        name: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE teams SET name = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(name)
            .bind(now)
            .execute(&mut **self.tx())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_team_settings(
        &mut self,
        id: &str,
        require_mfa: bool,
        allowed_cidrs: &[String],
        now: Micros,
    ) -> Result<bool, StoreError> {
        let cidrs = serde_json::to_string(allowed_cidrs).unwrap_or_else(|_| "[]".into());
        let done = sqlx::query(
            "UPDATE teams SET require_mfa = $2, allowed_cidrs = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(i64::from(require_mfa))
        .bind(cidrs)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The member's role, read under the team's lock (`None`: not a member).
    pub async fn locked_role(
        &mut self,
        team_id: &str,
        user_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.lock_team(team_id).await?;
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT role FROM memberships WHERE team_id = $1 AND user_id = $2",
        )
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(&mut **self.tx())
        .await?)
    }

    /// Sets the user's role in the team (`None`: not a member), keeping at
    /// least one Owner.
    pub async fn write_membership(
        &mut self,
        team_id: &str,
        user_id: &str,
        role: Option<&str>,
        now: Micros,
    ) -> Result<MembershipWrite, StoreError> {
        let current = self.locked_role(team_id, user_id).await?;
        if current.as_deref() == role {
            return Ok(MembershipWrite::Unchanged);
        }
        let parse = |r: Option<&str>| r.and_then(TeamRole::parse);
        if current.as_deref() == Some(TeamRole::Owner.name()) {
            let owners = self.owners(team_id).await?;
            if leaves_no_owner(parse(current.as_deref()), parse(role), owners) {
                return Ok(MembershipWrite::LastOwner);
            }
        }
        let tx = self.tx();
        Ok(match (current, role) {
            (None, Some(r)) => {
                sqlx::query(
                    "INSERT INTO memberships (team_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(team_id)
                .bind(user_id)
                .bind(r)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                MembershipWrite::Added
            }
            (Some(_), Some(r)) => {
                sqlx::query("UPDATE memberships SET role = $3 WHERE team_id = $1 AND user_id = $2")
                    .bind(team_id)
                    .bind(user_id)
                    .bind(r)
                    .execute(&mut **tx)
                    .await?;
                MembershipWrite::Changed
            }
            (Some(_), None) => {
                sqlx::query("DELETE FROM memberships WHERE team_id = $1 AND user_id = $2")
                    .bind(team_id)
                    .bind(user_id)
                    .execute(&mut **tx)
                    .await?;
                MembershipWrite::Removed
            }
            (None, None) => MembershipWrite::Unchanged,
        })
    }

    /// Changes an existing member's role (or, with `None`, removes them).
    pub async fn change_member(
        &mut self,
        team_id: &str,
        user_id: &str,
        role: Option<&str>,
        now: Micros,
    ) -> Result<MemberChange, StoreError> {
        if self.locked_role(team_id, user_id).await?.is_none() {
            return Ok(MemberChange::NotAMember);
        }
        Ok(
            match self.write_membership(team_id, user_id, role, now).await? {
                MembershipWrite::LastOwner => MemberChange::LastOwner,
                _ => MemberChange::Done,
            },
        )
    }

    /// The team's instances, counted under the team's lock (so none is
    /// created meanwhile: an instance's insert waits for the lock).
    pub async fn locked_instance_count(&mut self, team_id: &str) -> Result<i64, StoreError> {
        self.lock_team(team_id).await?;
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM instances WHERE team_id = $1")
                .bind(team_id)
                .fetch_one(&mut **self.tx())
                .await?,
        )
    }

    /// Deletes the team, its memberships, invitations and team-limited
    /// tokens.
    pub async fn delete_team(&mut self, id: &str) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM api_tokens WHERE team_id = $1")
            .bind(id)
            .execute(&mut **self.tx())
            .await?;
        let done = sqlx::query("DELETE FROM teams WHERE id = $1")
            .bind(id)
            .execute(&mut **self.tx())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Serializes membership changes of one team on PostgreSQL (SQLite's
    /// `BEGIN IMMEDIATE` already serializes all writers).
    async fn lock_team(&mut self, team_id: &str) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM teams WHERE id = $1 FOR UPDATE")
                .bind(team_id)
                .fetch_optional(&mut **self.tx())
                .await?;
        }
        Ok(())
    }

    /// Owners of the team, counted under its lock.
    pub(crate) async fn locked_owner_count(&mut self, team_id: &str) -> Result<i64, StoreError> {
        self.lock_team(team_id).await?;
        self.owners(team_id).await
    }

    async fn owners(&mut self, team_id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM memberships WHERE team_id = $1 AND role = 'owner'",
        )
        .bind(team_id)
        .fetch_one(&mut **self.tx())
        .await?)
    }
}

/// The same writes, each its own change without audit entries: for callers
/// that record nothing (tests, set-up).
impl Store {
    pub async fn create_team(
        &self,
        id: &str,
        name: &str,
        owner_id: &str,
        now: Micros,
    ) -> Result<Team, StoreError> {
        self.in_change(async |c| c.create_team(id, name, owner_id, now).await)
            .await
    }

    pub async fn rename_team(&self, id: &str, name: &str, now: Micros) -> Result<bool, StoreError> {
        self.in_change(async |c| c.rename_team(id, name, now).await)
            .await
    }

    pub async fn set_team_settings(
        &self,
        id: &str,
        require_mfa: bool,
        allowed_cidrs: &[String],
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| {
            c.set_team_settings(id, require_mfa, allowed_cidrs, now)
                .await
        })
        .await
    }

    pub async fn write_membership(
        &self,
        team_id: &str,
        user_id: &str,
        role: Option<&str>,
        now: Micros,
    ) -> Result<MembershipWrite, StoreError> {
        self.in_change(async |c| c.write_membership(team_id, user_id, role, now).await)
            .await
    }

    /// Changes a member's role, refusing to demote the last Owner.
    pub async fn set_member_role(
        &self,
        team_id: &str,
        user_id: &str,
        role: &str,
    ) -> Result<MemberChange, StoreError> {
        self.in_change(async |c| c.change_member(team_id, user_id, Some(role), 0).await)
            .await
    }

    /// Removes a member, refusing to remove the last Owner.
    pub async fn remove_member(
        &self,
        team_id: &str,
        user_id: &str,
    ) -> Result<MemberChange, StoreError> {
        self.in_change(async |c| c.change_member(team_id, user_id, None, 0).await)
            .await
    }
}

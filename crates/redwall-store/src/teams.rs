//! Teams, memberships and invitations.
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

#[derive(Clone, Debug)]
pub struct Invitation {
    pub id: String,
    pub team_id: String,
    pub team_name: String,
    pub invitee_id: String,
    pub invitee_name: String,
    pub role: String,
    pub invited_by: Option<String>,
    pub created_at: Micros,
    pub expires_at: Micros,
}

#[derive(Clone, Copy)]
enum InvitationSide {
    Team,
    Invitee,
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

const INVITATION_SELECT: &str = "SELECT i.id, i.team_id, t.name AS team_name, i.invitee_id, \
     u.username AS invitee_name, i.role, i.invited_by, i.created_at, i.expires_at \
     FROM invitations i JOIN teams t ON t.id = i.team_id JOIN users u ON u.id = i.invitee_id";

fn invitation_from_row(row: &AnyRow) -> Result<Invitation, sqlx::Error> {
    Ok(Invitation {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        team_name: row.try_get("team_name")?,
        invitee_id: row.try_get("invitee_id")?,
        invitee_name: row.try_get("invitee_name")?,
        role: row.try_get("role")?,
        invited_by: row.try_get("invited_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
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
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM api_tokens WHERE team_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM teams WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
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

    /// Stores an invitation. `Conflict` when the person already has an open
    /// invitation to this team.
    pub async fn create_invitation(&self, i: &Invitation) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO invitations (id, team_id, invitee_id, role, invited_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&i.id)
        .bind(&i.team_id)
        .bind(&i.invitee_id)
        .bind(&i.role)
        .bind(&i.invited_by)
        .bind(i.created_at)
        .bind(i.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes expired invitations of a team, so an expired one does not block a new one.
    pub async fn delete_expired_invitations(&self, now: Micros) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM invitations WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// The team's open invitations (expired ones included, with their expiry), newest first.
    pub async fn list_team_invitations(
        &self,
        team_id: &str,
    ) -> Result<Vec<Invitation>, StoreError> {
        let sql =
            format!("{INVITATION_SELECT} WHERE i.team_id = $1 ORDER BY i.created_at DESC, i.id");
        let rows = sqlx::query(&sql)
            .bind(team_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(invitation_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The invitations addressed to a user that have not expired.
    pub async fn list_user_invitations(
        &self,
        user_id: &str,
        now: Micros,
    ) -> Result<Vec<Invitation>, StoreError> {
        let sql = format!(
            "{INVITATION_SELECT} WHERE i.invitee_id = $1 AND i.expires_at > $2 ORDER BY i.created_at DESC, i.id"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(now)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(invitation_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Revokes one of the team's invitations.
    pub async fn revoke_invitation(
        &self,
        team_id: &str,
        invitation_id: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        self.take_invitation(InvitationSide::Team, team_id, invitation_id)
            .await
    }

    /// Declines an invitation addressed to `invitee_id`.
    pub async fn decline_invitation(
        &self,
        invitee_id: &str,
        invitation_id: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        self.take_invitation(InvitationSide::Invitee, invitee_id, invitation_id)
            .await
    }

    /// Accepts an unexpired invitation addressed to `invitee_id`: the
    /// membership is created and the invitation removed in one transaction.
    /// `None` when there is no such open invitation for this person.
    pub async fn accept_invitation(
        &self,
        invitee_id: &str,
        invitation_id: &str,
        now: Micros,
    ) -> Result<Option<Invitation>, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "{INVITATION_SELECT} WHERE i.id = $1 AND i.invitee_id = $2 AND i.expires_at > $3"
        );
        let row = sqlx::query(&sql)
            .bind(invitation_id)
            .bind(invitee_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(invitation) = row.as_ref().map(invitation_from_row).transpose()? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM invitations WHERE id = $1")
            .bind(invitation_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO memberships (team_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&invitation.team_id)
        .bind(invitee_id)
        .bind(&invitation.role)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(invitation))
    }

    /// Removes an invitation as seen from one side (the team, or the invitee).
    async fn take_invitation(
        &self,
        side: InvitationSide,
        owner: &str,
        invitation_id: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        let column = match side {
            InvitationSide::Team => "i.team_id",
            InvitationSide::Invitee => "i.invitee_id",
        };
        let mut tx = self.begin_write().await?;
        let sql = format!("{INVITATION_SELECT} WHERE i.id = $1 AND {column} = $2");
        let row = sqlx::query(&sql)
            .bind(invitation_id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(invitation) = row.as_ref().map(invitation_from_row).transpose()? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM invitations WHERE id = $1")
            .bind(invitation_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(invitation))
    }
}

//! Invitations to a team: Owners invite a user by name, the invitee accepts
//! or declines. Writes happen inside a [`Change`], so each carries its audit
//! entry; accepting takes the team's lock like every membership write.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Change, Micros, Store, StoreError};

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

/// Whose side removes an invitation: the team revokes it, the invitee
/// declines it. Each sees only its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvitationSide {
    Team,
    Invitee,
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

fn invitations(rows: &[AnyRow]) -> Result<Vec<Invitation>, StoreError> {
    rows.iter()
        .map(invitation_from_row)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

impl Change {
    /// Stores an invitation, first sweeping expired ones so that an expired
    /// invitation does not block a new one. `Conflict` when the person
    /// already has an open invitation to this team.
    pub async fn create_invitation(
        &mut self,
        i: &Invitation,
        now: Micros,
    ) -> Result<(), StoreError> {
        self.delete_expired_invitations(now).await?;
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
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    pub async fn delete_expired_invitations(&mut self, now: Micros) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM invitations WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut **self.tx())
            .await?;
        Ok(done.rows_affected())
    }

    /// Removes an invitation as seen from one side: `owner` is the team's
    /// id or the invitee's. `None` when that side has no such invitation.
    pub async fn take_invitation(
        &mut self,
        side: InvitationSide,
        owner: &str,
        invitation_id: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        let column = match side {
            InvitationSide::Team => "i.team_id",
            InvitationSide::Invitee => "i.invitee_id",
        };
        let sql = format!("{INVITATION_SELECT} WHERE i.id = $1 AND {column} = $2");
        let row = sqlx::query(&sql)
            .bind(invitation_id)
            .bind(owner)
            .fetch_optional(&mut **self.tx())
            .await?;
        let Some(invitation) = row.as_ref().map(invitation_from_row).transpose()? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM invitations WHERE id = $1")
            .bind(invitation_id)
            .execute(&mut **self.tx())
            .await?;
        Ok(Some(invitation))
    }

    /// Accepts an unexpired invitation addressed to `invitee_id`: the
    /// membership is created (under the team's lock) and the invitation
    /// removed. `None` when there is no such open invitation for this
    /// person; `Conflict` when they are already in the team.
    pub async fn accept_invitation(
        &mut self,
        invitee_id: &str,
        invitation_id: &str,
        now: Micros,
    ) -> Result<Option<Invitation>, StoreError> {
        let sql = format!(
            "{INVITATION_SELECT} WHERE i.id = $1 AND i.invitee_id = $2 AND i.expires_at > $3"
        );
        let row = sqlx::query(&sql)
            .bind(invitation_id)
            .bind(invitee_id)
            .bind(now)
            .fetch_optional(&mut **self.tx())
            .await?;
        let Some(invitation) = row.as_ref().map(invitation_from_row).transpose()? else {
            return Ok(None);
        };
        if self
            .locked_role(&invitation.team_id, invitee_id)
            .await?
            .is_some()
        {
            return Err(StoreError::Conflict("membership".into()));
        }
        sqlx::query("DELETE FROM invitations WHERE id = $1")
            .bind(invitation_id)
            .execute(&mut **self.tx())
            .await?;
        self.write_membership(&invitation.team_id, invitee_id, Some(&invitation.role), now)
            .await?;
        Ok(Some(invitation))
    }
}

impl Store {
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
        invitations(&rows)
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
        invitations(&rows)
    }
}

/// The same writes, each its own change without audit entries: for callers
/// that record nothing (tests, set-up).
impl Store {
    /// Stores an invitation as given (expired ones are not swept).
    pub async fn create_invitation(&self, i: &Invitation) -> Result<(), StoreError> {
        self.in_change(async |c| c.create_invitation(i, Micros::MIN).await)
            .await
    }

    pub async fn delete_expired_invitations(&self, now: Micros) -> Result<u64, StoreError> {
        self.in_change(async |c| c.delete_expired_invitations(now).await)
            .await
    }

    pub async fn revoke_invitation(
        &self,
        team_id: &str,
        invitation_id: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        self.in_change(async |c| {
            c.take_invitation(InvitationSide::Team, team_id, invitation_id)
                .await
        })
        .await
    }

    pub async fn decline_invitation(
        &self,
        invitee_id: &str,
        invitation_id: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        self.in_change(async |c| {
            c.take_invitation(InvitationSide::Invitee, invitee_id, invitation_id)
                .await
        })
        .await
    }

    pub async fn accept_invitation(
        &self,
        invitee_id: &str,
        invitation_id: &str,
        now: Micros,
    ) -> Result<Option<Invitation>, StoreError> {
        self.in_change(async |c| c.accept_invitation(invitee_id, invitation_id, now).await)
            .await
    }
}

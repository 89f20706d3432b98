//! Invitations: an Owner invites a user by name; the invitee accepts or
//! declines. Each is one change with its audit entry; accepting joins the
//! team under its lock, like every other membership write.

use redwall_policy::audit_event::AuditEvent;
use redwall_policy::team_rules::{invitation_days, team_role};
use redwall_policy::MICROS_PER_SECOND;
use redwall_store::{Invitation, InvitationSide, StoreError};
use serde_json::json;

use crate::audit::{Event, Who};
use crate::{Hub, HubError, HubResult};

/// What an Owner asks for.
#[derive(Debug)]
pub struct InvitationRequest {
    pub username: String,
    pub role: String,
    pub expires_in_days: Option<i64>,
}

impl Hub {
    /// Invites a user to the team. Owners are authenticated platform users
    /// who need to know whether the person they invite exists; the attempt
    /// is audited either way.
    pub async fn invite(
        &self,
        who: Who<'_>,
        team_id: &str,
        inviter_id: &str,
        req: InvitationRequest,
    ) -> HubResult<Invitation> {
        let role = team_role(&req.role)?;
        let days = invitation_days(req.expires_in_days)?;
        let invitee = match redwall_policy::username::check_username(&req.username) {
            Ok(()) => self.store.find_user_by_username(&req.username).await?,
            Err(_) => None,
        };
        let Some(invitee) = invitee.filter(|u| !u.suspended) else {
            return Err(HubError::invalid(
                "unknown_user",
                "no active user has this username",
            ));
        };
        if self
            .store
            .get_member_role(team_id, &invitee.id)
            .await?
            .is_some()
        {
            return Err(HubError::conflict(
                "already_member",
                "this user is already in the team",
            ));
        }
        let team = self
            .store
            .get_team(team_id)
            .await?
            .ok_or(HubError::NotFound)?;
        let now = self.now();
        let invitation = Invitation {
            id: crate::ids::new_id(),
            team_id: team_id.to_string(),
            team_name: team.name,
            invitee_id: invitee.id.clone(),
            invitee_name: invitee.username.clone(),
            role: role.name().to_string(),
            invited_by: Some(inviter_id.to_string()),
            created_at: now,
            expires_at: now + days * 86_400 * MICROS_PER_SECOND,
        };
        let mut tx = self.begin().await?;
        match tx.create_invitation(&invitation, now).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(HubError::conflict(
                "already_invited",
                "this user already has an open invitation to the team; revoke it to send a new one",
            )),
            Err(e) => return Err(e.into()),
        }
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::MemberInvited,
                format!("user:{}", invitee.id),
                json!({
                    "invitation": invitation.id,
                    "username": invitee.username,
                    "role": invitation.role,
                    "expires_at": crate::clock::rfc3339(invitation.expires_at),
                }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok(invitation)
    }

    /// Withdraws one of the team's invitations.
    pub async fn revoke_invitation(
        &self,
        who: Who<'_>,
        team_id: &str,
        invitation_id: &str,
    ) -> HubResult<()> {
        let mut tx = self.begin().await?;
        let invitation = tx
            .take_invitation(InvitationSide::Team, team_id, invitation_id)
            .await?
            .ok_or(HubError::NotFound)?;
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::InvitationRevoked,
                format!("user:{}", invitation.invitee_id),
                json!({ "invitation": invitation.id }),
            ),
        );
        self.commit(tx, 1).await
    }

    /// The invitee joins the team with the invited role. Someone else's,
    /// expired, used or unknown invitations get one answer, `NotFound`, and
    /// are audited: it may be an attempt to join a team uninvited.
    pub async fn accept_invitation(
        &self,
        who: Who<'_>,
        user_id: &str,
        invitation_id: &str,
    ) -> HubResult<Invitation> {
        let mut tx = self.begin().await?;
        let invitation = match tx
            .accept_invitation(user_id, invitation_id, self.now())
            .await
        {
            Ok(Some(invitation)) => invitation,
            Ok(None) => {
                drop(tx);
                return Err(self.no_invitation(who, invitation_id, "accept").await);
            }
            Err(StoreError::Conflict(_)) => {
                return Err(HubError::conflict(
                    "already_member",
                    "you are already in this team",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        self.note(
            &mut tx,
            who,
            Event::in_team(
                &invitation.team_id,
                AuditEvent::InvitationAccepted,
                format!("user:{user_id}"),
                json!({ "invitation": invitation.id, "role": invitation.role }),
            ),
        );
        self.commit(tx, 1).await?;
        self.caches.forget_membership(&invitation.team_id, user_id);
        Ok(invitation)
    }

    /// The invitee turns the invitation down; refused like
    /// [`Hub::accept_invitation`].
    pub async fn decline_invitation(
        &self,
        who: Who<'_>,
        user_id: &str,
        invitation_id: &str,
    ) -> HubResult<()> {
        let mut tx = self.begin().await?;
        let Some(invitation) = tx
            .take_invitation(InvitationSide::Invitee, user_id, invitation_id)
            .await?
        else {
            drop(tx);
            return Err(self.no_invitation(who, invitation_id, "decline").await);
        };
        self.note(
            &mut tx,
            who,
            Event::in_team(
                &invitation.team_id,
                AuditEvent::InvitationDeclined,
                format!("user:{user_id}"),
                json!({ "invitation": invitation.id }),
            ),
        );
        self.commit(tx, 1).await
    }

    /// Records the refusal; answers `NotFound`, or the audit failure.
    async fn no_invitation(&self, who: Who<'_>, invitation_id: &str, action: &str) -> HubError {
        let recorded = self
            .record_event(
                who,
                Event::refused(
                    AuditEvent::AccessDenied,
                    format!("invitation:{invitation_id}"),
                    json!({ "action": action, "reason": "no open invitation for this user" }),
                ),
            )
            .await;
        match recorded {
            Ok(()) => HubError::NotFound,
            Err(e) => e,
        }
    }
}

impl Hub {
    /// The open invitations addressed to the user.
    pub async fn invitations_for(&self, user_id: &str) -> HubResult<Vec<Invitation>> {
        Ok(self
            .store
            .list_user_invitations(user_id, self.now())
            .await?)
    }
}

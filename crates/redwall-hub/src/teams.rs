//! Teams: settings and memberships.

use redwall_policy::audit_event::AuditEvent;
use redwall_policy::permission::TeamRole;
use redwall_policy::team_rules::{normalize_ranges, team_name, MAX_TEAMS_PER_USER};
use redwall_store::{MemberChange, Team};
use serde_json::json;

use crate::audit::{Event, Who};
use crate::{Hub, HubError, HubResult};

/// What to change of a team; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct TeamChange {
    pub name: Option<String>,
    pub require_mfa: Option<bool>,
    /// Addresses or CIDR ranges; empty allows any address.
    pub allowed_cidrs: Option<Vec<String>>,
}

/// A change to a member, as the caller's answer.
fn done(change: MemberChange) -> HubResult<()> {
    match change {
        MemberChange::Done => Ok(()),
        MemberChange::NotAMember => Err(HubError::NotFound),
        MemberChange::LastOwner => Err(HubError::conflict(
            "last_owner",
            "a team must keep at least one Owner: make someone else Owner first",
        )),
    }
}

impl Hub {
    pub async fn team(&self, team_id: &str) -> HubResult<Team> {
        self.store
            .get_team(team_id)
            .await?
            .ok_or(HubError::NotFound)
    }

    /// Creates a team with `owner_id` (the caller) as its first Owner.
    pub async fn create_team(&self, who: Who<'_>, owner_id: &str, name: &str) -> HubResult<Team> {
        let name = team_name(name)?;
        if self.store.list_teams_of_user(owner_id).await?.len() >= MAX_TEAMS_PER_USER {
            return Err(HubError::conflict(
                "too_many_teams",
                format!("a user may belong to at most {MAX_TEAMS_PER_USER} teams"),
            ));
        }
        let id = crate::ids::new_id();
        let mut tx = self.begin().await?;
        let team = tx.create_team(&id, &name, owner_id, self.now()).await?;
        self.note(
            &mut tx,
            who,
            Event::in_team(
                &team.id,
                AuditEvent::TeamCreated,
                format!("team:{}", team.id),
                json!({ "name": team.name }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok(team)
    }

    /// Changes a team's name and settings, all or nothing. `caller_has_mfa`:
    /// whether the caller enrolled in MFA (an Owner without it may not
    /// require it, or they would lock themselves out).
    pub async fn update_team(
        &self,
        who: Who<'_>,
        caller_has_mfa: bool,
        team_id: &str,
        change: TeamChange,
    ) -> HubResult<Team> {
        let before = self.team(team_id).await?;
        let name = change.name.as_deref().map(team_name).transpose()?;
        let ranges = change
            .allowed_cidrs
            .as_deref()
            .map(normalize_ranges)
            .transpose()?;
        let require_mfa = change.require_mfa.unwrap_or(before.require_mfa);
        if require_mfa && !before.require_mfa && !caller_has_mfa {
            return Err(HubError::invalid(
                "enrol_mfa_first",
                "enrol in MFA yourself before requiring it for the team",
            ));
        }
        let allowed = ranges
            .clone()
            .unwrap_or_else(|| before.allowed_cidrs.clone());
        let now = self.now();
        let mut tx = self.begin().await?;
        if let Some(name) = &name {
            tx.rename_team(team_id, name, now).await?;
        }
        tx.set_team_settings(team_id, require_mfa, &allowed, now)
            .await?;
        let after_name = name.clone().unwrap_or_else(|| before.name.clone());
        let event = if name.is_some() && change.require_mfa.is_none() && ranges.is_none() {
            AuditEvent::TeamRenamed
        } else {
            AuditEvent::TeamSettingsChanged
        };
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                event,
                format!("team:{team_id}"),
                json!({
                    "before": {"name": before.name, "require_mfa": before.require_mfa, "allowed_cidrs": before.allowed_cidrs},
                    "after": {"name": after_name, "require_mfa": require_mfa, "allowed_cidrs": allowed},
                }),
            ),
        );
        self.commit(tx, 1).await?;
        self.caches.forget_team(team_id);
        self.team(team_id).await
    }

    /// Gives a member another role; never demotes the team's last Owner.
    pub async fn change_member_role(
        &self,
        who: Who<'_>,
        team_id: &str,
        user_id: &str,
        role: TeamRole,
    ) -> HubResult<()> {
        let mut tx = self.begin().await?;
        let before = tx.locked_role(team_id, user_id).await?;
        done(
            tx.change_member(team_id, user_id, Some(role.name()), self.now())
                .await?,
        )?;
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::MemberRoleChanged,
                format!("user:{user_id}"),
                json!({ "from": before, "to": role.name() }),
            ),
        );
        self.commit(tx, 1).await?;
        self.caches.forget_membership(team_id, user_id);
        Ok(())
    }

    /// Ends a membership (`event`: removed by an Owner, or left); never the
    /// team's last Owner. Access ends with this call.
    pub async fn end_membership(
        &self,
        who: Who<'_>,
        team_id: &str,
        user_id: &str,
        event: AuditEvent,
    ) -> HubResult<()> {
        let mut tx = self.begin().await?;
        done(tx.change_member(team_id, user_id, None, self.now()).await?)?;
        let rotated = self
            .rotate_created_by(&mut tx, who, Some(team_id), user_id)
            .await?;
        self.note(
            &mut tx,
            who,
            Event::in_team(team_id, event, format!("user:{user_id}"), json!({})),
        );
        self.commit(tx, 1 + rotated.len()).await?;
        self.caches.forget_membership(team_id, user_id);
        self.after_creator_left(rotated).await;
        Ok(())
    }

    /// Deletes the team; `confirm_name` must repeat its name. Instances
    /// hold flows and credentials: they are deleted one by one,
    /// deliberately, before the team can go. Its audit entries stay.
    pub async fn delete_team(
        &self,
        who: Who<'_>,
        team_id: &str,
        confirm_name: &str,
    ) -> HubResult<()> {
        let team = self.team(team_id).await?;
        if confirm_name != team.name {
            return Err(HubError::invalid(
                "confirmation_mismatch",
                "repeat the team's exact name in confirm_name to delete it",
            ));
        }
        // Read before the change begins: a change never waits for a second
        // connection of the pool while it holds one.
        let clients = self.store.list_broker_clients(team_id).await?;
        let mut tx = self.begin().await?;
        if tx.locked_instance_count(team_id).await? > 0 {
            return Err(HubError::conflict(
                "team_has_instances",
                "delete the team's instances first",
            ));
        }
        tx.delete_team(team_id).await?;
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::TeamDeleted,
                format!("team:{team_id}"),
                json!({ "name": team.name }),
            ),
        );
        self.commit(tx, 1).await?;
        self.caches.forget_team(team_id);
        self.after_clients_deleted(clients).await;
        Ok(())
    }

    /// The teams the user belongs to, with their role in each.
    pub async fn teams_of_user(&self, user_id: &str) -> HubResult<Vec<(Team, String)>> {
        Ok(self.store.list_teams_of_user(user_id).await?)
    }

    pub async fn team_members(&self, team_id: &str) -> HubResult<Vec<redwall_store::Member>> {
        Ok(self.store.list_members(team_id).await?)
    }

    pub async fn team_invitations(
        &self,
        team_id: &str,
    ) -> HubResult<Vec<redwall_store::Invitation>> {
        Ok(self.store.list_team_invitations(team_id).await?)
    }
}

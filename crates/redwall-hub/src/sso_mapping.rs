//! Applies an SSO group mapping's outcome to a user: team memberships and
//! the platform admin flag, in one change with its audit entries, through
//! the same locked membership writes as the API, never leaving a team
//! without an Owner or the platform without an admin.

use redwall_policy::admin_rules::{check_account_change, AdminStanding};
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::sso_mapping::MappingOutcome;
use redwall_store::{MembershipWrite, User};
use serde_json::json;

use crate::audit::{Actor, Event, Origin, Who};
use crate::ids::looks_like_id;
use crate::{Hub, HubResult};

impl Hub {
    /// A rule's team: an id, or a name that exactly one team has.
    async fn mapped_team(&self, team: &str) -> HubResult<Option<String>> {
        if looks_like_id(team) && self.store.get_team(team).await?.is_some() {
            return Ok(Some(team.to_string()));
        }
        let found = self.store.find_teams_by_name(team).await?;
        Ok(match found.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        })
    }

    /// Writes what `outcome` says `user` should hold, as `provider`'s
    /// mapping, recorded as done by the user (it happens at their sign-in).
    pub async fn apply_sso_mapping(
        &self,
        origin: &Origin,
        user: &User,
        provider: &str,
        outcome: &MappingOutcome,
    ) -> HubResult<()> {
        let actor = Actor::user(&user.id, &user.username);
        let who = Who::by(&actor, origin);
        // Teams are resolved before the change: a rule naming no single
        // team is skipped (and said so), not an error at sign-in.
        let mut teams = Vec::with_capacity(outcome.teams.len());
        for (team_ref, role) in &outcome.teams {
            match self.mapped_team(team_ref).await? {
                Some(id) => teams.push((id, *role)),
                None => tracing::warn!(team = %team_ref, "a mapping rule names no single team"),
            }
        }
        // Locks are taken in one order (by team id), so two sign-ins never
        // wait on each other's teams.
        teams.sort_by(|a, b| a.0.cmp(&b.0));
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut touched = Vec::new();
        for (team_id, role) in &teams {
            let written = tx
                .write_membership(team_id, &user.id, role.map(|r| r.name()), now)
                .await?;
            let result = match written {
                MembershipWrite::Unchanged => continue,
                MembershipWrite::Added => "added",
                MembershipWrite::Changed => "changed",
                MembershipWrite::Removed => "removed",
                MembershipWrite::LastOwner => "kept_last_owner",
            };
            let change =
                json!({ "team_id": team_id, "role": role.map(|r| r.name()), "result": result });
            self.note(
                &mut tx,
                who,
                Event::in_team(
                    team_id,
                    AuditEvent::SsoRolesMapped,
                    format!("user:{}", user.id),
                    json!({ "provider": provider, "change": change }),
                ),
            );
            touched.push(team_id.clone());
        }
        let mut admin_changed = false;
        if let Some(admin) = outcome.admin {
            if admin != user.is_admin {
                let before = AdminStanding {
                    is_admin: user.is_admin,
                    suspended: user.suspended,
                };
                let after = AdminStanding {
                    is_admin: admin,
                    ..before
                };
                let admins = tx.locked_admin_count().await?;
                // The mapping never takes the last admin: it is kept, as a
                // team's last Owner is.
                if check_account_change(None, &user.id, before, Some(after), admins).is_ok() {
                    tx.set_admin(&user.id, admin, now).await?;
                    self.note(
                        &mut tx,
                        who,
                        Event::platform(
                            AuditEvent::UserAdminChanged,
                            Outcome::Success,
                            Some(format!("user:{}", user.id)),
                            json!({ "is_admin": admin, "by": "sso_mapping", "provider": provider }),
                        ),
                    );
                    admin_changed = true;
                }
            }
        }
        if !tx.has_entries() {
            return Ok(());
        }
        let entries = touched.len() + usize::from(admin_changed);
        self.commit(tx, entries).await?;
        for team_id in &touched {
            self.caches.forget_membership(team_id, &user.id);
        }
        if admin_changed {
            self.caches.forget_user(&user.id);
        }
        Ok(())
    }
}

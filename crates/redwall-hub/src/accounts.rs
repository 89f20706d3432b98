//! Platform accounts: the admin flag, suspension and deletion, under the
//! rules of `redwall_policy::admin_rules`.

use redwall_policy::admin_rules::{check_account_change, AdminRefusal, AdminStanding};
use redwall_policy::audit_event::AuditEvent;
use redwall_store::{Change, User};
use serde_json::json;

use crate::audit::{Event, Who};
use crate::{Hub, HubError, HubResult};

impl From<AdminRefusal> for HubError {
    fn from(r: AdminRefusal) -> Self {
        HubError::conflict(r.code(), r.message())
    }
}

fn standing(u: &User) -> AdminStanding {
    AdminStanding {
        is_admin: u.is_admin,
        suspended: u.suspended,
    }
}

impl Hub {
    async fn existing_user(&self, user_id: &str) -> HubResult<User> {
        self.store
            .get_user(user_id)
            .await?
            .ok_or(HubError::NotFound)
    }

    /// Checks the account rules inside `tx`, with the admins counted under
    /// its lock.
    async fn check_account(
        &self,
        tx: &mut Change,
        who: Who<'_>,
        target: &User,
        after: Option<AdminStanding>,
    ) -> HubResult<()> {
        let before = standing(target);
        let losing_admin =
            before.is_active_admin() && !after.is_some_and(AdminStanding::is_active_admin);
        // Counting locks the admins' rows; only a change that may take the
        // last one needs it.
        let admins = if losing_admin {
            tx.locked_admin_count().await?
        } else {
            i64::MAX
        };
        let by = who.actor.and_then(|a| a.id.as_deref());
        Ok(check_account_change(by, &target.id, before, after, admins)?)
    }

    /// Grants or removes platform admin.
    pub async fn set_admin(&self, who: Who<'_>, user_id: &str, is_admin: bool) -> HubResult<User> {
        let target = self.existing_user(user_id).await?;
        if target.is_admin == is_admin {
            return Ok(target);
        }
        let mut tx = self.begin().await?;
        let after = AdminStanding {
            is_admin,
            suspended: target.suspended,
        };
        self.check_account(&mut tx, who, &target, Some(after))
            .await?;
        if !tx.set_admin(user_id, is_admin, self.now()).await? {
            return Err(HubError::NotFound);
        }
        self.note(
            &mut tx,
            who,
            Event::on_platform(
                AuditEvent::UserAdminChanged,
                format!("user:{}", user_id),
                json!({ "username": target.username, "is_admin": is_admin }),
            ),
        );
        self.commit(tx, 1).await?;
        self.caches.forget_user(user_id);
        self.existing_user(user_id).await
    }

    /// Suspends (ending every session and token at once) or reinstates.
    pub async fn set_suspended(
        &self,
        who: Who<'_>,
        user_id: &str,
        suspended: bool,
    ) -> HubResult<User> {
        let target = self.existing_user(user_id).await?;
        let mut tx = self.begin().await?;
        let after = AdminStanding {
            is_admin: target.is_admin,
            suspended,
        };
        self.check_account(&mut tx, who, &target, Some(after))
            .await?;
        if !tx.set_suspended(user_id, suspended, self.now()).await? {
            return Err(HubError::NotFound);
        }
        let event = if suspended {
            AuditEvent::UserSuspended
        } else {
            AuditEvent::UserReinstated
        };
        self.note(
            &mut tx,
            who,
            Event::on_platform(
                event,
                format!("user:{}", user_id),
                json!({ "username": target.username }),
            ),
        );
        self.commit(tx, 1).await?;
        self.caches.forget_user(user_id);
        self.existing_user(user_id).await
    }

    /// Deletes an account with its sessions, tokens and recovery codes;
    /// never the last admin, nor the only Owner of a team.
    pub async fn delete_user(&self, who: Who<'_>, user_id: &str) -> HubResult<()> {
        let target = self.existing_user(user_id).await?;
        let mut tx = self.begin().await?;
        self.check_account(&mut tx, who, &target, None).await?;
        let orphaned = tx.teams_solely_owned_by(user_id).await?;
        if !orphaned.is_empty() {
            return Err(HubError::conflict(
                "last_owner",
                format!(
                    "this user is the only Owner of {} team(s); give each another Owner first: {}",
                    orphaned.len(),
                    orphaned.join(", ")
                ),
            ));
        }
        if !tx.delete_user(user_id).await? {
            return Err(HubError::NotFound);
        }
        let rotated = self.rotate_created_by(&mut tx, who, None, user_id).await?;
        self.note(
            &mut tx,
            who,
            Event::on_platform(
                AuditEvent::UserDeleted,
                format!("user:{}", user_id),
                json!({ "username": target.username }),
            ),
        );
        self.commit(tx, 1 + rotated.len()).await?;
        self.caches.forget_user(user_id);
        self.after_creator_left(rotated).await;
        Ok(())
    }
}

impl Hub {
    /// One page of users ordered by name, after `after_username`.
    pub async fn users_page(
        &self,
        after_username: Option<&str>,
        limit: i64,
    ) -> HubResult<Vec<User>> {
        Ok(self.store.list_users(after_username, limit).await?)
    }
}

impl Hub {
    /// A user by id; `NotFound` when there is none.
    pub async fn stored_user(&self, user_id: &str) -> HubResult<User> {
        self.store
            .get_user(user_id)
            .await?
            .ok_or(HubError::NotFound)
    }
}

//! The end of every SSO login, whatever the provider: find the Redwall
//! user by the provider's stable subject (or provision one), and, once
//! Redwall's second factor (when asked) has passed, apply the group mapping
//! and clear an SSO-only user's local password. Never links by display name
//! or an unverified email.

use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::sso_mapping::{evaluate, MappingOutcome, MappingRule};
use redwall_store::{NewUser, StoreError, User};
use serde_json::json;

use crate::audit::{Actor, Event, Origin, Who};
use crate::sign_in::AfterSecondFactor;
use crate::{Hub, HubResult};

/// Who the provider says logged in.
#[derive(Clone, Debug)]
pub struct ExternalIdentity {
    pub provider: String,
    /// OIDC: `{issuer}#{sub}`-like stable id; LDAP: DN or an immutable attribute.
    pub subject: String,
    /// The login name for a provisioned user.
    pub username: String,
    pub groups: Vec<String>,
}

impl Hub {
    /// Records a failed SSO login (`extra`: more fields for the entry, e.g.
    /// the provider's error code). The reason goes to the log, never to
    /// the caller.
    pub async fn record_sso_failure(
        &self,
        origin: &Origin,
        provider: &str,
        reason: &str,
        attempted: Option<&str>,
        extra: serde_json::Value,
    ) -> HubResult<()> {
        self.metrics.login_failed();
        let actor = attempted.map(Actor::attempted);
        let mut details = json!({ "provider": provider, "reason": reason });
        if let (Some(d), serde_json::Value::Object(more)) = (details.as_object_mut(), extra) {
            d.extend(more);
        }
        let who = Who {
            actor: actor.as_ref(),
            origin,
        };
        self.record_event(
            who,
            Event::platform(
                AuditEvent::SsoLoginFailed,
                Outcome::Failure,
                Some(format!("provider:{provider}")),
                details,
            ),
        )
        .await
    }

    /// The user linked to the identity, or a new one provisioned for it
    /// (when `provision`), linked and recorded in one change. `Err(reason)`
    /// for a login that cannot go on (the reason is for the log).
    pub async fn find_or_provision(
        &self,
        origin: &Origin,
        id: &ExternalIdentity,
        provision: bool,
    ) -> HubResult<Result<User, &'static str>> {
        let now = self.now();
        if let Some(user_id) = self
            .store
            .find_external_identity(&id.provider, &id.subject)
            .await?
        {
            self.store
                .touch_external_identity(&id.provider, &id.subject, now)
                .await?;
            return Ok(self.store.get_user(&user_id).await?.ok_or("unknown_user"));
        }
        if !provision {
            return Ok(Err("not_linked"));
        }
        if redwall_policy::username::check_username(&id.username).is_err() {
            return Ok(Err("unusable_username"));
        }
        // A local account with the same name is someone else until an admin
        // links them: never merge accounts by name.
        if self
            .store
            .find_user_by_username(&id.username)
            .await?
            .is_some()
        {
            return Ok(Err("username_taken"));
        }
        let mut tx = self.begin().await?;
        let user = match tx
            .create_user(NewUser {
                id: crate::ids::new_id(),
                username: id.username.clone(),
                password_hash: None,
                is_admin: false,
                now,
            })
            .await
        {
            Ok(u) => u,
            Err(StoreError::Conflict(_)) => return Ok(Err("username_taken")),
            Err(e) => return Err(e.into()),
        };
        tx.link_external_identity(&id.provider, &id.subject, &user.id, now)
            .await?;
        let actor = Actor::user(&user.id, &user.username);
        self.note(
            &mut tx,
            Who::by(&actor, origin),
            Event::on_platform(
                AuditEvent::SsoUserProvisioned,
                format!("user:{}", user.id),
                json!({ "provider": id.provider, "subject": id.subject }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok(Ok(user))
    }

    /// Applies what the SSO login changes (see [`AfterSecondFactor`]):
    /// answers the user as now stored (the mapping may have changed the
    /// admin flag).
    pub async fn apply_after_second_factor(
        &self,
        origin: &Origin,
        after: &AfterSecondFactor,
        user: User,
        rules: &[MappingRule],
    ) -> HubResult<User> {
        if after.clear_password {
            let mut tx = self.begin().await?;
            if tx.clear_password_hash(&user.id, self.now()).await? {
                let actor = Actor::user(&user.id, &user.username);
                self.note(
                    &mut tx,
                    Who::by(&actor, origin),
                    Event::on_platform(
                        AuditEvent::PasswordChanged,
                        format!("user:{}", user.id),
                        json!({ "cleared_by": after.provider, "reason": "sso_only" }),
                    ),
                );
                self.commit(tx, 1).await?;
                self.caches.forget_user(&user.id);
            }
        }
        self.map_sso_groups(origin, &user, &after.provider, &after.groups, rules)
            .await?;
        self.signed_in_user(&user.id).await
    }

    /// Applies the mapping `rules` give for `groups` (reported by
    /// `provider`) to the user: at sign-in, and by `redwall sso resync`.
    pub async fn map_sso_groups(
        &self,
        origin: &Origin,
        user: &User,
        provider: &str,
        groups: &[String],
        rules: &[MappingRule],
    ) -> HubResult<MappingOutcome> {
        let outcome = evaluate(rules, provider, groups);
        self.apply_sso_mapping(origin, user, provider, &outcome)
            .await?;
        Ok(outcome)
    }
}

impl Hub {
    /// The user linked to this subject of this provider, if any.
    pub async fn linked_user(&self, provider: &str, subject: &str) -> HubResult<Option<String>> {
        Ok(self.store.find_external_identity(provider, subject).await?)
    }
}

impl Hub {
    /// Records the first use of an OpenID Connect login state (by its
    /// digest) in the database, so a code is accepted once on whichever
    /// replica it arrives; at most `per_client` are kept per client.
    pub async fn use_oidc_state(
        &self,
        digest: &str,
        client: &str,
        expires_at: redwall_policy::Micros,
        per_client: i64,
    ) -> HubResult<redwall_store::OidcStateUse> {
        Ok(self
            .store
            .use_oidc_state(digest, client, expires_at, self.now(), per_client)
            .await?)
    }
}

impl Hub {
    /// An operator links an existing user to a provider's subject (so the
    /// provider's logins reach that account), in one change with its entry.
    pub async fn link_identity(
        &self,
        who: Who<'_>,
        provider: &str,
        subject: &str,
        username: &str,
    ) -> HubResult<User> {
        if subject.trim().is_empty() || subject.len() > 1024 {
            return Err(crate::HubError::invalid(
                "invalid_subject",
                "the subject must be 1 to 1024 characters",
            ));
        }
        let user = self
            .store
            .find_user_by_username(username)
            .await?
            .ok_or_else(|| {
                crate::HubError::invalid("unknown_user", format!("no user is named {username:?}"))
            })?;
        if let Some(owner) = self.store.find_external_identity(provider, subject).await? {
            let whose = if owner == user.id {
                "this user"
            } else {
                "another user"
            };
            return Err(crate::HubError::conflict(
                "already_linked",
                format!("this subject is already linked to {whose}"),
            ));
        }
        let mut tx = self.begin().await?;
        tx.link_external_identity(provider, subject, &user.id, self.now())
            .await?;
        self.note(
            &mut tx,
            who,
            Event::on_platform(
                AuditEvent::SsoIdentityLinked,
                format!("user:{}", user.id),
                json!({ "provider": provider, "subject": subject }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok(user)
    }
}

impl Hub {
    /// Every (provider, subject, user id) link, for re-syncing everyone.
    pub async fn linked_identities(&self) -> HubResult<Vec<(String, String, String)>> {
        Ok(self.store.list_external_identities().await?)
    }
}

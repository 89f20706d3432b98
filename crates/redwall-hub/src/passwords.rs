//! Passwords: Argon2id off the async threads behind the hash gate, new
//! accounts, password changes and the upgrade of old hashes. Each change is
//! one transaction with its audit entry.

use redwall_crypto::password::Verification;
use redwall_crypto::Secret;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::password_policy::check_password;
use redwall_policy::username::check_username;
use redwall_store::{NewUser, StoreError, User};
use serde_json::json;

use crate::audit::{Event, Who};
use crate::hash_gate::Priority;
use crate::throttle::Attempt;
use crate::{Hub, HubError, HubResult};

/// Longest password checked at all: longer ones are wrong without a hash.
pub const MAX_PASSWORD_BYTES: usize = 4096;

pub fn valid_username(username: &str) -> HubResult<()> {
    check_username(username).map_err(|p| HubError::invalid("invalid_username", p.message()))
}

pub fn valid_new_password(password: &str, username: &str) -> HubResult<()> {
    check_password(password, username).map_err(|p| HubError::invalid("weak_password", p.message()))
}

/// A taken username, as the caller's answer.
pub fn username_taken(e: StoreError) -> HubError {
    match e {
        StoreError::Conflict(_) => {
            HubError::conflict("username_taken", "a user with this username already exists")
        }
        other => HubError::from(other),
    }
}

/// A user to create.
pub struct NewAccount<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub is_admin: bool,
}

fn user_event(user_id: &str, event: AuditEvent, details: serde_json::Value) -> Event {
    Event::on_platform(event, format!("user:{user_id}"), details)
}

impl Hub {
    /// Argon2id on a blocking thread, at most one per core at a time. Only
    /// signed-in users and the setup step set passwords: they go first.
    pub async fn hash_password(&self, password: &str) -> HubResult<String> {
        let permit = self
            .hash_gate
            .acquire(Priority::Known)
            .await
            .map_err(|_| HubError::Busy)?;
        let hasher = self.hasher.clone();
        let password = Secret::new(password.to_string());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hasher.hash(password.expose())
        })
        .await
        .map_err(HubError::internal)?
        .map_err(HubError::internal)
    }

    /// Verifies against `stored`, or burns the same time when there is no
    /// hash (unknown user, SSO-only user) so timing does not reveal which it
    /// was. `priority`: known clients overtake unknown ones waiting for a
    /// core; too many unknown ones waiting are refused at once as busy.
    pub async fn verify_password(
        &self,
        password: &str,
        stored: Option<&str>,
        priority: Priority,
    ) -> HubResult<Verification> {
        let permit = self
            .hash_gate
            .acquire(priority)
            .await
            .map_err(|_| HubError::Busy)?;
        let hasher = self.hasher.clone();
        let password = Secret::new(password.to_string());
        let stored = stored.map(str::to_string);
        // The permit moves into the blocking task: a client that leaves does
        // not free the core while its hash still runs.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match stored {
                Some(hash) => hasher.verify(password.expose(), &hash),
                None => {
                    hasher.dummy_verify(password.expose());
                    Verification::Invalid
                }
            }
        })
        .await
        .map_err(HubError::internal)
    }

    /// Creates a user after checking the username and password rules.
    pub async fn create_user(&self, who: Who<'_>, account: NewAccount<'_>) -> HubResult<User> {
        valid_username(account.username)?;
        valid_new_password(account.password, account.username)?;
        let hash = self.hash_password(account.password).await?;
        let mut tx = self.begin().await?;
        let user = tx
            .create_user(NewUser {
                id: crate::ids::new_id(),
                username: account.username.to_string(),
                password_hash: Some(hash),
                is_admin: account.is_admin,
                now: self.now(),
            })
            .await
            .map_err(username_taken)?;
        let details = json!({ "username": user.username, "is_admin": user.is_admin });
        self.note(
            &mut tx,
            who,
            user_event(&user.id, AuditEvent::UserCreated, details),
        );
        self.commit(tx, 1).await?;
        Ok(user)
    }

    /// Imports a user from Node-RED's `adminAuth` with their bcrypt hash,
    /// which keeps working and becomes argon2id at their next login.
    pub async fn import_user(
        &self,
        who: Who<'_>,
        username: &str,
        bcrypt_hash: &str,
        node_red_permissions: &serde_json::Value,
    ) -> HubResult<User> {
        valid_username(username)?;
        if !redwall_crypto::password::is_bcrypt_hash(bcrypt_hash) {
            return Err(HubError::invalid(
                "not_bcrypt",
                "the password is not a bcrypt hash",
            ));
        }
        let mut tx = self.begin().await?;
        let user = tx
            .create_user(NewUser {
                id: crate::ids::new_id(),
                username: username.to_string(),
                password_hash: Some(bcrypt_hash.to_string()),
                is_admin: false,
                now: self.now(),
            })
            .await
            .map_err(username_taken)?;
        let details = json!({
            "username": user.username,
            "source": "node-red",
            "node_red_permissions": node_red_permissions,
        });
        self.note(
            &mut tx,
            who,
            user_event(&user.id, AuditEvent::UserImported, details),
        );
        self.commit(tx, 1).await?;
        Ok(user)
    }

    /// The signed-in user changes their password, proving the current one;
    /// every other session of theirs ends. Returns how many ended.
    pub async fn change_password(
        &self,
        who: Who<'_>,
        user_id: &str,
        keep_session: Option<&str>,
        current: &str,
        new: &str,
    ) -> HubResult<usize> {
        let now = self.now();
        let attempt = Attempt::reauthentication(who.origin.ip, user_id);
        self.throttle
            .check(&attempt, now)
            .map_err(|retry_after_secs| HubError::Throttled { retry_after_secs })?;
        let user = self.signed_in_user(user_id).await?;
        valid_new_password(new, &user.username)?;
        let current_ok = current.len() <= MAX_PASSWORD_BYTES
            && self
                .verify_password(current, user.password_hash.as_deref(), Priority::Known)
                .await?
                .is_valid();
        if !current_ok {
            self.throttle.record_failure(&attempt, now);
            let failed = Event {
                outcome: Outcome::Failure,
                ..user_event(
                    &user.id,
                    AuditEvent::PasswordChanged,
                    json!({ "reason": "wrong_current_password" }),
                )
            };
            self.record_event(who, failed).await?;
            return Err(HubError::unauthenticated(
                "invalid_credentials",
                "the current password is incorrect",
            ));
        }
        let hash = self.hash_password(new).await?;
        let mut tx = self.begin().await?;
        tx.set_password_hash(&user.id, &hash, now).await?;
        let ended = tx.delete_sessions_of_user(&user.id, keep_session).await?;
        self.note(
            &mut tx,
            who,
            user_event(
                &user.id,
                AuditEvent::PasswordChanged,
                json!({ "other_sessions_ended": ended.len() }),
            ),
        );
        self.commit(tx, 1).await?;
        self.forget_sessions(&ended);
        Ok(ended.len())
    }

    /// Imported (bcrypt) or outdated hashes become argon2id with current
    /// parameters, once the password has just been proven.
    pub async fn rehash_password(
        &self,
        who: Who<'_>,
        user: &User,
        password: &str,
    ) -> HubResult<()> {
        let was_bcrypt = user
            .password_hash
            .as_deref()
            .is_some_and(redwall_crypto::password::is_bcrypt_hash);
        let hash = self.hash_password(password).await?;
        let mut tx = self.begin().await?;
        tx.set_password_hash(&user.id, &hash, self.now()).await?;
        self.note(
            &mut tx,
            who,
            user_event(
                &user.id,
                AuditEvent::PasswordRehashed,
                json!({ "from": if was_bcrypt { "bcrypt" } else { "argon2" } }),
            ),
        );
        self.commit(tx, 1).await
    }
}

/// The first-run setup's refusals: one answer whatever was wrong.
fn setup_refused() -> HubError {
    HubError::unauthenticated(
        "invalid_setup_token",
        "the setup token is invalid, expired or already used",
    )
}

/// How long the first-run setup token is good for.
pub const SETUP_TOKEN_LIFETIME_SECS: i64 = 3600;

impl Hub {
    /// On first start with no users: a fresh setup token, valid one hour,
    /// replacing any earlier one. `None` when users exist.
    pub async fn issue_setup_token_if_needed(&self) -> HubResult<Option<Secret>> {
        use redwall_crypto::token::{self, SETUP_PREFIX};
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let t = token::new_token(SETUP_PREFIX);
        let expires = self.now() + SETUP_TOKEN_LIFETIME_SECS * redwall_policy::MICROS_PER_SECOND;
        self.store
            .replace_setup_token(&token::token_digest(t.expose()), expires)
            .await?;
        Ok(Some(t))
    }

    /// First run: the one-time setup token (printed at start) creates the
    /// first platform admin, with its audit entry, while no user exists.
    /// Refusals are throttled per client address and audited.
    pub async fn complete_setup(
        &self,
        origin: &crate::Origin,
        setup_token: &str,
        username: &str,
        password: &str,
    ) -> HubResult<User> {
        use redwall_crypto::token::{self, SETUP_PREFIX};
        let now = self.now();
        self.throttle
            .check_client(origin.ip, now)
            .map_err(|retry_after_secs| HubError::Throttled { retry_after_secs })?;
        let Some(valid) = token::parse_token(SETUP_PREFIX, setup_token.trim()) else {
            return Err(self.setup_rejected(origin).await);
        };
        valid_username(username)?;
        valid_new_password(password, username)?;
        let hash = self.hash_password(password).await?;
        let admin = NewUser {
            id: crate::ids::new_id(),
            username: username.to_string(),
            password_hash: Some(hash),
            is_admin: true,
            now,
        };
        let mut tx = self.begin().await?;
        let Some(user) = tx
            .consume_setup_token_and_create_admin(&token::token_digest(valid), now, admin)
            .await?
        else {
            drop(tx);
            return Err(self.setup_rejected(origin).await);
        };
        let actor = crate::Actor::user(&user.id, &user.username);
        self.note(
            &mut tx,
            Who::by(&actor, origin),
            user_event(
                &user.id,
                AuditEvent::SetupCompleted,
                json!({ "username": user.username }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok(user)
    }

    async fn setup_rejected(&self, origin: &crate::Origin) -> HubError {
        self.throttle.record_client_failure(origin.ip, self.now());
        let who = Who::anonymous(origin);
        let event = Event::platform(
            AuditEvent::SetupTokenRejected,
            Outcome::Failure,
            None,
            json!({}),
        );
        match self.record_event(who, event).await {
            Ok(()) => setup_refused(),
            Err(e) => e,
        }
    }
}

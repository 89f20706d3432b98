//! The steps of signing in, shared by the password login, the end of
//! every SSO login and so the console: the throttle check, the password
//! step, the sealed MFA challenge that carries a login between its two
//! steps (the second factor is in `mfa.rs`, the session in `sessions.rs`).
//!
//! Unknown user, wrong password and suspended account answer the same error
//! after the same amount of work; every failure is audited and counted by
//! the per-account and per-address throttle.

use base64::Engine;
use redwall_crypto::password::Verification;
use redwall_crypto::token::MFA_CHALLENGE_PREFIX;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::{Micros, MICROS_PER_SECOND};
use redwall_store::User;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{Actor, Event, Who};
use crate::passwords::MAX_PASSWORD_BYTES;
use crate::throttle::{name_key, subject_key, Attempt, Channel, Device};
use crate::{Hub, HubError, HubResult};

const MFA_CHALLENGE_SECS: i64 = 300;
/// Room for an SSO login's matched groups.
const MAX_CHALLENGE_CHARS: usize = 3072;

/// What an SSO login changes about the user, applied only once Redwall's
/// second factor (when asked) has succeeded: until then the login has only
/// shown the provider's credential, which must not change stored roles or
/// the local password. Carried sealed in the MFA challenge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AfterSecondFactor {
    #[serde(rename = "p")]
    pub provider: String,
    /// Only the reported groups some mapping rule matches (the mapping's
    /// outcome is the same), so the challenge stays small.
    #[serde(rename = "g")]
    pub groups: Vec<String>,
    /// The provider is SSO-only: remove the user's local password.
    #[serde(rename = "c")]
    pub clear_password: bool,
}

/// A sealed, short-lived statement "this user passed the first step":
/// stateless, so any node can check it, and useless without the second
/// factor.
pub struct MfaChallenge {
    pub token: String,
    pub expires_at: Micros,
}

impl Hub {
    /// Refuses (audited) when `attempt` must wait; `provider` names the SSO
    /// provider the login went to, if any.
    pub async fn refuse_if_throttled(
        &self,
        who: Who<'_>,
        attempt: &Attempt,
        attempted: &str,
        provider: Option<&str>,
    ) -> HubResult<()> {
        let Err(wait) = self.throttle.check(attempt, self.now()) else {
            return Ok(());
        };
        self.metrics.login_throttled();
        let details = match provider {
            None => json!({ "retry_after_secs": wait }),
            Some(p) => json!({ "retry_after_secs": wait, "provider": p }),
        };
        let actor = Actor::attempted(attempted);
        let who = Who::by(&actor, who.origin);
        self.record_event(
            who,
            Event::platform(
                AuditEvent::LoginThrottled,
                Outcome::Denied,
                provider.map(|p| format!("provider:{p}")),
                details,
            ),
        )
        .await?;
        Err(HubError::Throttled {
            retry_after_secs: wait,
        })
    }

    /// The password step. Throttled by the name (normalised as the user
    /// table matches it) before anything is looked up, unless the client
    /// holds a device cookie; then by the account found, where a device
    /// known for it counts on its own record instead.
    pub async fn password_step(
        &self,
        who: Who<'_>,
        device: Option<&Device>,
        username: &str,
        password: &str,
    ) -> HubResult<(User, Attempt)> {
        let now = self.now();
        let account = username.chars().take(64).collect::<String>();
        let mut attempt =
            Attempt::new(who.origin.ip, name_key(Channel::Console, "local", username));
        if device.is_none() {
            self.refuse_if_throttled(who, &attempt, &account, None)
                .await?;
        }
        let plausible = redwall_policy::username::check_username(username).is_ok()
            && password.len() <= MAX_PASSWORD_BYTES;
        let user = if plausible {
            self.store.find_user_by_username(username).await?
        } else {
            None
        };
        if let Some(u) = &user {
            let known = device.and_then(|d| d.known_for(&u.id));
            attempt.resolved(subject_key(Channel::Console, "local", &u.id), known);
        }
        self.refuse_if_throttled(who, &attempt, &account, None)
            .await?;
        let verification = if plausible {
            let stored = user.as_ref().and_then(|u| u.password_hash.as_deref());
            self.verify_password(password, stored, attempt.priority())
                .await?
        } else {
            Verification::Invalid
        };
        let failure = match (&user, verification) {
            (None, _) => Some("unknown_user"),
            (Some(_), Verification::Invalid) => Some("wrong_password"),
            (Some(u), _) if u.suspended => Some("suspended"),
            _ => None,
        };
        match (user, failure) {
            (Some(user), None) => {
                if let Verification::Valid { needs_rehash: true } = verification {
                    let actor = Actor::user(&user.id, &user.username);
                    let who = Who::by(&actor, who.origin);
                    self.rehash_password(who, &user, password).await?;
                }
                Ok((user, attempt))
            }
            (user, reason) => {
                self.throttle.record_failure(&attempt, now);
                self.metrics.login_failed();
                let actor = match &user {
                    Some(u) => Actor::user(&u.id, &u.username),
                    None => Actor::attempted(&account),
                };
                let who = Who::by(&actor, who.origin);
                self.record_event(
                    who,
                    Event::platform(
                        AuditEvent::LoginFailed,
                        Outcome::Failure,
                        None,
                        json!({ "reason": reason.unwrap_or("unknown") }),
                    ),
                )
                .await?;
                Err(HubError::invalid_credentials())
            }
        }
    }

    /// Seals the challenge for `user`, who passed the first step; `after`
    /// carries what an SSO login changes once the second factor succeeds.
    pub fn mfa_challenge(&self, user: &User, after: Option<&AfterSecondFactor>) -> MfaChallenge {
        let expires_at = self.now() + MFA_CHALLENGE_SECS * MICROS_PER_SECOND;
        let payload = json!({ "u": user.id, "e": expires_at, "s": after }).to_string();
        let sealed = self
            .keyring
            .sealer("mfa-challenge")
            .seal(payload.as_bytes(), b"mfa-challenge");
        MfaChallenge {
            token: format!(
                "{MFA_CHALLENGE_PREFIX}{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
            ),
            expires_at,
        }
    }

    /// The user a challenge names, if it opens and has not expired, with
    /// what an SSO login is to change.
    pub fn open_mfa_challenge(&self, token: &str) -> Option<(String, Option<AfterSecondFactor>)> {
        let body = token.strip_prefix(MFA_CHALLENGE_PREFIX)?;
        if body.len() > MAX_CHALLENGE_CHARS {
            return None;
        }
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .ok()?;
        let plain = self
            .keyring
            .sealer("mfa-challenge")
            .open(&sealed, b"mfa-challenge")
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&plain).ok()?;
        let expires = v.get("e")?.as_i64()?;
        if self.now() >= expires {
            return None;
        }
        let sso = match v.get("s") {
            None | Some(serde_json::Value::Null) => None,
            Some(s) => Some(serde_json::from_value(s.clone()).ok()?),
        };
        Some((v.get("u")?.as_str()?.to_string(), sso))
    }

    /// The user a challenge names, still able to finish the login.
    pub async fn challenged_user(
        &self,
        token: &str,
    ) -> HubResult<(User, Option<AfterSecondFactor>)> {
        let invalid = || {
            HubError::unauthenticated(
                "invalid_mfa_token",
                "the MFA challenge is invalid or expired; log in again",
            )
        };
        let (user_id, after) = self.open_mfa_challenge(token).ok_or_else(invalid)?;
        let user = self
            .store
            .get_user(&user_id)
            .await?
            .filter(|u| !u.suspended && u.mfa_enabled)
            .ok_or_else(invalid)?;
        Ok((user, after))
    }
}

//! Multi-factor authentication: TOTP (RFC 6238) enrolment, confirmation,
//! recovery codes, removal, and the second step of a login.
//!
//! The TOTP secret is sealed with the master key (bound to the user id),
//! and recovery codes are stored as keyed digests: a database dump alone
//! reveals neither.

use redwall_crypto::recovery::{new_recovery_codes, normalize_recovery_code};
use redwall_crypto::totp::TotpSecret;
use redwall_crypto::Secret;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::MICROS_PER_SECOND;
use redwall_store::User;
use serde_json::json;

use crate::audit::{Actor, Event, Who};
use crate::hash_gate::Priority;
use crate::throttle::{subject_key, Attempt, Channel};
use crate::{Hub, HubError, HubResult};

/// Recovery codes handed out at each enrolment.
pub const RECOVERY_CODES: usize = 10;

/// What proved the second factor.
pub enum SecondFactor {
    Totp,
    RecoveryCode { remaining: i64 },
}

/// An enrolment begun: shown to the user once, to scan or type.
pub struct Enrolment {
    pub secret_base32: Secret,
    pub otpauth_uri: String,
}

/// Where a user stands with MFA.
pub struct MfaStanding {
    pub enabled: bool,
    pub enrolment_pending: bool,
    pub recovery_codes_remaining: i64,
    /// The platform requires MFA of everyone.
    pub required: bool,
}

fn seal_aad(user_id: &str) -> Vec<u8> {
    format!("totp:{user_id}").into_bytes()
}

fn user_event(user_id: &str, event: AuditEvent, details: serde_json::Value) -> Event {
    Event::on_platform(event, format!("user:{user_id}"), details)
}

fn failed(user_id: &str, step: &str) -> Event {
    Event {
        outcome: Outcome::Failure,
        ..user_event(
            user_id,
            AuditEvent::MfaVerifyFailed,
            json!({ "step": step }),
        )
    }
}

impl Hub {
    fn now_secs(&self) -> u64 {
        u64::try_from(self.now() / MICROS_PER_SECOND).unwrap_or(0)
    }

    fn open_totp(&self, user_id: &str, sealed: &[u8]) -> HubResult<TotpSecret> {
        let plain = self
            .keyring
            .sealer("totp")
            .open(sealed, &seal_aad(user_id))
            .map_err(|_| {
                HubError::internal(format!("the TOTP secret of user {user_id} does not open"))
            })?;
        TotpSecret::from_bytes(plain.to_vec()).map_err(HubError::internal)
    }

    pub async fn mfa_standing(&self, user_id: &str) -> HubResult<MfaStanding> {
        let user = self.signed_in_user(user_id).await?;
        let settings = self.settings.get(&self.store, self.now()).await?;
        Ok(MfaStanding {
            enabled: user.mfa_enabled,
            enrolment_pending: user.mfa_pending_sealed.is_some(),
            recovery_codes_remaining: self.store.count_recovery_codes(&user.id).await?,
            required: settings.require_mfa,
        })
    }

    /// Checks a TOTP code (once per time step, atomically) or a recovery
    /// code (once each). `None` when neither matches.
    pub async fn verify_second_factor(
        &self,
        user: &User,
        code: &str,
    ) -> HubResult<Option<SecondFactor>> {
        if code.len() > 64 {
            return Ok(None);
        }
        let Some(sealed) = user.mfa_secret_sealed.as_deref() else {
            return Ok(None);
        };
        let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.len() == 6 && compact.bytes().all(|b| b.is_ascii_digit()) {
            let secret = self.open_totp(&user.id, sealed)?;
            let last = user.mfa_last_step.and_then(|s| u64::try_from(s).ok());
            let Some(step) = secret.verify(&compact, self.now_secs(), last) else {
                return Ok(None);
            };
            let step = i64::try_from(step).map_err(HubError::internal)?;
            // The compare-and-set refuses a code a concurrent request just used.
            return Ok(self
                .store
                .advance_mfa_step(&user.id, step)
                .await?
                .then_some(SecondFactor::Totp));
        }
        let Some(normalized) = normalize_recovery_code(code) else {
            return Ok(None);
        };
        let digest = self
            .keyring
            .keyed_digest("recovery-code", normalized.as_bytes());
        if self
            .store
            .use_recovery_code(&user.id, &digest, self.now())
            .await?
        {
            let remaining = self.store.count_recovery_codes(&user.id).await?;
            return Ok(Some(SecondFactor::RecoveryCode { remaining }));
        }
        Ok(None)
    }

    /// The second step of a login, throttled on the Redwall account (a
    /// device known for it, `known_device`, has its own allowance).
    pub async fn second_factor_step(
        &self,
        who: Who<'_>,
        known_device: Option<String>,
        user: &User,
        code: &str,
    ) -> HubResult<()> {
        let now = self.now();
        let mut attempt = Attempt::new(
            who.origin.ip,
            subject_key(Channel::Console, "local", &user.id),
        );
        attempt.device = known_device;
        self.throttle
            .check(&attempt, now)
            .map_err(|retry_after_secs| HubError::Throttled { retry_after_secs })?;
        let actor = Actor::user(&user.id, &user.username);
        let who = Who::by(&actor, who.origin);
        match self.verify_second_factor(user, code).await? {
            Some(SecondFactor::Totp) => {
                self.throttle.record_success(&attempt);
                Ok(())
            }
            Some(SecondFactor::RecoveryCode { remaining }) => {
                self.throttle.record_success(&attempt);
                self.record_event(
                    who,
                    user_event(
                        &user.id,
                        AuditEvent::MfaRecoveryCodeUsed,
                        json!({ "remaining": remaining }),
                    ),
                )
                .await
            }
            None => {
                self.throttle.record_failure(&attempt, now);
                self.metrics.login_failed();
                self.record_event(who, failed(&user.id, "login")).await?;
                Err(HubError::unauthenticated(
                    "invalid_mfa_code",
                    "the code is incorrect or was already used",
                ))
            }
        }
    }

    /// Begins an enrolment: a fresh secret, kept sealed as pending until a
    /// code from the device confirms it.
    pub async fn begin_mfa_enrolment(
        &self,
        who: Who<'_>,
        user_id: &str,
        issuer: &str,
    ) -> HubResult<Enrolment> {
        let user = self.signed_in_user(user_id).await?;
        if user.mfa_enabled {
            return Err(HubError::conflict(
                "mfa_already_enabled",
                "MFA is already on; turn it off first to enrol a new device",
            ));
        }
        let secret = TotpSecret::generate();
        let sealed = self
            .keyring
            .sealer("totp")
            .seal(secret.as_bytes(), &seal_aad(&user.id));
        let mut tx = self.begin().await?;
        tx.set_mfa_pending(&user.id, Some(&sealed), self.now())
            .await?;
        self.note(
            &mut tx,
            who,
            user_event(&user.id, AuditEvent::MfaEnrolmentStarted, json!({})),
        );
        self.commit(tx, 1).await?;
        Ok(Enrolment {
            secret_base32: secret.base32(),
            otpauth_uri: secret.otpauth_uri(issuer, &user.username),
        })
    }

    /// Confirms an enrolment with a current code: MFA is on, and fresh
    /// recovery codes are returned (shown once).
    pub async fn confirm_mfa(
        &self,
        who: Who<'_>,
        user_id: &str,
        code: &str,
    ) -> HubResult<Vec<Secret>> {
        let user = self.signed_in_user(user_id).await?;
        if user.mfa_enabled {
            return Err(HubError::conflict(
                "mfa_already_enabled",
                "MFA is already on",
            ));
        }
        let Some(pending) = user.mfa_pending_sealed.as_deref() else {
            return Err(HubError::conflict(
                "no_enrolment",
                "start enrolment at /api/v1/me/mfa/enrol first",
            ));
        };
        let secret = self.open_totp(&user.id, pending)?;
        let Some(step) = secret.verify(code, self.now_secs(), None) else {
            self.record_event(who, failed(&user.id, "enrolment"))
                .await?;
            return Err(HubError::invalid(
                "invalid_mfa_code",
                "the code does not match; check the device's clock and try the current code",
            ));
        };
        let codes = new_recovery_codes(RECOVERY_CODES);
        let digests: Vec<Vec<u8>> = codes
            .iter()
            .filter_map(|c| normalize_recovery_code(c.expose()))
            .map(|n| {
                self.keyring
                    .keyed_digest("recovery-code", n.as_bytes())
                    .to_vec()
            })
            .collect();
        if digests.len() != RECOVERY_CODES {
            return Err(HubError::internal(
                "a fresh recovery code did not normalize",
            ));
        }
        let step = i64::try_from(step).map_err(HubError::internal)?;
        let mut tx = self.begin().await?;
        tx.enable_mfa(&user.id, pending, &digests, step, self.now())
            .await?;
        self.note(
            &mut tx,
            who,
            user_event(
                &user.id,
                AuditEvent::MfaEnabled,
                json!({ "recovery_codes": RECOVERY_CODES }),
            ),
        );
        self.commit(tx, 1).await?;
        self.caches.forget_user(&user.id);
        Ok(codes)
    }

    /// The user turns MFA off, proving both their password and a code;
    /// refused where the platform requires MFA.
    pub async fn disable_mfa(
        &self,
        who: Who<'_>,
        user_id: &str,
        password: &str,
        code: &str,
    ) -> HubResult<()> {
        let now = self.now();
        if self.settings.get(&self.store, now).await?.require_mfa {
            return Err(HubError::Refused {
                kind: crate::Refused::Forbidden,
                code: "forbidden",
                message: "MFA is required on this platform".into(),
            });
        }
        let user = self.signed_in_user(user_id).await?;
        if !user.mfa_enabled {
            return Err(HubError::conflict("mfa_not_enabled", "MFA is not on"));
        }
        let attempt = Attempt::reauthentication(who.origin.ip, &user.id);
        self.throttle
            .check(&attempt, now)
            .map_err(|retry_after_secs| HubError::Throttled { retry_after_secs })?;
        let password_ok = self
            .verify_password(password, user.password_hash.as_deref(), Priority::Known)
            .await?
            .is_valid();
        let code_ok = password_ok && self.verify_second_factor(&user, code).await?.is_some();
        if !code_ok {
            self.throttle.record_failure(&attempt, now);
            self.record_event(who, failed(&user.id, "disable")).await?;
            return Err(HubError::unauthenticated(
                "invalid_credentials",
                "the password or code is incorrect",
            ));
        }
        let mut tx = self.begin().await?;
        tx.disable_mfa(&user.id, now).await?;
        self.note(
            &mut tx,
            who,
            user_event(&user.id, AuditEvent::MfaDisabled, json!({})),
        );
        self.commit(tx, 1).await?;
        self.caches.forget_user(&user.id);
        Ok(())
    }

    /// An admin removes a user's MFA (a lost device); the sessions that
    /// passed MFA with the old device end too.
    pub async fn reset_mfa(&self, who: Who<'_>, user_id: &str) -> HubResult<()> {
        let target = self
            .store
            .get_user(user_id)
            .await?
            .ok_or(HubError::NotFound)?;
        let mut tx = self.begin().await?;
        tx.disable_mfa(user_id, self.now()).await?;
        let ended = tx.delete_sessions_of_user(user_id, None).await?;
        self.note(
            &mut tx,
            who,
            user_event(
                user_id,
                AuditEvent::MfaReset,
                json!({ "username": target.username }),
            ),
        );
        self.commit(tx, 1).await?;
        self.forget_sessions(&ended);
        self.caches.forget_user(user_id);
        Ok(())
    }
}

//! Browser sessions: started by a login that passed every step, judged
//! against the platform's lifetimes at each use, and ended by logout, by a
//! password change or by an admin. Starting and ending are each one change
//! with their audit entry.

use redwall_crypto::token::{self, SESSION_PREFIX};
use redwall_crypto::Secret;
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::session_rules::SessionState;
use redwall_store::{Session, User};
use serde_json::json;

use crate::audit::{Actor, Event, Who};
use crate::caches::CachedSession;
use crate::{Hub, HubError, HubResult};

/// A session just started: its secret goes to the client once (as a
/// cookie), with the CSRF token scripts send back.
pub struct StartedSession {
    pub token: Secret,
    pub session: Session,
    pub csrf_token: String,
}

/// The CSRF token of a session: derived from its secret with a keyed
/// digest, so it needs no storage, differs per session and cannot be
/// computed without the cookie (which scripts cannot read).
pub fn csrf_token_for(keyring: &redwall_crypto::keyring::Keyring, session_token: &str) -> String {
    use base64::Engine;
    let digest = keyring.keyed_digest("csrf", session_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

fn session_event(session_id: &str, event: AuditEvent, details: serde_json::Value) -> Event {
    Event::on_platform(event, format!("session:{session_id}"), details)
}

impl Hub {
    /// The user a credential resolved to, still there; a user deleted
    /// meanwhile is no longer signed in.
    pub async fn signed_in_user(&self, user_id: &str) -> HubResult<User> {
        self.store.get_user(user_id).await?.ok_or_else(|| {
            HubError::unauthenticated("unauthenticated", "authentication is required")
        })
    }

    /// Starts the session of `user`, who passed every step of a login, and
    /// records the login (`provider`: the SSO provider that vouched for
    /// them, if any) in the same change.
    pub async fn start_session(
        &self,
        who: Who<'_>,
        user: &User,
        provider: Option<&str>,
    ) -> HubResult<StartedSession> {
        let now = self.now();
        let settings = self.settings.get(&self.store, now).await?;
        let token = token::new_token(SESSION_PREFIX);
        let csrf_token = csrf_token_for(&self.keyring, token.expose());
        let session = Session {
            id: crate::ids::new_id(),
            token_digest: token::token_digest(token.expose()).to_vec(),
            user_id: user.id.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: settings.lifetimes().absolute_expiry(now),
            client_ip: Some(who.origin.ip.to_string()),
            user_agent: who.origin.user_agent.clone(),
            csrf_token_digest: token::token_digest(&csrf_token).to_vec(),
            mfa_verified: user.mfa_enabled,
        };
        let actor = Actor::user(&user.id, &user.username);
        let signed_in = Who::by(&actor, who.origin);
        let mut tx = self.begin().await?;
        tx.create_session(&session).await?;
        self.note(
            &mut tx,
            signed_in,
            session_event(
                &session.id,
                AuditEvent::LoginSucceeded,
                json!({ "mfa": user.mfa_enabled, "provider": provider }),
            ),
        );
        self.commit(tx, 1).await?;
        self.metrics.login_succeeded();
        Ok(StartedSession {
            token,
            session,
            csrf_token,
        })
    }

    /// The live session for a cookie value, or `None` when it is unknown
    /// or expired (an expired one is ended and its expiry audited).
    pub async fn live_session(
        &self,
        who: Who<'_>,
        cookie_value: &str,
    ) -> HubResult<Option<CachedSession>> {
        let Some(cached) = self.session_by_cookie(cookie_value).await? else {
            return Ok(None);
        };
        let now = self.now();
        let last_seen = self
            .activity
            .session_last_seen(&cached.id)
            .map_or(cached.last_seen_at, |t| t.max(cached.last_seen_at));
        let lifetimes = self.settings.get(&self.store, now).await?.lifetimes();
        let ended = match lifetimes.state(cached.expires_at, last_seen, now) {
            SessionState::Active => {
                self.activity.session_seen(&cached.id, now);
                return Ok(Some(cached));
            }
            SessionState::IdleExpired => "idle",
            _ => "absolute",
        };
        let owner = Actor::user_id(&cached.user_id);
        let who = Who::by(&owner, who.origin);
        self.end_session_recorded(
            who,
            &cached.id,
            AuditEvent::SessionExpired,
            json!({ "reason": ended }),
        )
        .await?;
        Ok(None)
    }

    /// Ends one session, recording `event`; `false` when it was already
    /// gone (then nothing is recorded).
    pub async fn end_session_recorded(
        &self,
        who: Who<'_>,
        session_id: &str,
        event: AuditEvent,
        details: serde_json::Value,
    ) -> HubResult<bool> {
        let mut tx = self.begin().await?;
        let ended = tx.delete_session(session_id).await?;
        if ended {
            self.note(&mut tx, who, session_event(session_id, event, details));
        }
        self.commit(tx, usize::from(ended)).await?;
        self.forget_sessions(&[session_id.to_string()]);
        Ok(ended)
    }

    /// One of the caller's own sessions, ended from their session list.
    pub async fn end_own_session(
        &self,
        who: Who<'_>,
        user_id: &str,
        session_id: &str,
    ) -> HubResult<()> {
        let owned = self
            .store
            .list_sessions(user_id)
            .await?
            .iter()
            .any(|s| s.id == session_id);
        if !owned {
            return Err(HubError::NotFound);
        }
        self.end_session_recorded(who, session_id, AuditEvent::SessionEnded, json!({}))
            .await?;
        Ok(())
    }

    /// Ends every session of the user but `keep`, recording `event` once
    /// with how many ended. Returns that number.
    pub async fn end_sessions_of_user(
        &self,
        who: Who<'_>,
        user_id: &str,
        keep: Option<&str>,
        event: AuditEvent,
        details: serde_json::Value,
    ) -> HubResult<usize> {
        let mut tx = self.begin().await?;
        let ended = tx.delete_sessions_of_user(user_id, keep).await?;
        let mut details = details;
        if let Some(map) = details.as_object_mut() {
            map.insert("sessions_ended".into(), json!(ended.len()));
        }
        self.note(
            &mut tx,
            who,
            Event::on_platform(event, format!("user:{user_id}"), details),
        );
        self.commit(tx, 1).await?;
        self.forget_sessions(&ended);
        Ok(ended.len())
    }

    /// Housekeeping: removes the sessions past their lifetimes (their
    /// expiry needs no entry: it is a rule, not an action). Returns how
    /// many went.
    pub async fn remove_expired_sessions(&self) -> HubResult<u64> {
        let now = self.now();
        let settings = self.platform_settings().await?;
        let idle_cutoff = now - settings.session_idle_secs * redwall_policy::MICROS_PER_SECOND;
        Ok(self.store.delete_expired_sessions(now, idle_cutoff).await?)
    }

    /// Writes the last-seen times gathered since the last flush.
    pub async fn flush_activity(&self) -> HubResult<()> {
        Ok(self.activity.flush(&self.store).await?)
    }

    /// Forgets ended sessions everywhere they could be remembered.
    pub(crate) fn forget_sessions(&self, ids: &[String]) {
        for id in ids {
            self.caches.forget_session(id);
            self.activity.forget_session(id);
        }
    }
}

impl Hub {
    /// The user's sessions, newest first.
    pub async fn sessions_of(&self, user_id: &str) -> HubResult<Vec<Session>> {
        Ok(self.store.list_sessions(user_id).await?)
    }

    /// Whether the database answers a read within `timeout`.
    pub async fn database_check(
        &self,
        timeout: std::time::Duration,
    ) -> Result<(), redwall_store::FaultCause> {
        match tokio::time::timeout(timeout, self.store.count_users()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.store.fault_cause(&e)),
            Err(_) => Err(redwall_store::FaultCause::Timeout),
        }
    }
}
